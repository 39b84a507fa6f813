"""Background mode folds a busy session's queued writes into one
(wsgi_session.record.coalesce), on every persistent store: the store ends
with exactly what one write per request would have left, the same version
included, and the process's cached copy agrees with it."""

from __future__ import annotations

import dataclasses
import typing as t

import pytest

from wsgi_session import SessionConfig, SessionMiddleware
from wsgi_session.coherence import CachedStore

from .conftest import PERSISTENT_BACKENDS

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from wsgi_session.record import SessionDiff, SessionRecord

    from .conftest import Backend

    MakeDiff = t.Callable[..., SessionDiff]

REQUESTS = 200


def counter(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    session = environ["session"]
    session["n"] = session.get("n", 0) + 1
    session[f"k{session['n'] % 3}"] = session["n"]  # a few keys, changed in turn
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d" % session["n"]]


def call(app: SessionMiddleware, cookie: str) -> tuple[bytes, str]:
    environ: dict[str, t.Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.url_scheme": "http"}
    if cookie:
        environ["HTTP_COOKIE"] = cookie
    sent: list[tuple[str, str]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: t.Any = None) -> t.Any:
        sent.extend(headers)

    body = b"".join(app(environ, start_response))
    for name, value in sent:
        if name == "Set-Cookie":
            cookie = value.split(";", 1)[0]
    return body, cookie


@pytest.mark.parametrize("backend", PERSISTENT_BACKENDS, indirect=True)
def test_a_busy_sessions_queued_writes_become_one(backend: Backend) -> None:
    config = SessionConfig(secret_keys=["coalescing-" + "k" * 32], write_mode="background")
    app = SessionMiddleware(counter, config, backend.store)
    try:
        cookie = ""
        for n in range(1, REQUESTS + 1):
            body, cookie = call(app, cookie)
            assert body == b"%d" % n  # the writing process reads its own writes
        session_id = cookie.split("=", 1)[1].split(".", 1)[0]
        cached = app.manager.cached
        assert cached is not None
        stats = app.flush_stats
        assert stats is not None
        # The flush thread stops (after its batch in flight, as at shutdown);
        # flushes never run side by side, or two batches of one session could
        # land out of order.
        cached.flusher._task.stop()
        assert cached.flusher.flush_pending(force=True)
        # The first request created the session at once; the others were
        # queued, and a flush every 50 ms took many of them at a time.
        assert stats.flushed_diffs == REQUESTS
        assert stats.coalesced >= (REQUESTS - 1) // 2
        stored = backend.store.load(session_id)
        assert stored is not None
        assert stored.version == REQUESTS  # one version per request, as if written one by one
        assert backend.raw.values(session_id) == {
            "n": b"200",
            "k0": b"198",
            "k1": b"199",
            "k2": b"200",
        }
        entry = cached.cache.peek(session_id)
        assert entry is not None
        assert entry.record == stored  # the cached copy took the store's, version and all
    finally:
        app.close()


@pytest.mark.parametrize("backend", PERSISTENT_BACKENDS, indirect=True)
def test_a_write_merged_while_a_flush_lands_is_kept(backend: Backend, make_diff: MakeDiff) -> None:
    """A request merges its write into the cached copy just as the flush
    thread takes the stored record of the write before it into the cache.
    The cache keeps the newer copy: the process still reads its own writes,
    and the next write builds on it. (It used to be overwritten, losing an
    increment now and then in the test above.) The interleaving is forced
    with a hook on the flusher's callback: the request's merge lands before
    it, its queueing after."""
    config = SessionConfig(secret_keys=["coalescing-" + "k" * 32], write_mode="background")
    cached = CachedStore(backend.store, config)
    cached.flusher._task.interval = cached.flusher._task.first_delay = 3600  # flushes only when told
    written = cached.flusher._on_written
    assert written is not None

    armed: list[bool] = []

    def request_lands_meanwhile(diffs: t.Sequence[SessionDiff], results: list[SessionRecord | None]) -> None:
        if not armed:
            written(diffs, results)
            return
        armed.clear()
        # CachedStore.apply in background mode, its two steps either side of the callback.
        diff = dataclasses.replace(make_diff("s", {"n": b"2"}), base=cached.load("s"))
        cached._merge_into_cache(diff)
        written(diffs, results)
        cached.flusher.enqueue([diff])

    cached.flusher._on_written = request_lands_meanwhile
    try:
        cached.apply([make_diff("s", {"n": b"0"}, create=True)])
        cached.apply([dataclasses.replace(make_diff("s", {"n": b"1"}), base=cached.load("s"))])
        armed.append(True)
        assert cached.flusher.flush_pending(force=True) is False  # the write merged meanwhile waits
        mine = cached.load("s")
        assert mine is not None
        assert (mine.values["n"], mine.version) == (b"2", 3)
        assert cached.flusher.flush_pending(force=True)
        stored = backend.store.load("s")
        assert stored is not None
        assert (stored.values["n"], stored.version) == (b"2", 3)
    finally:
        cached.close()
