"""Pending writes are flushed when the process ends: on SIGTERM and at exit.

A child process serves one write in ``write_mode="background"`` with its
flush thread held back (its interval set to an hour, so only shutdown can
write), then is ended by SIGTERM or by returning normally. The parent reads
Redis directly: the write must be there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis
from services import REDIS_URL, port_open, require

CHILD = textwrap.dedent(
    """
    import sys, time, redis
    from wsgi_session import SessionConfig, SessionMiddleware
    from wsgi_session.stores import RedisStore

    def app(environ, start_response):
        environ["session"]["user"] = "ada"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    config = SessionConfig(secret_keys=["shutdown-test-secret-0123456789abcdef"], write_mode="background")
    store = RedisStore(redis.Redis.from_url(sys.argv[1]), prefix=sys.argv[2])
    middleware = SessionMiddleware(app, config, store=store)
    # Hold the flush thread back: only a shutdown path can write the update.
    task = middleware.manager.cached.flusher._task
    task.interval = task.first_delay = 3600
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_NAME": "t", "SERVER_PORT": "80",
               "wsgi.url_scheme": "http"}
    headers = []
    middleware(dict(environ), lambda status, h, exc=None: headers.extend(h))
    cookie = [v for k, v in headers if k == "Set-Cookie"][0].split(";")[0]
    # The session exists (created at once); now an update that stays pending:
    def update(environ, start_response):
        environ["session"]["cart"] = ["tea"]
        start_response("200 OK", [])
        return [b"ok"]
    middleware.app = update
    middleware(dict(environ, HTTP_COOKIE=cookie), lambda *a: None)
    assert middleware.flush_stats.pending == 1
    print(cookie.split("=", 1)[1].split(".")[0], flush=True)
    if sys.argv[3] == "wait":
        time.sleep(60)
    """
)


def run_child(mode: str, prefix: str) -> tuple[subprocess.Popen[str], str]:
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, REDIS_URL, prefix, mode],
        cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    session_id = child.stdout.readline().strip()
    assert session_id, child.stderr.read() if child.stderr else ""
    return child, session_id


@pytest.mark.parametrize("mode", ["sigterm", "exit"])
def test_pending_writes_are_flushed_at_shutdown(mode: str, namespace: str) -> None:
    require("Redis", port_open(6379), REDIS_URL)
    prefix = namespace + ":"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        child, session_id = run_child("wait" if mode == "sigterm" else "exit", prefix)
        if mode == "sigterm":
            time.sleep(0.2)
            assert client.hget(prefix + session_id, "cart") is None  # still pending
            child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) in (0, 128 + signal.SIGTERM)
        assert client.hget(prefix + session_id, "cart") == b'["tea"]'
        assert client.hget(prefix + session_id, "user") == b'"ada"'
    finally:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
