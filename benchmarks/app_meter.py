"""The CPU a gunicorn worker spends inside the WSGI application, per request.

A worker's CPU per request (:mod:`benchmarks.cpu_usage`) is gunicorn's
parsing and writing, the kernel's sockets and thread wake-ups, and the app:
the session library and the view. :class:`MeteredApp` separates the last:
it sums the calling thread's CPU time (``time.thread_time_ns``) over each
call of the app, the draining of its body and its ``close()``, where a
session is finished, and answers ``GET /__meter`` (uncounted) with the sums
so far. The load test reads it before and after each measured run of a
1-worker server (with several workers, one request reaches one of them).

Code that runs for a few µs in an in-process loop takes several times longer
in a busy worker, whose threads, gunicorn and the kernel take turns on the
same caches; this is what it takes there. Two clock reads per request are
the price (a system call each), paid by every subject alike; the body is
drained and closed before gunicorn sends it (the benchmark's bodies are a few
bytes). The load test wraps the app only on a server it reads (one worker).
"""

from __future__ import annotations

import json
import os
import threading
import time
import typing as t

from .apps import drained
from .gunicorn_process import get

if t.TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

PATH = "/__meter"


class MeteredApp:
    """``app``, with the thread CPU time of its calls summed up.

    :param app: the WSGI application to meter.
    """

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app
        self.requests = 0
        self.cpu_ns = 0
        self._lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == PATH:
            return self._answer(start_response)
        started = time.thread_time_ns()
        try:
            body = drained(self.app(environ, start_response))
        finally:
            used = time.thread_time_ns() - started
            with self._lock:
                self.requests += 1
                self.cpu_ns += used
        return [body]

    def _answer(self, start_response: StartResponse) -> list[bytes]:
        with self._lock:
            sums = {"requests": self.requests, "cpu_ns": self.cpu_ns, "pid": os.getpid()}
        body = json.dumps(sums).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


def read(port: int) -> Reading:
    """What the metered app on ``port`` has counted so far (one worker)."""
    status, _headers, body = get(port, PATH)
    if status != 200:
        raise RuntimeError(f"{PATH} answered {status}")
    return Reading.parse(body)


class Reading(t.NamedTuple):
    """The sums :class:`MeteredApp` answered at one moment, and the worker
    process that answered (a worker that gunicorn replaced starts from 0)."""

    requests: int
    cpu_ns: int
    pid: int

    @classmethod
    def parse(cls, body: bytes) -> Reading:
        data = json.loads(body)
        return cls(int(data["requests"]), int(data["cpu_ns"]), int(data["pid"]))

    def since(self, before: Reading) -> Reading | None:
        """What was counted between ``before`` and this reading; ``None`` if
        another worker answered (the counts of a run cannot be told)."""
        if self.pid != before.pid or self.requests < before.requests:
            return None
        return Reading(self.requests - before.requests, self.cpu_ns - before.cpu_ns, self.pid)
