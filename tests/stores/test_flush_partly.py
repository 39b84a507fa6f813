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


class ShortOfMemory:
    """A private Redis behind a background-mode cache, whose memory can be
    made to fit small writes and not a large one (a real fault: Redis
    refuses a write with OOM and runs the rest of the pipeline)."""

    def __init__(self, tmp_path: Path) -> None:
        self.server = RedisServer(tmp_path).start()
        self.client = redis.Redis(port=self.server.port)
        config = SessionConfig(secret_keys=["flush-partly-" + "k" * 32], write_mode="background")
        self.cached = CachedStore(RedisStore(self.client), config)
        self.cached.flusher._task.interval = self.cached.flusher._task.first_delay = 3600  # flushes when told
        self.now = time.time()

    def diff(self, session_id: str, value: bytes, **fields: t.Any) -> SessionDiff:
        base = None if fields.get("create") else self.cached.load(session_id)
        diff = SessionDiff(
            session_id, {"v": value}, frozenset(), False, self.now + 600, None, False, self.now, base=base
        )
        return dataclasses.replace(diff, **fields)

    def write(self, session_id: str, value: bytes, **fields: t.Any) -> None:
        self.cached.apply([self.diff(session_id, value, **fields)])

    def squeeze(self) -> None:
        """Room for small writes, not for one of 2 MB."""
        self.client.config_set("maxmemory", int(self.client.info("memory")["used_memory"]) + 1_000_000)

    def relieve(self) -> None:
        self.client.config_set("maxmemory", 0)

    def versions(self, *session_ids: str) -> list[int | None]:
        return [getattr(self.cached.inner.load(s), "version", None) for s in session_ids]

    def close(self) -> None:
        self.cached.close()
        self.client.close()
        self.server.stop()


@pytest.fixture
def short_of_memory(tmp_path: Path) -> t.Iterator[ShortOfMemory]:
    redis_ = ShortOfMemory(tmp_path)
    yield redis_
    redis_.close()


BIG = b"x" * 2_000_000


@pytest.mark.redis
def test_a_write_redis_has_no_memory_for_is_retried_alone(short_of_memory: ShortOfMemory) -> None:
    """Out of memory, Redis refuses a large write and takes the small ones of
    the same pipeline: the small ones are saved once, the large one waits for
    the next flush (not lost: an outage), and nothing is applied twice."""
    r = short_of_memory
    for session_id in ("big", "small1", "small2"):
        r.write(session_id, b"0", create=True)
    r.squeeze()
    r.write("small1", b"1")
    r.write("small2", b"1")
    r.write("big", BIG)  # sent last in the pipeline
    assert not r.cached.flusher.flush_pending(force=True)  # the big one is still pending
    assert r.cached.flusher.stats.lost == 0
    assert r.versions("small1", "small2") == [2, 2]
    r.relieve()
    assert r.cached.flusher.flush_pending(force=True)
    assert r.versions("big", "small1", "small2") == [2, 2, 2]  # each write applied once


@pytest.mark.redis
def test_only_the_refused_part_of_a_sessions_queued_writes_is_retried(short_of_memory: ShortOfMemory) -> None:
    """A session's queued writes that do not fold into one (here the second
    carries ``defaults``) go as two; when Redis takes the first and refuses
    the second, only the second is sent again."""
    r = short_of_memory
    r.write("s1", b"0", create=True)
    r.squeeze()
    r.write("s1", b"1")
    r.write("s1", BIG, defaults={"old": b"1"})
    assert not r.cached.flusher.flush_pending(force=True)
    assert r.versions("s1") == [2]
    r.relieve()
    assert r.cached.flusher.flush_pending(force=True)
    assert r.versions("s1") == [3]  # created, then two writes, each applied once


@pytest.mark.redis
def test_a_group_commit_keeps_only_what_redis_refused_for_later(short_of_memory: ShortOfMemory) -> None:
    """Strict writes committed together (a group, formed by hand here): a
    request whose write Redis refuses for memory has it kept pending (its
    request goes on, as in any outage), one whose write went through gets
    its record; a ticket's expiry touch that went through is not resent."""
    from wsgi_session.flusher import _Ticket

    r = short_of_memory
    for session_id in ("big", "small"):
        r.write(session_id, b"0", create=True)
    r.squeeze()
    touch = dataclasses.replace(r.diff("big", b""), set={}, expires=r.now + 900)
    big, small = _Ticket([touch, r.diff("big", BIG)]), _Ticket([r.diff("small", b"1")])
    r.cached.flusher._write_batch([small, big])  # the big write last: it fills the memory
    assert big.done
    assert small.done
    assert big.error is None
    assert small.error is None
    assert [getattr(record, "version", None) for record in small.results] == [2]
    assert big.results[1] is None  # kept pending: not written yet
    assert r.cached.flusher.has_pending("big")
    assert r.versions("big", "small") == [2, 2]  # the touch went through
    r.relieve()
    assert r.cached.flusher.flush_pending(force=True)
    assert r.versions("big", "small") == [3, 2]  # the big write once, the touch not again
