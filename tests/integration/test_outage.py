"""A real Redis that goes away and comes back.

Each test starts its own ``redis-server`` on a free loopback port and stops it
at the worst moments — before a request, and in the middle of one, between
the session's load and its commit. Promises checked: the outage answer is
given (503 with ``Retry-After``, or an empty unsaved session when failing
open), stored data is never overwritten, writes that could not be committed
are kept and flushed once the server is back, and the flush thread survives.
"""

from __future__ import annotations

import time
import typing as t
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from services import RedisServer
from webtest import TestApp

from wsgi_session import SessionConfig, SessionMiddleware
from wsgi_session.stores import RedisStore

SECRET = "outage-test-secret-0123456789abcdefghijkl"


@pytest.fixture
def server(tmp_path: Path) -> t.Iterator[RedisServer]:
    made = RedisServer(tmp_path).start()
    yield made
    made.stop()


def fast_failing_client(server: RedisServer) -> redis.Redis:
    """As the deployment guide advises: short timeouts and no client-side
    retry loop (redis-py 8 retries 10 times with backoff by default); the
    flusher does the retrying, without holding a request."""
    return redis.Redis(
        host="127.0.0.1",
        port=server.port,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )


def make_app(server: RedisServer, **settings: t.Any) -> tuple[SessionMiddleware, dict[str, bool]]:
    """A counter app; ``control["freeze"]`` freezes the server inside the view,
    after the session was loaded and before it is committed."""
    control = {"freeze": False}

    def app(environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
        session = environ["session"]
        if environ["PATH_INFO"] == "/inc":
            session["n"] = session.get("n", 0) + 1
            if control["freeze"]:
                server.freeze()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(session.get("n", 0)).encode()]

    config = SessionConfig(secret_keys=[SECRET], **settings)
    store = RedisStore(fast_failing_client(server), prefix="outage:")
    return SessionMiddleware(app, config, store=store), control


def test_fail_closed_answers_503_and_keeps_the_data(server: RedisServer) -> None:
    middleware, _ = make_app(server)
    client = TestApp(middleware)
    assert client.get("/inc").text == "1"
    server.stop()
    response = client.get("/inc", status=503)
    assert response.headers["Retry-After"] == "5"
    assert "Set-Cookie" not in response.headers
    server.start()  # redis-server keeps nothing on disk here: the data is gone with it
    # ... so write again, then fail while reading: the stored row must survive untouched.
    fresh = TestApp(middleware)
    assert fresh.get("/inc").text == "1"
    server.stop()
    fresh.get("/", status=503)
    fresh.get("/inc", status=503)
    middleware.close()


def test_fail_open_serves_an_empty_unsaved_session(server: RedisServer, tmp_path: t.Any) -> None:
    middleware, _ = make_app(server, outage_policy="fail_open")
    client = TestApp(middleware)
    assert client.get("/inc").text == "1"
    cookie = client.cookies["session"]
    raw = fast_failing_client(server)
    [key] = raw.keys("outage:*")
    stored = raw.hgetall(key)
    server.freeze()  # unreachable, but its data stays
    try:
        middleware_during, _ = make_app(server, outage_policy="fail_open")
        during = TestApp(middleware_during)
        during.set_cookie("session", cookie)
        response = during.get("/inc")
        assert response.status_int == 200
        assert response.text == "1"  # an empty session, incremented, not saved
        assert "Set-Cookie" not in response.headers
    finally:
        server.thaw()
    assert raw.hgetall(key) == stored  # nothing stored was touched
    assert client.get("/").text == "1"
    middleware.close()


