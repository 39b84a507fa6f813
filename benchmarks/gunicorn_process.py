"""Starting gunicorn for the load test, and stopping it.

:func:`gunicorn` runs ``benchmarks.serve:app`` (the subject named by
``BENCH_SUBJECT``, built in each worker) on a free loopback port, in a session
of its own so that stopping it stops nothing else; :func:`get` is the one
plain HTTP request the load test makes itself.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing as t

from .settings import BENCHMARKS, ROOT

if t.TYPE_CHECKING:
    from .settings import Namespace
    from .subjects import Subject

CONFIG = BENCHMARKS / "gunicorn_conf.py"


class Running(t.NamedTuple):
    """A started gunicorn: where it listens and its master's process id."""

    port: int
    pid: int


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str, cookie: str = "", timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One GET on loopback: status, headers (lower-cased names), body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = conn.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        conn.close()


@contextlib.contextmanager
def gunicorn(
    subject: Subject, server_args: list[str], namespace: Namespace, meter_app: bool = False
) -> t.Iterator[Running]:
    """Run gunicorn serving ``subject`` with ``server_args`` (worker class,
    workers, threads); yield where it runs; stop it (and only it: the master
    is started in a session of its own and signalled by id). ``meter_app``
    wraps each worker's app in :class:`~benchmarks.app_meter.MeteredApp`."""
    port = free_port()
    env = {
        **os.environ,
        "BENCH_SUBJECT": subject.slug,
        "BENCH_NAMESPACE": namespace.token,
        "BENCH_APP_METER": "1" if meter_app else "",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "gunicorn", "-c", str(CONFIG), "-b", f"127.0.0.1:{port}"]
    command += [*server_args, "benchmarks.serve:app"]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_ready(process, port, log)
            yield Running(port, process.pid)
        finally:
            stop(process)


def wait_ready(process: subprocess.Popen[bytes], port: int, log: t.IO[bytes], timeout: float = 30.0) -> None:
    """Wait until ``/plain`` answers 200 (at most ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if get(port, "/plain", timeout=1.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    log.seek(0)
    tail = log.read().decode(errors="replace")[-2000:]
    raise RuntimeError(f"gunicorn did not start (exit code {process.poll()}):\n{tail}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the master, then SIGKILL its process group if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
