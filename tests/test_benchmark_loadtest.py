"""The load test's schedule: every subject's gunicorn up at once, runs interleaved.

Targets compare two subjects' rates from one run. Measured one subject after
the other, they would see a shared machine at different minutes; the load
test therefore runs every trial once per round, each round starting one
trial further on (benchmarks/loadtest.py).
"""

from __future__ import annotations

import shutil
import typing as t

from benchmarks import loadtest
from benchmarks.loadtest import LoadSettings, Server, Trial, rotated, run_layout
from benchmarks.settings import Namespace
from benchmarks.subjects import by_slug
from benchmarks.workloads import INCREMENT, PLAIN, READ
from tests.services import service_unavailable


def _trials(count: int) -> list[Trial]:
    server = Server("gthread 1x2", "gthread", 1, 2)
    running = loadtest.Running(0, 0)
    subject = by_slug("bare")
    return [Trial(subject, server, PLAIN, running) for _ in range(count)]


def test_each_round_runs_every_trial_once_starting_one_further_on():
    trials = _trials(4)
    orders = [[trials.index(trial) for trial in rotated(trials, index)] for index in range(6)]
    assert orders == [
        [0, 1, 2, 3],
        [1, 2, 3, 0],
        [2, 3, 0, 1],
        [3, 0, 1, 2],
        [0, 1, 2, 3],  # wraps around after as many rounds as trials
        [1, 2, 3, 0],
    ]
    # Over as many rounds as trials, each trial stands once in every place,
    # so none always follows the same one.
    for place in range(4):
        assert sorted(order[place] for order in orders[:4]) == [0, 1, 2, 3]
    assert rotated([], 3) == []


def test_a_trial_starts_with_the_check_its_workload_allows():
    server = Server("gthread 1x2", "gthread", 1, 2)
    running = loadtest.Running(0, 0)
    assert Trial(by_slug("bare"), server, PLAIN, running).check == "n/a"
    assert Trial(by_slug("ws-mem"), server, READ, running).check == "exact"


def test_real_gunicorns_are_loaded_in_rounds_and_a_failing_subject_is_dropped(monkeypatch):
    """Two subjects' gunicorns, real ``wrk`` runs. The call order shows the
    warm-ups, then rounds; a fault injected into the memory store subject's
    increment in round 2 (a stand-in for a server that dies mid-run, which a
    real one does not do on demand) drops that subject, while the bare app's
    rounds go on and its results keep every run."""
    if shutil.which("wrk") is None:
        service_unavailable("wrk is not installed (Debian: apt-get install wrk)")
    real_wrk = loadtest.wrk
    calls: list[tuple[int, str]] = []

    def recording_wrk(port: int, workload: t.Any, duration: int, connections: int) -> t.Any:
        calls.append((port, workload.name))
        if workload is INCREMENT and sum(1 for call in calls if call == (port, "increment")) == 3:
            raise RuntimeError("injected: the server went away")  # warm-up, round 1, then this
        return real_wrk(port, workload, duration, connections)

    monkeypatch.setattr(loadtest, "wrk", recording_wrk)
    bare, memory = by_slug("bare"), by_slug("ws-mem")
    skipped: dict[str, str] = {}
    results = run_layout(
        [bare, memory],
        Server("gthread 1x2", "gthread", 1, 2),
        Namespace.new(),
        LoadSettings(duration=1, repeats=3, warmup=1, connections=2),
        skipped,
    )

    ports = {}
    for port, workload in calls:
        ports.setdefault(workload, port)
    assert ports["plain"] == ports["plain + cookie"] != ports["read"] == ports["increment"]
    order = [workload for _port, workload in calls]
    b0, b1, m0, m1 = "plain", "plain + cookie", "read", "increment"
    assert order == [
        *(b0, b1, m0, m1),  # warm-ups
        *(b0, b1, m0, m1),  # round 1
        *(b1, m0, m1),  # round 2, from the second trial; the increment fails ...
        b0,  # ... so the memory subject is dropped, and the round wraps around to the bare app
        *(b0, b1),  # round 3 starts at the dropped subject's read: only the bare app is left
    ]

    assert skipped == {"wsgi_session[memory] on gthread 1x2": "RuntimeError: injected: the server went away"}
    assert [(r.subject, r.workload) for r in results] == [("bare", "plain"), ("bare", "plain + cookie")]
    for result in results:
        assert len(result.runs) == 3
        assert all(rate > 0 for rate in result.runs)
        assert result.check == "n/a"
        assert result.requests > 0
        if "worker" in result.usage:  # /proc read over the measured runs: some CPU per request
            assert result.usage["worker"]["cpu_us"] > 0
        # One worker: the CPU inside the WSGI app is metered too, a part of the worker's.
        assert result.usage["app"]["cpu_us"] > 0
        if "worker" in result.usage:
            assert result.usage["app"]["cpu_us"] < result.usage["worker"]["cpu_us"]


def test_the_published_settings_say_the_runs_are_interleaved():
    text = LoadSettings(repeats=3).describe()
    assert "3 runs after a 1 s warm-up" in text
    assert "interleaved" in text
