"""A background write that meets a renewal must never bring the old id back.

Process A queues writes of session S (``write_mode="background"``); process
B renews S, which turns S into a forwarding stub. A's write in flight is
dropped at the stub, so A's cached copy, which counted it, is one version
ahead of what it wrote: at the stub's own version. A's next write, based on
that copy, must not take the store's shortcut for "the row is still my copy"
(Redis's short script path, SQL's guarded ``UPDATE``): that would write A's
data over the stub, or into it, and S would be a live session again — the
renewal, a session-fixation defence, undone.

The interleaving (a request of A's landing while its flush is in flight) is
produced by running that request from inside A's store call: injected
timing, real stores.
"""

from __future__ import annotations

import dataclasses
import time
import typing as t

import pytest

from wsgi_session import SessionConfig
from wsgi_session.coherence import CachedStore
from wsgi_session.record import SessionDiff, forwarding_stub

if t.TYPE_CHECKING:
    from wsgi_session.record import SessionRecord
    from wsgi_session.stores.base import Store

    from .conftest import SharedBackend

SECRET = "renewal-race-secret-0123456789abcdefghijk"
SESSION, RENEWED = "S" * 24, "N" * 24


def write(session_id: str, cart: bytes, now: float, base: SessionRecord | None) -> SessionDiff:
    return SessionDiff(session_id, {"cart": cart}, frozenset(), False, now + 600, None, False, now, base=base)


@pytest.mark.parametrize("same_flush", [True, False], ids=["one flush", "two flushes"])
def test_a_write_queued_across_a_renewal_never_revives_the_old_id(
    shared: SharedBackend, same_flush: bool
) -> None:
    make_store: t.Callable[[], Store] = shared.store
    a = CachedStore(make_store(), SessionConfig(secret_keys=[SECRET], write_mode="background"))
    a.setup()
    a.flusher._task.interval = a.flusher._task.first_delay = 3600  # flushes only when the test says
    b = make_store()
    try:
        now = time.time()
        b.apply([dataclasses.replace(write(SESSION, b"1", now, None), create=True)])
        a.apply([write(SESSION, b"2", now, a.load(SESSION))])  # queued in A
        b.apply([forwarding_stub(SESSION, RENEWED, now, 30.0)])  # B renews S

        def next_request() -> None:
            a.apply([write(SESSION, b"3", now, a.load(SESSION))])  # A's copy: it holds unsaved writes

        if same_flush:
            next_request()
            a.flusher.flush_pending(force=True)
        else:
            store_apply = a.inner.apply

            def apply_while_a_request_lands(diffs: t.Sequence[SessionDiff]) -> list[SessionRecord | None]:
                a.inner.apply = store_apply  # type: ignore[method-assign]
                next_request()
                return store_apply(diffs)

            a.inner.apply = apply_while_a_request_lands  # type: ignore[method-assign]
            a.flusher.flush_pending(force=True)
            a.flusher.flush_pending(force=True)
        stored = b.load(SESSION)
        assert stored is not None
        assert stored.moved_to == RENEWED  # still the stub: the old id leads nowhere but the new
        seen_by_a = a.load(SESSION)  # and process A does not keep serving it either
        assert seen_by_a is None or seen_by_a.moved_to == RENEWED
    finally:
        a.close()
        b.close()
