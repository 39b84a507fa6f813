"""Where the test suite finds its services, and what it does when one is missing.

**The service rule**: a test that needs a service that cannot be reached is
*skipped* with the reason on a developer's machine, and *fails* when the
``CI`` environment variable is set (CI must provide every service:
``.ci/services``). Override the addresses with ``WSGI_SESSION_REDIS_URL``,
``WSGI_SESSION_POSTGRES_URL`` and ``WSGI_SESSION_MYSQL_URL``.

Also here: :func:`free_port` and :class:`RedisServer`, a private, disposable
``redis-server`` for tests that stop, freeze or cluster one.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import typing as t

import pytest
import redis

if t.TYPE_CHECKING:
    from pathlib import Path

REDIS_URL = os.environ.get("WSGI_SESSION_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "WSGI_SESSION_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("WSGI_SESSION_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def service_unavailable(reason: str) -> t.NoReturn:
    """Skip the test because a service is missing, or fail it under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so every service must be available)", pytrace=False)
    pytest.skip(reason)


def require(name: str, reachable: bool, where: str) -> None:
    """Apply the service rule to ``name`` unless it is ``reachable``."""
    if not reachable:
        service_unavailable(f"{name} is not reachable at {where}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(also_free: int = 0) -> int:
    """A loopback port nobody listens on (and ``port + also_free`` too, for
    Redis Cluster's bus port)."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if not also_free:
            return port
        if port + also_free < 65536:
            try:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port + also_free))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


class RedisServer:
    """A ``redis-server`` process of this test run, without persistence.

    :param directory: its working directory (config, logs, cluster state).
    :param args: extra command line arguments.
    :param port: default: a free port.
    """

    def __init__(self, directory: Path, *args: str, port: int | None = None) -> None:
        if shutil.which("redis-server") is None:
            service_unavailable("redis-server is not on PATH")
        self.directory = directory
        self.port = port or free_port()
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / f"redis-{self.port}.log", "ab")  # noqa: SIM115 - the child owns it
        options = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        options += ["--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            ["redis-server", *self.args, *options], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    service_unavailable(f"redis-server {' '.join(self.args)} did not start")
                time.sleep(0.05)
            finally:
                client.close()
        return self

    def stop(self) -> None:
        """Kill the process (no shutdown courtesy: this is an outage)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def freeze(self) -> None:
        """SIGSTOP: unreachable (requests time out) but its data is kept."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: answering again, with everything it held."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
