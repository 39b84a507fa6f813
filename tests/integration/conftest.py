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
import redis
import sqlalchemy
from services import MYSQL_URL, POSTGRES_URL, REDIS_URL, free_port, port_open, require

from wsgi_session.stores import RedisStore, SQLAlchemyStore

if t.TYPE_CHECKING:
    from wsgi_session.stores.base import Store

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


class SharedBackend:
    """Redis or a SQL database under one namespace (key prefix or table name),
    shared by every store object it makes, like the workers of one app."""

    def __init__(self, kind: str, namespace: str, sqlite_path: Path | None = None) -> None:
        if kind == "redis":
            require("Redis", port_open(6379), REDIS_URL)
            self.url = REDIS_URL
        elif kind == "postgresql":
            require("PostgreSQL", port_open(5432), POSTGRES_URL)
            self.url = POSTGRES_URL
        elif kind == "mariadb":
            require("MariaDB", port_open(3306), MYSQL_URL)
            self.url = MYSQL_URL
        else:
            assert sqlite_path is not None
            self.url = f"sqlite:///{sqlite_path}"
        self.kind = kind
        self.namespace = namespace
        self._engines: list[sqlalchemy.Engine] = []

    def store(self) -> Store:
        """A new store object over the shared namespace."""
        if self.kind == "redis":
            return RedisStore(redis.Redis.from_url(self.url), prefix=self.namespace + ":")
        engine = sqlalchemy.create_engine(self.url)
        self._engines.append(engine)
        return SQLAlchemyStore(engine, table_name=self.namespace)

    def cleanup(self) -> None:
        """Delete the namespace's keys or table."""
        if self.kind == "redis":
            client = redis.Redis.from_url(self.url)
            keys = list(client.scan_iter(match=f"{self.namespace}:*"))
            if keys:
                client.delete(*keys)
            client.close()
        else:
            engine = sqlalchemy.create_engine(self.url)
            with engine.begin() as connection:
                connection.execute(sqlalchemy.text(f"DROP TABLE IF EXISTS {self.namespace}"))
            engine.dispose()
        for engine in self._engines:
            engine.dispose()


@pytest.fixture(params=["redis", "postgresql"])
def shared(request: pytest.FixtureRequest, namespace: str) -> t.Iterator[SharedBackend]:
    """Redis, then PostgreSQL, under a fresh namespace removed afterwards."""
    backend = SharedBackend(request.param, namespace)
    yield backend
    backend.cleanup()
