"""One session that cannot be written must neither fail nor replay the
others written with it (a flush of queued background writes).

Redis runs each session's merge script on its own, so when one of a
pipeline's scripts refuses its session the others have run; with encryption
at rest a record may be written and then fail to open. Either way the batch
is applied except for that session: sending it again, session by session,
would apply the others twice (their versions jump, their announcements
repeat, and a change another process made in between is overwritten). The
SQL stores write a batch in one transaction, so there nothing is applied
and writing session by session is right; the test holds for them too.
"""

from __future__ import annotations

import dataclasses
import time
import typing as t

import pytest
import redis
from services import RedisServer

from wsgi_session import SessionConfig
from wsgi_session.coherence import CachedStore
from wsgi_session.crypto import SealedStore, Sealer
from wsgi_session.record import SessionDiff
from wsgi_session.stores import RedisStore

from .conftest import PERSISTENT_BACKENDS

if t.TYPE_CHECKING:
    from pathlib import Path

    from .conftest import Backend

    MakeDiff = t.Callable[..., t.Any]


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize("backend", PERSISTENT_BACKENDS, indirect=True)
def test_a_bad_session_in_a_flush_neither_fails_nor_replays_the_others(
    backend: Backend, make_diff: MakeDiff, sealed: bool
) -> None:
    store = (
        SealedStore(backend.store, Sealer([b"an encryption key of 32 bytes or more"]))
        if sealed
        else backend.store
    )
    cached = CachedStore(
        store, SessionConfig(secret_keys=["flush-partly-" + "k" * 32], write_mode="background")
    )
    cached.flusher._task.interval = cached.flusher._task.first_delay = 3600  # flushes only when told
    try:
        for session_id in ("bad", "good"):
            cached.apply([make_diff(session_id, {"n": b"0"}, create=True)])  # created at once
        for n in (1, 2, 3):
            cached.apply([dataclasses.replace(make_diff("good", {"n": b"%d" % n}), base=cached.load("good"))])
        # No snapshot: the store must read what it merges into (a SQL store would
        # otherwise write the snapshot over the row without looking at it).
        cached.apply([make_diff("bad", {"n": b"1"})])
        if sealed:
            backend.raw.put_value("bad", "other", b"never sealed")  # merges, then cannot be opened
        else:
            backend.raw.corrupt("bad")  # cannot be merged into
        assert cached.flusher.flush_pending(force=True)
        stats = cached.flusher.stats
        assert (stats.lost, stats.pending) == (1, 0)  # the bad session's write, given up loudly
        good = store.load("good")
        assert good is not None
        assert good.values["n"] == b"3"
        assert good.version == 4  # created, then three writes: each applied once
        entry = cached.cache.peek("good")
        assert entry is not None
        assert entry.record == good
        assert cached.cache.peek("bad") is None  # its copy had the lost write: read the store again
    finally:
        cached.close()


@pytest.mark.parametrize("backend", PERSISTENT_BACKENDS, indirect=True)
def test_a_bad_session_in_a_group_commit_fails_only_its_own_request(
    backend: Backend, make_diff: MakeDiff
) -> None:
    """Strict writes of concurrent requests go to the store together (group
    commit): the request whose session cannot be written gets the error, the
    others their records, each applied once. (The group is formed by hand:
    two tickets in one batch, as two threads committing at once make it.)"""
    from wsgi_session.exceptions import BadStoredData
    from wsgi_session.flusher import _Ticket

    config = SessionConfig(secret_keys=["flush-partly-" + "k" * 32])
    cached = CachedStore(backend.store, config)
    try:
        for session_id in ("bad", "good"):
            cached.apply([make_diff(session_id, {"n": b"0"}, create=True)])
        backend.raw.corrupt("bad")
        good, bad = _Ticket([make_diff("good", {"n": b"1"})]), _Ticket([make_diff("bad", {"n": b"1"})])
        cached.flusher._write_batch([bad, good])
        assert good.done
        assert bad.done
        assert isinstance(bad.error, BadStoredData)
        assert good.error is None
        [record] = good.results
        assert record is not None
        assert record.version == 2  # applied once
        stored = backend.store.load("good")
        assert stored is not None
        assert (stored.values["n"], stored.version) == (b"1", 2)
    finally:
        cached.close()


@pytest.mark.redis
def test_a_write_redis_has_no_memory_for_is_retried_alone(tmp_path: Path) -> None:
    """Out of memory, Redis refuses a large write and takes the small ones of
    the same pipeline: the small ones are saved once, the large one waits for
    the next flush (not lost: an outage), and nothing is applied twice."""
    server = RedisServer(tmp_path).start()
    client = redis.Redis(port=server.port)
    cached = CachedStore(
        RedisStore(client), SessionConfig(secret_keys=["flush-partly-" + "k" * 32], write_mode="background")
    )
    cached.flusher._task.interval = cached.flusher._task.first_delay = 3600  # flushes only when told
    try:
        now = time.time()

        def write(session_id: str, value: bytes, **fields: t.Any) -> None:
            base = None if fields.get("create") else cached.load(session_id)
            diff = SessionDiff(
                session_id, {"v": value}, frozenset(), False, now + 600, None, False, now, base=base
            )
            cached.apply([dataclasses.replace(diff, **fields)])

        for session_id in ("big", "small1", "small2"):
            write(session_id, b"0", create=True)
        # Room for the small writes, not for the big one (sent last in the pipeline).
        client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + 1_000_000)
        write("small1", b"1")
        write("small2", b"1")
        write("big", b"x" * 2_000_000)
        assert not cached.flusher.flush_pending(force=True)  # the big one is still pending
        assert cached.flusher.stats.lost == 0
        assert [cached.inner.load(s).version for s in ("small1", "small2")] == [2, 2]  # type: ignore[union-attr]
        client.config_set("maxmemory", 0)
        assert cached.flusher.flush_pending(force=True)
        versions = [cached.inner.load(s).version for s in ("big", "small1", "small2")]  # type: ignore[union-attr]
        assert versions == [2, 2, 2]  # each write applied once
    finally:
        cached.close()
        client.close()
        server.stop()
