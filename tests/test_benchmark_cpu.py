"""The load test's CPU accounting (benchmarks/cpu_usage.py), on real processes.

Each test makes processes do a known amount of work (burn CPU, sleep so many
times) and checks the meter charges it to the right group. The bounds are
loose on purpose: CPU time is counted in 10 ms ticks and a shared machine may
give a busy loop less than it asked for, but never charges it to someone else.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import cpu_usage
from benchmarks.cpu_usage import Meter, Usage, process_usage

pytestmark = pytest.mark.skipif(not cpu_usage.available(), reason="no /proc to read (not Linux)")

_ROOT = Path(__file__).resolve().parent.parent
_BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"


def burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


_CHARGED = """
import os, threading, time
from benchmarks.cpu_usage import process_usage
from tests.test_benchmark_cpu import burn
before = process_usage(os.getpid())
burn(0.2)
slept, release = threading.Event(), threading.Event()

def sleep_often():
    for _ in range(40):
        time.sleep(0.001)
    slept.set()
    release.wait()  # alive while read: an ended thread takes its counts with it

sleeper = threading.Thread(target=sleep_often)
sleeper.start()
slept.wait()
after = process_usage(os.getpid())
release.set()
sleeper.join()
used = after - before
print(used.cpu, used.switches)
"""


def test_a_process_is_charged_its_cpu_and_every_threads_context_switches():
    # In a fresh process: threads that earlier tests left behind in this one
    # may end between the two readings and take their counts with them.
    output = subprocess.run(
        [sys.executable, "-c", _CHARGED], capture_output=True, text=True, check=True, timeout=60, cwd=_ROOT
    ).stdout.split()
    cpu, switches = float(output[0]), int(output[1])
    assert cpu >= 0.15
    # Each sleep gives up the CPU; they happen in a thread, not the main one.
    assert switches >= 40


def test_tree_and_named_find_a_child_process():
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert child.pid in cpu_usage.tree(os.getpid())
        assert child.pid in cpu_usage.named("sleep")
        assert child.pid not in cpu_usage.named("not-a-process-name")
    finally:
        child.kill()
        child.wait()
    assert process_usage(child.pid) is None  # gone and reaped: nothing to read


def test_the_meter_charges_each_group_and_counts_waited_for_children_as_wrk():
    # A "server" that burns 0.3 s and then stays alive (an exited process
    # takes its time with it), and a "load generator" run to completion.
    server = subprocess.Popen([sys.executable, "-c", _BURN.format(seconds=0.3) + "time.sleep(30)"])
    try:
        meter = Meter({"server": lambda: [server.pid]})
        with meter.measuring():
            subprocess.run([sys.executable, "-c", _BURN.format(seconds=0.3)], check=True)
            time.sleep(0.4)
        assert meter.used["server"].cpu >= 0.2
        assert meter.used["wrk"].cpu >= 0.2
        with meter.measuring():  # a second run adds to the first
            subprocess.run([sys.executable, "-c", _BURN.format(seconds=0.2)], check=True)
        assert meter.used["wrk"].cpu >= 0.35
        per_request = meter.per_request(100)
        assert per_request["wrk"]["cpu_us"] == pytest.approx(meter.used["wrk"].cpu / 100 * 1e6)
        assert per_request["server"]["switches"] == meter.used["server"].switches / 100
        assert meter.per_request(0) == {}
    finally:
        server.kill()
        server.wait()


def test_a_process_started_during_a_run_is_charged_from_zero():
    holder: list[subprocess.Popen[bytes]] = []
    meter = Meter({"late": lambda: [p.pid for p in holder]})
    try:
        with meter.measuring():
            script = _BURN.format(seconds=0.2) + "time.sleep(30)"
            holder.append(subprocess.Popen([sys.executable, "-c", script]))
            time.sleep(0.5)
        assert meter.used["late"].cpu >= 0.1
    finally:
        for process in holder:
            process.kill()
            process.wait()


def test_columns_show_the_worker_and_the_store_or_nothing():
    usage = {
        "worker": {"cpu_us": 694.4, "switches": 32.66},
        "store": {"cpu_us": 63.6, "switches": 2.0},
        "wrk": {"cpu_us": 70.0, "switches": 1.0},
    }
    assert cpu_usage.columns(usage) == ("694", "32.7", "64")
    assert cpu_usage.columns({"worker": usage["worker"]}) == ("694", "32.7", "")
    assert cpu_usage.columns({}) == ("", "", "")  # results written before this was measured


def test_usage_arithmetic():
    assert Usage(1.0, 0.5, 3) + Usage(0.5, 0.25, 1) == Usage(1.5, 0.75, 4)
    assert (Usage(1.0, 0.5, 3) - Usage(0.5, 0.25, 1)).cpu == 0.75


def test_a_gunicorn_worker_is_metered_through_its_master():
    from benchmarks.gunicorn_process import get, gunicorn
    from benchmarks.settings import Namespace
    from benchmarks.subjects import by_slug
    from benchmarks.trials import meter_for

    subject = by_slug("bare")
    with gunicorn(subject, ["-k", "gthread", "-w", "1", "--threads", "2"], Namespace.new()) as running:
        processes = cpu_usage.tree(running.pid)
        assert len(processes) >= 2  # the master and its worker
        meter = meter_for(subject, running)
        assert meter is not None
        with meter.measuring():
            for _ in range(200):
                assert get(running.port, "/plain")[0] == 200
        per_request = meter.per_request(200)
    assert "store" not in per_request  # the bare app has no store server
    assert per_request["worker"]["cpu_us"] > 0
    assert per_request["worker"]["switches"] > 0  # each request waits for its socket


def _run(
    subject: str, rate: float, worker_us: float | None, workload: str = "increment"
) -> dict[str, object]:
    usage = {} if worker_us is None else {"worker": {"cpu_us": worker_us, "switches": 30.0}}
    return {
        "subject": subject,
        "server": "gthread 1x4",
        "workload": workload,
        "requests_per_s": rate,
        "passed": True,
        "usage": usage,
        "role": "rtt" if workload == "2 round trips" else "",  # for the test's own filters
    }


_REDIS_VS_BEAKER = "gthread 1x4: Redis increment vs Beaker Redis"
#: The references as the in-process part records them: which is the unit.
_REFERENCES = [
    {"subject": "redis-py GET", "workload": "round trip", "role": "rtt", "store": "redis", "unit": True},
    {"subject": "socket GET", "workload": "round trip", "role": "rtt", "store": "redis", "unit": False},
]


def test_a_gunicorn_target_quotes_both_workers_cpu_per_request():
    from benchmarks.targets import _gunicorn

    runs = [_run("wsgi_session[redis]", 1418, 694.4), _run("beaker[redis]", 1007, 1114.5)]
    (check,) = [c for c in _gunicorn({"gunicorn": runs}) if c.target == _REDIS_VS_BEAKER]
    assert check.measured == "1.41x (1,418 vs 1,007 req/s); worker CPU 694 vs 1,114 µs/req"
    assert check.met is False
    # Results written before CPU was metered: the rates alone.
    runs = [_run("wsgi_session[redis]", 1418, None), _run("beaker[redis]", 1007, 1114.5)]
    (check,) = [c for c in _gunicorn({"gunicorn": runs}) if c.target == _REDIS_VS_BEAKER]
    assert check.measured == "1.41x (1,418 vs 1,007 req/s)"


def test_a_strict_increment_is_compared_with_two_bare_round_trips():
    from benchmarks.targets import _gunicorn

    flask_target = "gthread 1x4: inside Flask: Redis increment vs Flask-Session"
    runs = [
        _run("wsgi_session[redis]", 1330, 784.0),
        _run("beaker[redis]", 850, 1300.0),
        _run("redis-py GET", 1274, 853.0, "2 round trips"),
        _run("socket GET", 2040, 548.0, "2 round trips"),
        _run("bare", 2698, 398.0, "plain"),
        _run("flask", 1558, 676.0, "plain"),
        _run("flask + wsgi_session[redis]", 1029, 997.0),
        _run("flask-session[redis]", 700, 1500.0),
    ]
    checks = {c.target: c for c in _gunicorn({"gunicorn": runs, "inprocess": _REFERENCES})}
    # Measured: the bare app making the two round trips and nothing else,
    # with each client that ran (our store's path did not, here).
    assert checks[_REDIS_VS_BEAKER].measured == (
        "1.56x (1,330 vs 850 req/s); worker CPU 784 vs 1,300 µs/req; "
        "the bare app making 2 calls per request and nothing else: "
        "redis-py GET 1,274 req/s (1.50x), socket GET 2,040 req/s (2.40x)"
    )
    # Inside Flask, estimated: Flask alone's CPU plus what the two calls add
    # to the bare app's (853 - 398 = 455; 548 - 398 = 150), against
    # Flask-Session's: 1500 / 1131 and 1500 / 826.
    assert checks[flask_target].measured.endswith(
        "; Flask alone plus 2 calls, estimated from worker CPU (µs/req, against 1,500): "
        "redis-py GET 1.33x (676 + 455), socket GET 1.82x (676 + 150)"
    )
    # Calls that seem to cost the worker less than nothing estimate nothing.
    cheap = {"worker": {"cpu_us": 300.0}}
    cheaper = [{**r, "usage": cheap} if r["role"] == "rtt" else r for r in runs]
    checks = {c.target: c for c in _gunicorn({"gunicorn": cheaper, "inprocess": _REFERENCES})}
    assert "estimated" not in checks[flask_target].measured
    # A reference run that failed (wrk counted errors) is no reference either.
    failed = [{**r, "passed": False} if r["role"] == "rtt" else r for r in runs]
    checks = {c.target: c for c in _gunicorn({"gunicorn": failed, "inprocess": _REFERENCES})}
    assert checks[_REDIS_VS_BEAKER].measured == "1.56x (1,330 vs 850 req/s); worker CPU 784 vs 1,300 µs/req"
    assert "GET" not in checks[flask_target].measured
    # Results that never recorded the other references quote the unit alone.
    checks = {c.target: c for c in _gunicorn({"gunicorn": runs})}
    assert checks[_REDIS_VS_BEAKER].measured.endswith("nothing else: redis-py GET 1,274 req/s (1.50x)")
    # Without the reference runs (older results) the note is left out.
    runs = [r for r in runs if r["role"] != "rtt"]
    checks = {c.target: c for c in _gunicorn({"gunicorn": runs, "inprocess": _REFERENCES})}
    assert checks[_REDIS_VS_BEAKER].measured == "1.56x (1,330 vs 850 req/s); worker CPU 784 vs 1,300 µs/req"


def test_a_run_in_which_wrk_counted_errors_fails_even_without_a_counter_to_check():
    from benchmarks.wrk_runs import run_check

    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    assert run_check("n/a", "n/a", errors, 1, 3) == "n/a"
    assert run_check("exact", "exact", errors, 1, 3) == "exact"
    flawed = {**errors, "status": 1370}
    assert run_check("n/a", "n/a", flawed, 2, 3) == "wrk counted errors {'status': 1370} (run 2 of 3)"
    assert run_check("exact", "n=3 expected 4", errors, 3, 3) == "n=3 expected 4 (run 3 of 3)"
    # The first failure is the one reported.
    assert run_check("lost (run 1 of 3)", "exact", flawed, 2, 3) == "lost (run 1 of 3)"


def test_gunicorn_targets_and_table_quote_the_cpu_inside_the_app_where_metered():
    from benchmarks.report import gunicorn_section
    from benchmarks.targets import _gunicorn

    runs = [_run("wsgi_session[redis]", 1418, 694.4), _run("beaker[redis]", 1007, 1114.5)]
    runs[0]["usage"]["app"] = {"cpu_us": 120.25}
    runs[1]["usage"]["app"] = {"cpu_us": 460.0}
    (check,) = [c for c in _gunicorn({"gunicorn": runs}) if c.target == _REDIS_VS_BEAKER]
    assert check.measured == (
        "1.41x (1,418 vs 1,007 req/s); worker CPU 694 vs 1,114 µs/req; inside the app 120.2 vs 460.0 µs/req"
    )
    # The memory-store read against the bare app says it too.
    reads = [
        _run("wsgi_session[memory]", 2700, 400.0, "read"),
        _run("bare", 3000, 350.0, "plain"),
    ]
    reads[0]["usage"]["app"] = {"cpu_us": 24.0}
    reads[1]["usage"]["app"] = {"cpu_us": 10.5}
    (read,) = [c for c in _gunicorn({"gunicorn": reads}) if "memory-store read" in c.target]
    assert read.measured == "90% (2,700 vs 3,000 req/s); inside the app 24.0 vs 10.5 µs/req"
    # Only one of the two metered (a server with 2 workers is not): no note.
    del runs[1]["usage"]["app"]
    (check,) = [c for c in _gunicorn({"gunicorn": runs}) if c.target == _REDIS_VS_BEAKER]
    assert "inside the app" not in check.measured

    table_rows = []
    for run in reads:
        row = dict(run, p50_ms=1.0, p99_ms=2.0, requests_per_s_min=1, requests_per_s_max=2)
        table_rows.append(dict(row, errors={}, check="n/a", expected_failure=""))
    table = gunicorn_section({"gunicorn": table_rows})
    assert "| app CPU µs/req |" in table
    assert "| 24.0 |" in table
    assert "| 10.5 |" in table
