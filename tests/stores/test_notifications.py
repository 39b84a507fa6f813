"""Change announcements for ``coherence="notify"``: Redis pub/sub and
PostgreSQL NOTIFY, heard by a real subscriber thread."""

from __future__ import annotations

import dataclasses
import threading
import time
import typing as t

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from services import RedisServer

from wsgi_session.crypto import SealedStore, Sealer
from wsgi_session.exceptions import StoreUnavailable
from wsgi_session.stores import RedisStore

if t.TYPE_CHECKING:
    from pathlib import Path

    from wsgi_session.record import SessionDiff
    from wsgi_session.stores.base import Store

    from .conftest import Backend

    MakeDiff = t.Callable[..., t.Any]

ANNOUNCING = [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
    pytest.param("sentinel", marks=pytest.mark.redis),
    pytest.param("postgresql", marks=pytest.mark.postgres),
]
announcing = pytest.mark.parametrize("backend", ANNOUNCING, indirect=True)


@dataclasses.dataclass
class Subscriber:
    """``store.listen()`` on a thread; records what it hears and, for each
    message, what the store holds at that moment."""

    store: Store
    heard: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    seen: dict[str, object] = dataclasses.field(default_factory=dict)
    errors: list[BaseException] = dataclasses.field(default_factory=list)
    ready: threading.Event = dataclasses.field(default_factory=threading.Event)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10), f"no subscription: {self.errors}"

    def _run(self) -> None:
        try:
            self.store.listen(self._on_message, self.ready.set, self.stop)
        except BaseException as exc:
            self.errors.append(exc)

    def _on_message(self, origin: str, session_id: str) -> None:
        record = self.store.load(session_id)
        self.seen[session_id] = None if record is None else dict(record.values)
        self.heard.append((origin, session_id))

    def wait_for(self, count: int, timeout: float = 5.0) -> list[tuple[str, str]]:
        deadline = time.monotonic() + timeout
        while len(self.heard) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # anything beyond ``count`` arrives too
        return sorted(self.heard)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive(), "listen() did not return after stop"


@pytest.fixture
def subscribe() -> t.Iterator[t.Callable[[Store], Subscriber]]:
    made: list[Subscriber] = []

    def factory(store: Store) -> Subscriber:
        made.append(Subscriber(store))
        return made[-1]

    yield factory
    for subscriber in made:
        subscriber.close()


@announcing
def test_changes_are_announced_after_they_are_visible(
    backend: Backend, make_diff: MakeDiff, subscribe: t.Callable[[Store], Subscriber]
) -> None:
    store = backend.store
    assert store.supports_notifications
    store.enable_notifications("origin-1")
    subscriber = subscribe(store)
    store.apply([make_diff("s1", {"k": b"1"}, create=True), make_diff("s2", {"k": b"2"}, create=True)])
    store.apply([make_diff("missing", {"k": b"x"})])  # dropped: nothing changed, nothing said
    assert subscriber.wait_for(2) == [("origin-1", "s1"), ("origin-1", "s2")]
    assert subscriber.seen == {"s1": {"k": b"1"}, "s2": {"k": b"2"}}
    subscriber.heard.clear()
    store.delete(["s1"])
    assert subscriber.wait_for(1) == [("origin-1", "s1")]
    assert subscriber.seen["s1"] is None
    subscriber.heard.clear()
    store.clear()
    assert subscriber.wait_for(1) == [("origin-1", "s2")]
    assert subscriber.errors == []


@announcing
def test_each_lone_write_is_announced_once_whichever_way_it_is_written(
    backend: Backend, make_diff: MakeDiff, subscribe: t.Callable[[Store], Subscriber]
) -> None:
    """A strict request's commit is one diff. On PostgreSQL it is written by
    one statement that also notifies when it can (a create, or an update of
    an unchanged snapshot), else in a transaction that notifies at its end:
    either way one announcement, after the change is visible, and none for
    a write to a session that does not exist."""
    store = backend.store
    store.enable_notifications("lone")
    subscriber = subscribe(store)

    def heard_after(diff: SessionDiff, timeout: float = 5.0) -> list[tuple[str, str]]:
        subscriber.heard.clear()
        store.apply([diff])
        return subscriber.wait_for(1, timeout)

    assert heard_after(make_diff("s1", {"k": b"1"}, create=True)) == [("lone", "s1")]  # created
    snapshot = store.load("s1")
    assert snapshot is not None
    fresh = dataclasses.replace(make_diff("s1", {"k": b"2"}), base=snapshot)
    assert heard_after(fresh) == [("lone", "s1")]  # the snapshot's version: one guarded UPDATE
    assert subscriber.seen["s1"] == {"k": b"2"}
    stale = dataclasses.replace(make_diff("s1", {"j": b"3"}), base=snapshot)
    assert heard_after(stale) == [("lone", "s1")]  # a stale snapshot: merged in a transaction
    assert subscriber.seen["s1"] == {"k": b"2", "j": b"3"}
    assert heard_after(make_diff("s1", {"k": b"4"}, create=True)) == [("lone", "s1")]  # exists already
    assert subscriber.seen["s1"] == {"k": b"4", "j": b"3"}
    assert heard_after(make_diff("gone", {"k": b"x"}), timeout=0.5) == []  # dropped: nothing said
    assert subscriber.errors == []


@announcing
def test_nothing_is_announced_unless_enabled(
    backend: Backend, make_diff: MakeDiff, subscribe: t.Callable[[Store], Subscriber]
) -> None:
    subscriber = subscribe(backend.store)
    backend.store.apply([make_diff("s1", {"k": b"1"}, create=True)])
    backend.store.delete(["s1"])
    assert subscriber.wait_for(1, timeout=0.5) == []


@pytest.mark.parametrize("backend", ANNOUNCING[::3], indirect=True)
def test_sealed_store_passes_announcements_through(
    backend: Backend, make_diff: MakeDiff, subscribe: t.Callable[[Store], Subscriber]
) -> None:
    store = SealedStore(backend.store, Sealer([b"an encryption key of 32 bytes or more"]))
    assert store.supports_notifications
    store.enable_notifications("sealed")
    subscriber = subscribe(store)
    store.apply([make_diff("s1", {"k": b"secret"}, create=True)])
    assert subscriber.wait_for(1) == [("sealed", "s1")]
    assert subscriber.seen == {"s1": {"k": b"secret"}}


@pytest.mark.parametrize(
    "backend",
    ["memory", "sqlite", pytest.param("mariadb", marks=pytest.mark.mysql)],
    indirect=True,
)
def test_stores_that_cannot_announce_say_so(backend: Backend) -> None:
    assert not backend.store.supports_notifications
    assert not SealedStore(backend.store, Sealer([b"x" * 32])).supports_notifications
    with pytest.raises(NotImplementedError):
        backend.store.enable_notifications("origin")


@pytest.mark.redis
def test_a_broken_subscription_raises(tmp_path: Path, subscribe: t.Callable[[Store], Subscriber]) -> None:
    server = RedisServer(tmp_path / "pubsub").start()
    client = redis.Redis(port=server.port, socket_timeout=1, retry=Retry(NoBackoff(), 0))
    try:
        subscriber = subscribe(RedisStore(client))
        server.stop()
        subscriber.thread.join(5)
        assert len(subscriber.errors) == 1
        assert isinstance(subscriber.errors[0], StoreUnavailable)
    finally:
        client.close()
        server.stop()
