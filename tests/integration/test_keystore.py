"""The bloom filter wired into the middleware, over real Redis and PostgreSQL.

Two middleware instances stand for two workers. The filter must never lose a
session another worker created after this worker's filter was seeded, and it
must spare the store lookup for tokens whose ids were never issued.
"""

from __future__ import annotations

import itertools
import time
import typing as t

import pytest
from webtest import TestApp

from wsgi_session import SessionConfig, SessionMiddleware
from wsgi_session.signing import Token

from .conftest import SharedBackend

if t.TYPE_CHECKING:
    from wsgi_session.stores.base import Store

SECRET = "keystore-test-secret-0123456789abcdefghij"


def app(environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
    session = environ["session"]
    if environ["PATH_INFO"] == "/login":
        session["user"] = "ada"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(session.get("user", "-")).encode()]


def wait_until(condition: t.Callable[[], bool], seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def make_store(shared: SharedBackend) -> t.Callable[[], Store]:
    return shared.store


def seeded(middleware: SessionMiddleware) -> bool:
    stats = middleware.bloom_stats()
    return stats is not None and stats["synced_at"] is not None


def test_filter_is_on_by_default_and_seeded_from_the_store(make_store: t.Callable[[], Store]) -> None:
    config = SessionConfig(secret_keys=[SECRET])
    first = SessionMiddleware(app, config, store=make_store())
    client = TestApp(first)
    client.get("/login")
    session_id = client.cookies["session"].split(".")[0]
    second = SessionMiddleware(app, config, store=make_store())
    try:
        TestApp(second).get("/")  # the first request starts the seeding thread
        assert wait_until(lambda: seeded(second))
        keystore = second.manager.keystore
        assert keystore is not None
        assert session_id in keystore.known  # seeded from the store's ids
        stats = second.bloom_stats()
        assert stats is not None
        assert stats["size_bytes"] > 0
        assert 0 < stats["estimated_false_positive_rate"] < config.bloom_false_positive_rate
    finally:
        first.close()
        second.close()


def test_a_session_created_after_seeding_by_another_worker_is_never_lost(
    make_store: t.Callable[[], Store],
) -> None:
    config = SessionConfig(secret_keys=[SECRET])
    reader = SessionMiddleware(app, config, store=make_store())
    writer = SessionMiddleware(app, config, store=make_store())
    try:
        TestApp(reader).get("/")
        assert wait_until(lambda: seeded(reader))
        client = TestApp(writer)
        assert client.get("/login").text == "ada"  # created after the reader's filter was built
        other = TestApp(reader)
        other.set_cookie("session", client.cookies["session"])
        assert other.get("/").text == "ada"  # looked up, not skipped
    finally:
        reader.close()
        writer.close()


def test_a_never_issued_id_skips_the_store_lookup(make_store: t.Callable[[], Store]) -> None:
    config = SessionConfig(secret_keys=[SECRET])
    middleware = SessionMiddleware(app, config, store=make_store())
    try:
        TestApp(middleware).get("/")
        assert wait_until(lambda: seeded(middleware))
        # A validly signed token for an id nobody stored, issued two hours ago.
        forged = middleware.manager.signer.dumps(Token("N" * 32, False, int(time.time()) - 7200))
        calls: list[str] = []
        store = middleware.manager.store
        original = store.load

        def counting_load(session_id: str) -> t.Any:
            calls.append(session_id)
            return original(session_id)

        store.load = counting_load  # type: ignore[method-assign]
        before = middleware.bloom_stats()
        assert before is not None
        client = TestApp(middleware)
        client.set_cookie("session", forged)
        response = client.get("/")
        assert response.text == "-"
        assert calls == []  # no store round trip
        after = middleware.bloom_stats()
        assert after is not None
        assert after["lookups_saved"] == before["lookups_saved"] + 1
        # A token issued just now is looked up (another worker may have made it).
        fresh = middleware.manager.signer.dumps(Token("M" * 32, False, int(time.time())))
        client.set_cookie("session", fresh)
        client.get("/")
        assert calls == ["M" * 32]
    finally:
        middleware.close()


def test_custom_id_generator_needs_no_exists_round_trip(make_store: t.Callable[[], Store]) -> None:
    counter = itertools.count()

    def sequential_ids() -> str:
        return f"custom-id-{next(counter):08d}-{time.time_ns()}"

    config = SessionConfig(secret_keys=[SECRET], id_generator=sequential_ids)
    middleware = SessionMiddleware(app, config, store=make_store())
    try:
        TestApp(middleware).get("/")
        assert wait_until(lambda: seeded(middleware))
        before = middleware.bloom_stats()
        assert before is not None
        for _ in range(5):
            TestApp(middleware).get("/login")
        after = middleware.bloom_stats()
        assert after is not None
        assert after["lookups_saved"] >= before["lookups_saved"] + 5
        assert middleware.advanced.count() == 5
    finally:
        middleware.close()
