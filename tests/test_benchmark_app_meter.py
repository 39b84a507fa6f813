"""The load test's meter of the CPU spent inside the WSGI app (benchmarks/app_meter.py)."""

from __future__ import annotations

import json
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

    before = Reading(metered.requests, metered.cpu_ns)
    call_wsgi(metered, path="/anything")
    assert metered.requests == before.requests + 1
    assert metered.cpu_ns - before.cpu_ns >= 30_000_000


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
    assert reading == Reading(3, metered.cpu_ns)
    assert reading.cpu_ns > 0
    assert json.loads(call_wsgi(metered, path=PATH).body)["requests"] == 3
