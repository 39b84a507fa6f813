"""Fixtures for tests that run real servers: gunicorn over Redis or PostgreSQL."""

from __future__ import annotations

import http.client
import os
import secrets
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import pytest
from services import free_port, port_open

ROOT = Path(__file__).resolve().parents[2]


class Server(t.NamedTuple):
    port: int
    process: subprocess.Popen[bytes]


def start_gunicorn(store_url: str, namespace: str) -> Server:
    """gunicorn -w 3 --threads 4 --preload serving app_under_test."""
    port = free_port()
    env = {
        **os.environ,
        "WSGI_SESSION_TEST_STORE": store_url,
        "WSGI_SESSION_TEST_NAMESPACE": namespace,
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "tests/integration/gunicorn_conf.py",
         "-b", f"127.0.0.1:{port}", "tests.integration.app_under_test:app"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            raise RuntimeError(f"gunicorn exited early:\n{output}")
        if port_open(port):
            return Server(port, process)
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("gunicorn did not start listening")


def stop(server: Server) -> str:
    server.process.terminate()
    try:
        output, _ = server.process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        output, _ = server.process.communicate()
    return output.decode()


class Client:
    """One browser: keeps its cookie, opens a fresh connection per request so
    gunicorn hands requests to different workers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie: str | None = None
        self.workers: set[str] = set()

    def get(self, path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"Connection": "close"}
            if self.cookie:
                headers["Cookie"] = self.cookie
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            body = response.read()
            set_cookie = response.getheader("Set-Cookie")
            if set_cookie:
                self.cookie = set_cookie.split(";", 1)[0]
            worker = response.getheader("X-Worker")
            if worker:
                self.workers.add(worker)
            return response.status, body
        finally:
            connection.close()


@pytest.fixture
def namespace() -> str:
    return "wsgi_session_it_" + secrets.token_hex(4)
