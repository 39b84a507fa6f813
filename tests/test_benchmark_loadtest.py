"""The load test's schedule: every subject's gunicorn up at once, runs interleaved.

Targets compare two subjects' rates from one run. Measured one subject after
the other, they would see a shared machine at different minutes; the load
test therefore runs every trial once per round, the rounds starting at
places spread over the list (benchmarks/loadtest.py, benchmarks/trials.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
import typing as t

from benchmarks import loadtest, trials
from benchmarks.gunicorn_process import Running
from benchmarks.loadtest import run_layout
from benchmarks.settings import Namespace
from benchmarks.subjects import by_slug
from benchmarks.trials import LoadSettings, Server, Trial, rotated
from benchmarks.workloads import INCREMENT, PLAIN, READ
from tests.services import service_unavailable


def _trials(count: int) -> list[Trial]:
    server = Server("gthread 1x2", "gthread", 1, 2)
    running = Running(0, 0)
    subject = by_slug("bare")
    return [Trial(subject, server, PLAIN, running) for _ in range(count)]


def _order(trials: list[Trial], index: int, repeats: int) -> list[int]:
    return [trials.index(trial) for trial in rotated(trials, index, repeats)]


def test_each_round_runs_every_trial_once_from_a_start_spread_over_the_list():
    four = _trials(4)
    assert [_order(four, index, 4) for index in range(4)] == [
        [0, 1, 2, 3],
        [1, 2, 3, 0],
        [2, 3, 0, 1],
        [3, 0, 1, 2],
    ]
    # As many rounds as trials: each trial stands once in every place.
    for place in range(4):
        assert sorted(_order(four, index, 4)[place] for index in range(4)) == [0, 1, 2, 3]
    # Fewer rounds than trials: the starts are spread over the list, not 0, 1, 2.
    ten = _trials(10)
    orders = [_order(ten, index, 5) for index in range(5)]
    assert [order[0] for order in orders] == [0, 2, 4, 6, 8]
    for order in orders:
        assert sorted(order) == list(range(10))
    # Each trial's place moves over the whole round.
    assert sorted(order.index(9) for order in orders) == [1, 3, 5, 7, 9]
    assert rotated([], 3, 5) == []


def test_a_trial_starts_with_the_check_its_workload_allows():
    server = Server("gthread 1x2", "gthread", 1, 2)
    running = Running(0, 0)
    assert Trial(by_slug("bare"), server, PLAIN, running).check == "n/a"
    assert Trial(by_slug("ws-mem"), server, READ, running).check == "exact"


def _refuses(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_real_gunicorns_are_loaded_in_rounds_and_a_dying_one_is_dropped(monkeypatch):
    """Two subjects' real gunicorns, real ``wrk`` runs; ``wrk`` and
    ``gunicorn`` are wrapped only to record their calls. The call order shows
    the warm-ups, then rounds. Before the memory store subject's increment in
    round 2, its gunicorn is killed (SIGKILL to the whole process group): that
    subject is dropped and its reason kept, while the bare app's rounds go on
    and its results keep every run, with the CPU inside its app metered over
    exactly the measured runs' requests."""
    if shutil.which("wrk") is None:
        service_unavailable("wrk is not installed (Debian: apt-get install wrk)")
    real_wrk, real_gunicorn = trials.wrk, loadtest.gunicorn
    calls: list[tuple[int, str]] = []
    servers: dict[int, Running] = {}

    @contextlib.contextmanager
    def recording_gunicorn(*args: t.Any) -> t.Iterator[Running]:
        with real_gunicorn(*args) as running:
            servers[running.port] = running
            yield running

    def recording_wrk(port: int, workload: t.Any, duration: int, connections: int) -> t.Any:
        calls.append((port, workload.name))
        if workload is INCREMENT and calls.count((port, "increment")) == 3:  # warm-up, round 1, now
            os.killpg(servers[port].pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while not _refuses(port) and time.monotonic() < deadline:
                time.sleep(0.05)
        return real_wrk(port, workload, duration, connections)

    monkeypatch.setattr(loadtest, "gunicorn", recording_gunicorn)
    monkeypatch.setattr(trials, "wrk", recording_wrk)
    bare, memory = by_slug("bare"), by_slug("ws-mem")
    skipped: dict[str, str] = {}
    settings = LoadSettings(duration=1, repeats=3, warmup=1, connections=2)
    server = Server("gthread 1x2", "gthread", 1, 2)
    results = run_layout([bare, memory], server, Namespace.new(), settings, skipped)

    ports = {}
    for port, workload in calls:
        ports.setdefault(workload, port)
    assert ports["plain"] == ports["plain + cookie"] != ports["read"] == ports["increment"]
    order = [workload for _port, workload in calls]
    b0, b1, m0, m1 = "plain", "plain + cookie", "read", "increment"
    assert order == [
        *(b0, b1, m0, m1),  # warm-ups
        *(b0, b1, m0, m1),  # round 1
        *(b1, m0, m1),  # round 2 starts at 4 * 1 // 3 = 1; the increment's server is dead ...
        b0,  # ... so the memory subject is dropped, and the round wraps around to the bare app
        *(b0, b1),  # round 3 starts at 4 * 2 // 3 = 2, the dropped subject's read: only the bare app is left
    ]

    assert list(skipped) == ["wsgi_session[memory] on gthread 1x2"]
    assert skipped["wsgi_session[memory] on gthread 1x2"]  # the failure's type and message
    assert [(r.subject, r.workload) for r in results] == [("bare", "plain"), ("bare", "plain + cookie")]
    for result in results:
        assert len(result.runs) == 3
        assert all(rate > 0 for rate in result.runs)
        assert result.check == "n/a"
        assert result.requests > 0
        if "worker" in result.usage:  # /proc read over the measured runs: some CPU per request
            assert result.usage["worker"]["cpu_us"] > 0
        # One worker: the CPU inside the WSGI app is metered too, a part of the worker's,
        # over the measured runs' requests only (each run may end with one in flight per connection).
        app = result.usage["app"]
        assert result.requests <= app["requests"] <= result.requests + settings.repeats * settings.connections
        assert app["cpu_us"] > 0
        if "worker" in result.usage:
            assert app["cpu_us"] < result.usage["worker"]["cpu_us"]
    assert all(_refuses(port) for port in servers)  # every gunicorn was stopped


def test_the_published_settings_say_the_runs_are_interleaved():
    text = LoadSettings(repeats=3).describe()
    assert "3 runs after a 1 s warm-up" in text
    assert "interleaved" in text
