"""``coherence="notify"``: cached reads kept coherent by invalidation messages.

Two middleware instances (two workers) over one real Redis or PostgreSQL,
each with its subscriber thread. A private Redis server lets the tests prove
that a cached read makes no round trip (it still answers while the server is
frozen) and that a broken subscription falls back to validating reads.
"""

from __future__ import annotations

import json
import threading
import time
import typing as t

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from services import RedisServer
from webtest import TestApp

from wsgi_session import SessionConfig, SessionMiddleware
from wsgi_session.stores import RedisStore

from .conftest import SharedBackend

if t.TYPE_CHECKING:
    from pathlib import Path

    from wsgi_session.stores.base import Store

SECRET = "notify-test-secret-0123456789abcdefghijklm"


def counter(environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
    session = environ["session"]
    if environ["PATH_INFO"] == "/inc":
        session["n"] = session.get("n", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(session.get("n", 0)).encode()]


def wait_until(condition: t.Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def listener_of(middleware: SessionMiddleware) -> t.Any:
    cached = middleware.manager.cached
    assert cached is not None
    assert cached.listener is not None
    return cached.listener


@pytest.fixture
def make_store(shared: SharedBackend) -> t.Callable[[], Store]:
    return shared.store


def test_other_workers_change_reaches_the_cache(make_store: t.Callable[[], Store]) -> None:
    config = SessionConfig(secret_keys=[SECRET], coherence="notify")
    one = SessionMiddleware(counter, config, store=make_store())
    two = SessionMiddleware(counter, config, store=make_store())
    try:
        first = TestApp(one)
        assert first.get("/inc").text == "1"
        second = TestApp(two)
        second.set_cookie("session", first.cookies["session"])
        assert second.get("/").text == "1"  # loads and caches it
        assert wait_until(lambda: listener_of(one).healthy and listener_of(two).healthy)
        heard = listener_of(two).messages
        assert first.get("/inc").text == "2"
        assert wait_until(lambda: listener_of(two).messages > heard), "no invalidation arrived"
        assert second.get("/").text == "2"
        assert second.get("/inc").text == "3"
        assert wait_until(lambda: first.get("/").text == "3")
    finally:
        one.close()
        two.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> t.Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def fast_client(server: RedisServer) -> redis.Redis:
    return redis.Redis(
        port=server.port, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )


def test_cached_read_makes_no_round_trip(private_redis: RedisServer) -> None:
    config = SessionConfig(secret_keys=[SECRET], coherence="notify")
    middleware = SessionMiddleware(counter, config, store=RedisStore(fast_client(private_redis)))
    try:
        client = TestApp(middleware)
        assert client.get("/inc").text == "1"  # starts the subscriber thread
        # Subscribing drops the cache (messages before it may be missed), so
        # read once more after it to cache the session again.
        assert wait_until(lambda: listener_of(middleware).healthy)
        assert client.get("/").text == "1"
        private_redis.freeze()  # every round trip would now time out
        try:
            assert client.get("/").text == "1"  # served from the cache alone
        finally:
            private_redis.thaw()
    finally:
        middleware.close()


def test_lost_subscription_falls_back_to_validation(private_redis: RedisServer) -> None:
    config = SessionConfig(secret_keys=[SECRET], coherence="notify")
    middleware = SessionMiddleware(counter, config, store=RedisStore(fast_client(private_redis)))
    try:
        client = TestApp(middleware)
        assert client.get("/inc").text == "1"
        listener = listener_of(middleware)
        assert wait_until(lambda: listener.healthy)
        resets = listener.resets
        private_redis.stop()
        assert wait_until(lambda: not listener.healthy), "the listener did not notice"
        client.get("/", status=503)  # no blind trust while deaf: validation needs the store
        private_redis.start()  # an empty server again (it keeps nothing)
        assert wait_until(lambda: listener.healthy and listener.resets > resets)
        assert client.get("/").text == "0"  # the cache was dropped: the session is gone
    finally:
        middleware.close()


class SlowLoadRedisStore(RedisStore):
    """A fault injector (named as such): a real Redis, but ``load`` can be
    held after it has read the hash, so a write of the same process can be
    made to land in between — an interleaving no server produces on demand."""

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.hold = False
        self.loaded = threading.Event()
        self.release = threading.Event()

    def load(self, session_id: str) -> t.Any:
        record = super().load(session_id)
        if self.hold:
            self.loaded.set()
            self.release.wait(10)
        return record


def test_a_slow_load_never_replaces_a_newer_own_write(private_redis: RedisServer) -> None:
    from wsgi_session.coherence import CachedStore
    from wsgi_session.record import SessionDiff

    inner = SlowLoadRedisStore(fast_client(private_redis), prefix="race:")
    cached = CachedStore(inner, SessionConfig(secret_keys=[SECRET], coherence="notify"))
    cached.setup()
    try:
        assert cached.listener is not None
        assert wait_until(lambda: cached.listener is not None and cached.listener.healthy)
        now = time.time()

        def diff(value: bytes, create: bool = False) -> SessionDiff:
            return SessionDiff("race_session_000001", {"x": value}, frozenset(), False, now + 3600,
                               None, False, now, create=create)  # fmt: skip

        cached.apply([diff(b'"v1"', create=True)])
        cached.forget("race_session_000001")
        inner.hold = True
        reader = threading.Thread(target=cached.load, args=("race_session_000001",))
        reader.start()  # request 1 reads v1, slowly
        assert inner.loaded.wait(10)
        inner.hold = False
        cached.apply([diff(b'"v2"')])  # request 2 writes v2 and answers
        inner.release.set()
        reader.join()
        record = cached.load("race_session_000001")  # trusted from the cache
        assert record is not None
        assert record.values["x"] == b'"v2"'
    finally:
        cached.close()


def consenting(environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
    """``/set`` writes ``x`` (a memory-only session until consent); ``/consent``
    gives consent and writes ``y`` in the same request."""
    session = environ["session"]
    if environ["PATH_INFO"] == "/set":
        session["x"] = session.get("x", 0) + 1
    elif environ["PATH_INFO"] == "/consent":
        session.set_store(True)
        session["y"] = "with consent"
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(dict(session), sort_keys=True).encode()]


@pytest.mark.parametrize("write_mode", ["strict", "background"])
def test_consent_replaces_the_memory_only_copy_with_the_stored_one(
    make_store: t.Callable[[], Store], write_mode: str
) -> None:
    """Opt-in mode: a session kept in process memory until consent is then
    stored whole. Its memory-only copy had a higher version (three local
    writes) than the new stored record (1); in notify mode that copy must not
    outlive the consent, or the process serves it forever, without the
    consent request's own write and deaf to other workers' changes."""
    config = SessionConfig(secret_keys=[SECRET], mode="opt_in", coherence="notify", write_mode=write_mode)
    app = SessionMiddleware(consenting, config, store=make_store())
    try:
        client = TestApp(app)
        for _ in range(3):
            client.get("/set")
        assert wait_until(lambda: listener_of(app).healthy)
        assert client.get("/consent").json == {"x": 3, "y": "with consent"}
        cached = app.manager.cached
        assert cached is not None
        assert cached.flusher.flush_pending(force=True)
        assert client.get("/").json == {"x": 3, "y": "with consent"}
        session_id = client.cookies["session"].split(".", 1)[0]
        entry = cached.cache.peek(session_id)
        assert entry is not None
        assert not entry.local  # the stored copy, kept coherent from now on
    finally:
        app.close()
