"""The load test's meter of the CPU spent inside the WSGI app (benchmarks/app_meter.py)."""

from __future__ import annotations

import json
import os
import threading
import time
import typing as t

from benchmarks.app_meter import PATH, MeteredApp, Reading
from tests.conftest import call_wsgi


class _Body:
    """A response body that burns CPU while it is drained and when it is closed."""

    def __init__(self, burn_s: float) -> None:
        self.burn_s = burn_s
        self.closed = False

    def __iter__(self) -> t.Iterator[bytes]:
        _burn(self.burn_s)
        yield b"he"
        yield b"llo"

    def close(self) -> None:
        _burn(self.burn_s)
        self.closed = True


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_request_is_charged_the_call_the_draining_and_the_close():
    bodies: list[_Body] = []

    def app(environ: t.Any, start_response: t.Any) -> _Body:
        start_response("200 OK", [("Content-Type", "text/plain")])
        _burn(0.01)
        bodies.append(_Body(0.01))
        return bodies[-1]

    metered = MeteredApp(app)
    result = call_wsgi(metered, path="/anything")
    assert result.body == b"hello"
    assert bodies[0].closed
    assert metered.requests == 1
    assert metered.cpu_ns >= 30_000_000  # 10 ms in the call, 10 draining, 10 closing

    before = Reading(metered.requests, metered.cpu_ns, os.getpid())
    call_wsgi(metered, path="/anything")
    counted = Reading(metered.requests, metered.cpu_ns, os.getpid()).since(before)
    assert counted is not None
    assert counted.requests == 1
    assert counted.cpu_ns >= 30_000_000


def test_the_meter_path_answers_the_sums_without_counting_itself():
    def app(environ: t.Any, start_response: t.Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    metered = MeteredApp(app)
    for _ in range(3):
        call_wsgi(metered, path="/plain")
    answer = call_wsgi(metered, path=PATH)
    assert answer.status.startswith("200")
    reading = Reading.parse(answer.body)
    assert reading == Reading(3, metered.cpu_ns, os.getpid())
    assert reading.cpu_ns > 0
    assert json.loads(call_wsgi(metered, path=PATH).body)["requests"] == 3


def test_a_run_across_a_replaced_worker_counts_nothing():
    before = Reading(100, 5_000_000, pid=4242)
    assert Reading(150, 7_000_000, pid=4242).since(before) == Reading(50, 2_000_000, 4242)
    # gunicorn replaced the worker: another process answers, its sums started from 0.
    assert Reading(150, 7_000_000, pid=4343).since(before) is None
    assert Reading(20, 1_000_000, pid=4242).since(before) is None  # reset in place


def test_threads_calling_at_once_are_all_counted():
    def app(environ: t.Any, start_response: t.Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        _burn(0.001)
        return [b"ok"]

    metered = MeteredApp(app)

    def serve() -> None:
        for _ in range(50):
            call_wsgi(metered, path="/plain")

    threads = [threading.Thread(target=serve) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert metered.requests == 200
    assert metered.cpu_ns >= 200 * 1_000_000  # each call burned 1 ms of its own thread's CPU
