"""Write modes under concurrency, over real Redis and PostgreSQL.

Eight browsers, each sending sequential increments, served by a pool of four
threads through ONE middleware (one gunicorn gthread worker). Whatever the
write mode, a browser must see its own counter go up by exactly one per
request: ``background`` must not lose an increment while the flush thread
has it in flight, and ``strict`` must not be downgraded to a background
write because an expiry touch happened to be pending.
"""

from __future__ import annotations

import concurrent.futures
import threading
import typing as t

import pytest
from webtest import TestApp

from wsgi_session import SessionConfig, SessionMiddleware

from .conftest import SharedBackend

BROWSERS = 8
REQUESTS = 40


def counter(environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
    """Increments ``n``; ``/read`` only reads it."""
    session = environ["session"]
    if environ["PATH_INFO"] != "/read":
        session["n"] = session.get("n", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(session["n"]).encode()]


@pytest.mark.parametrize("write_mode", ["strict", "background"])
def test_each_browser_sees_every_increment(shared: SharedBackend, write_mode: str) -> None:
    config = SessionConfig(secret_keys=["write-modes-secret-0123456789abcdefghij"], write_mode=write_mode)
    middleware = SessionMiddleware(counter, config, store=shared.store())
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)
    lock = threading.Lock()  # webtest's cookie jar is per browser, requests go through the pool
    errors: list[str] = []

    def browse(index: int) -> None:
        browser = TestApp(middleware)
        for expected in range(1, REQUESTS + 1):
            got = pool.submit(browser.get, "/").result().text
            if got != str(expected):
                with lock:
                    errors.append(f"browser {index}: expected {expected}, got {got}")
                return

    try:
        threads = [threading.Thread(target=browse, args=(i,)) for i in range(BROWSERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
    finally:
        pool.shutdown()
        middleware.close()
    # Once flushed, a fresh worker sees every increment of every browser.
    reader = SessionMiddleware(counter, config, store=shared.store())
    try:
        assert reader.advanced.count() == BROWSERS
        for session_id in reader.advanced.ids():
            assert reader.advanced.load(session_id) == {"n": REQUESTS}
    finally:
        reader.close()


def test_a_pending_expiry_touch_does_not_stop_validation(shared: SharedBackend) -> None:
    """Strict mode: a read that queues an expiry touch must not make the next
    read trust the cache while the touch waits for the flush thread."""
    from datetime import timedelta

    secret = "write-modes-secret-0123456789abcdefghij"
    toucher = SessionMiddleware(
        counter, SessionConfig(secret_keys=[secret], touch_interval=timedelta(0)), store=shared.store()
    )
    writer = SessionMiddleware(counter, SessionConfig(secret_keys=[secret]), store=shared.store())
    try:
        browser = TestApp(toucher)
        assert browser.get("/").text == "1"
        other = TestApp(writer)
        other.set_cookie("session", browser.cookies["session"])
        for expected in range(2, 12):
            assert browser.get("/read").text == str(expected - 1)  # queues a touch
            assert other.get("/").text == str(expected)  # another worker writes...
            assert browser.get("/read").text == str(expected)  # ...and is seen at once
    finally:
        toucher.close()
        writer.close()


def test_background_mode_writes_new_sessions_at_once(shared: SharedBackend) -> None:
    """A client's second request may land on another worker: in background
    mode the session it got must already be there (only updates may lag)."""
    config = SessionConfig(secret_keys=["write-modes-secret-0123456789abcdefghij"], write_mode="background")
    one = SessionMiddleware(counter, config, store=shared.store())
    two = SessionMiddleware(counter, config, store=shared.store())
    try:
        for _ in range(10):
            browser = TestApp(one)
            assert browser.get("/").text == "1"
            elsewhere = TestApp(two)
            elsewhere.set_cookie("session", browser.cookies["session"])
            response = elsewhere.get("/read")
            assert response.text == "1"
            assert "Set-Cookie" not in response.headers  # not replaced by a fresh session
    finally:
        one.close()
        two.close()