def test_write_that_fails_mid_request_is_kept_and_flushed(server: RedisServer) -> None:
    middleware, control = make_app(server)
    client = TestApp(middleware)
    assert client.get("/inc").text == "1"
    session_id = client.cookies["session"].split(".")[0]
    control["freeze"] = True
    assert client.get("/inc").text == "2"  # the commit timed out: kept pending, not lost
    control["freeze"] = False
    flush = middleware.flush_stats
    assert flush is not None
    assert flush.pending == 1
    assert flush.failures >= 1
    # This worker reads its own pending write while the store is unreachable.
    assert client.get("/").text == "2"
    server.thaw()
    deadline = time.monotonic() + 10
    while flush.pending and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flush.pending == 0
    assert flush.retries >= 1
    assert fast_failing_client(server).hget(f"outage:{session_id}", "n") == b"2"
    cached = middleware.manager.cached
    assert cached is not None
    assert cached.flusher._task.running
    other_worker, _ = make_app(server)
    reader = TestApp(other_worker)
    reader.set_cookie("session", client.cookies["session"])
    assert reader.get("/").text == "2"
    middleware.close()
    other_worker.close()


def test_pending_writes_are_flushed_on_close(server: RedisServer) -> None:
    middleware, control = make_app(server, write_mode="background")
    client = TestApp(middleware)
    client.get("/inc")
    session_id = client.cookies["session"].split(".")[0]
    flush = middleware.flush_stats
    assert flush is not None
    deadline = time.monotonic() + 5
    while flush.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fast_failing_client(server).hget(f"outage:{session_id}", "n") == b"1"
    control["freeze"] = True
    client.get("/inc")  # background: queued; the server freezes in the view
    control["freeze"] = False
    assert flush.pending >= 1
    server.thaw()
    middleware.close()  # flushes before returning
    assert flush.pending == 0
    assert flush.lost == 0
    assert fast_failing_client(server).hget(f"outage:{session_id}", "n") == b"2"


def test_close_with_the_store_down_reports_what_was_lost(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    middleware, control = make_app(server, write_mode="background")
    client = TestApp(middleware)
    control["freeze"] = True
    client.get("/inc")
    flush = middleware.flush_stats
    assert flush is not None
    cached = middleware.manager.cached
    assert cached is not None
    cached.flusher.close(timeout=0.5)
    assert flush.lost == 1
    assert "were NOT saved" in caplog.text
    server.thaw()


def test_a_row_damaged_between_requests_is_not_a_500(server: RedisServer) -> None:
    """The cached copy still validates (same version), but the stored hash
    lost a metadata field: the write fails with BadStoredData. The request
    is answered normally, the row is left as it is, and the next request
    gets a fresh session."""
    middleware, _ = make_app(server)
    client = TestApp(middleware)
    assert client.get("/inc").text == "1"
    raw = fast_failing_client(server)
    [key] = raw.keys("outage:*")
    raw.hdel(key, b"\0c")
    damaged = raw.hgetall(key)
    assert client.get("/inc").status_int == 200
    assert raw.hgetall(key) == damaged  # left alone
    assert middleware.stats.unreadable_rows == 1
    assert client.get("/inc").text == "1"  # a fresh session
    middleware.close()


def test_one_damaged_row_does_not_hold_back_other_background_writes(server: RedisServer) -> None:
    middleware, _ = make_app(server, write_mode="background")
    good, bad = TestApp(middleware), TestApp(middleware)
    good.get("/inc")
    bad.get("/inc")
    raw = fast_failing_client(server)
    bad_key = f"outage:{bad.cookies['session'].split('.')[0]}"
    good_key = f"outage:{good.cookies['session'].split('.')[0]}"
    flush = middleware.flush_stats
    assert flush is not None
    deadline = time.monotonic() + 5
    while flush.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    raw.hdel(bad_key, b"\0c")
    good.get("/inc")
    bad.get("/inc")  # both queued; the bad one cannot be merged
    deadline = time.monotonic() + 5
    while flush.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert flush.pending == 0  # not replayed forever
    assert flush.lost == 1  # the bad one, counted and logged
    assert raw.hget(good_key, "n") == b"2"  # the good one was written
    middleware.close()
