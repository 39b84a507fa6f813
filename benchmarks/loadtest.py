"""Requests per second and latency under gunicorn, loaded by ``wrk`` on loopback.

For each server layout (:data:`SERVERS`: gthread 1 worker x 4 threads, and
2 sync workers) every subject that runs under gunicorn gets a gunicorn of its
own on ``127.0.0.1`` (:mod:`benchmarks.serve`), all started together. Each
subject x workload (:data:`~benchmarks.workloads.UNDER_LOAD`) is a
:class:`Trial`: a warm-up, then several short measured ``wrk`` runs (5 x 1 s
by default: the spread shows how much the shared machine disturbed them) with
``session.lua``: one visitor per connection, keeping its cookie, checking
every response's counter and tag (:mod:`benchmarks.wrk_runs`).

The runs are interleaved: each round runs every trial once, and each round
starts one trial further down the list. A shared machine's speed drifts over
the minutes a layout takes; measured one subject after another, two subjects
compared by a target would see different machines, while interleaved, each
subject's median is taken over the same stretch of time. The other
gunicorns wait idle meanwhile (their masters and workers wake about once a
second).

After each measured run every connection's session is verified against the
server: the script saw no violation (the counter went up by exactly one per
response, or stayed 0 for reads, and no session was replaced), every
response was a 200, and the counter the server holds now equals the number
of 200 responses (or one more, when a request was still in flight as wrk
stopped). A per-process store (wsgi_session's or Beaker's memory) cannot
pass this with 2 worker processes, nor can a relaxed mode whose staleness
is documented; those failures are shown as expected, not hidden.

Run it from the repository root::

    python benchmarks/loadtest.py                  # every subject, 5 x 1 s each
    python benchmarks/loadtest.py --repeats 2 --only redis
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shutil
import statistics
import subprocess
import sys
import typing as t
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import app_meter, cpu_usage
from benchmarks.cleanup import sweep
from benchmarks.gunicorn_process import Running, gunicorn
from benchmarks.settings import Namespace, machine
from benchmarks.subjects import Subject, Unavailable, all_subjects
from benchmarks.workloads import UNDER_LOAD, Workload
from benchmarks.wrk_runs import WRK_ERRORS, run_check, verify, wrk


@dataclasses.dataclass(frozen=True)
class Server:
    """A gunicorn layout."""

    name: str
    worker_class: str
    workers: int
    threads: int

    def args(self) -> list[str]:
        return ["-k", self.worker_class, "-w", str(self.workers), "--threads", str(self.threads)]


SERVERS = [Server("gthread 1x4", "gthread", 1, 4), Server("sync x2", "sync", 2, 1)]


@dataclasses.dataclass(frozen=True)
class LoadSettings:
    """How each subject is loaded: ``repeats`` wrk runs of ``duration``
    seconds after ``warmup`` seconds, with ``connections`` connections."""

    duration: int = 1
    repeats: int = 5
    warmup: int = 1
    connections: int = 8

    def describe(self) -> str:
        return (
            f"`wrk -t{self.connections} -c{self.connections} -d{self.duration}s --latency`, "
            f"{self.repeats} runs after a {self.warmup} s warm-up of the same workload, on 127.0.0.1, "
            "interleaved: each round runs every subject's workloads once, starting one further on; "
            "req/s is the median of the runs (min-max in brackets), p50/p99 the medians of the runs'."
        )


@dataclasses.dataclass
class LoadResult:
    """One subject x server x workload: several wrk runs on one server.

    :param runs: requests/s of each run.
    :param p50_ms: the median over the runs of each run's median latency.
    :param p99_ms: the median over the runs of each run's 99th percentile.
    :param check: ``"exact"``, ``"n/a"`` (a workload without a counter to
        check) or what failed, in which run: a session that came back wrong,
        or any error wrk counted (a refused connection, a timeout, a status
        other than 200). A failed run's rate is not a measurement.
    :param expected_failure: why a failed check is the documented behaviour
        (a per-process store or a relaxed mode with several workers), or ``""``.
    :param usage: per request, the CPU µs (``cpu_us``) and context switches
        (``switches``) of gunicorn's processes (``worker``), the store's
        server (``store``) and ``wrk`` (:mod:`benchmarks.cpu_usage`), empty
        where ``/proc`` cannot be read; with one worker also the CPU µs
        spent inside the WSGI app (``app``: :mod:`benchmarks.app_meter`).
    """

    subject: str
    server: str
    workload: str
    runs: list[float]
    p50_ms: float
    p99_ms: float
    requests: int
    errors: dict[str, int]
    check: str
    expected_failure: str = ""
    usage: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

    @property
    def requests_per_s(self) -> float:
        """The median of the runs."""
        return statistics.median(self.runs)

    @property
    def passed(self) -> bool:
        return self.check in ("exact", "n/a")

    def as_dict(self) -> dict[str, t.Any]:
        return {
            **dataclasses.asdict(self),
            "requests_per_s": self.requests_per_s,
            "requests_per_s_min": min(self.runs),
            "requests_per_s_max": max(self.runs),
            "passed": self.passed,
        }


# -- the subjects ---------------------------------------------------------------------------------


def expected_failure(subject: Subject, server: Server) -> str:
    """Why this subject cannot keep exact counters on this server, or ``""``."""
    if server.workers == 1:
        return ""
    if not subject.shared:
        return "per-process store, 2 processes"
    if subject.lag or "notify" in subject.name:
        return "relaxed mode: documented staleness across processes"
    return ""


def prepare(subject: Subject, namespace: Namespace) -> None:
    """Create the subject's tables in this process before workers race to."""
    from benchmarks.cases import base_environ, call

    target = subject.build(namespace)
    try:
        call(target.app, base_environ("/read"))
    finally:
        target.close()


def meter_for(subject: Subject, running: Running) -> cpu_usage.Meter | None:
    """A meter of gunicorn's processes, the store's server and wrk (``None``
    without ``/proc``)."""
    if not cpu_usage.available():
        return None
    groups: dict[str, t.Callable[[], list[int]]] = {"worker": lambda: cpu_usage.tree(running.pid)}
    server_process = cpu_usage.STORE_PROCESSES.get(subject.store or "")
    if server_process:
        groups["store"] = lambda: cpu_usage.named(server_process)
    return cpu_usage.Meter(groups)


# -- one subject x workload, measured run by run ---------------------------------------------


@dataclasses.dataclass(eq=False)
class Trial:
    """One subject x server x workload on a running gunicorn, measured one
    ``wrk`` run at a time (:meth:`run_once`) between other trials' runs;
    :meth:`result` sums them up. The meter counts the measured runs only.
    Trials compare by identity: two of the same workload are two trials."""

    subject: Subject
    server: Server
    workload: Workload
    running: Running
    meter: cpu_usage.Meter | None = None
    runs: list[float] = dataclasses.field(default_factory=list)
    p50s: list[float] = dataclasses.field(default_factory=list)
    p99s: list[float] = dataclasses.field(default_factory=list)
    requests: int = 0
    errors: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(("connect", "read", "write", "status", "timeout"), 0)
    )
    app_requests: int = 0
    app_cpu_ns: int = 0
    check: str = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.check = "exact" if self.workload.check else "n/a"

    @property
    def label(self) -> str:
        return f"{self.subject.name} on {self.server.name}"

    def warm_up(self, args: LoadSettings) -> None:
        """A run that is not measured, then the meter for the measured ones."""
        wrk(self.running.port, self.workload, args.warmup, args.connections)
        self.meter = meter_for(self.subject, self.running)

    def run_once(self, args: LoadSettings) -> None:
        """One measured run, verified; a failure stays in :attr:`check`."""
        port = self.running.port
        # With one worker, every request reaches the one metered app.
        before = app_meter.read(port) if self.server.workers == 1 else None
        with self.meter.measuring() if self.meter is not None else contextlib.nullcontext():
            summary, visitors = wrk(port, self.workload, args.duration, args.connections)
        if before is not None:
            after = app_meter.read(port)
            self.app_requests += after.requests - before.requests
            self.app_cpu_ns += after.cpu_ns - before.cpu_ns
        count, micros, *error_counts, p50, p99 = summary
        self.runs.append(count / (micros / 1e6))
        self.p50s.append(p50 / 1000)
        self.p99s.append(p99 / 1000)
        self.requests += count
        run_errors = dict(zip(self.errors, error_counts, strict=True))
        for name, value in run_errors.items():
            self.errors[name] += value
        verdict = verify(port, self.workload, visitors, self.subject.lag)
        self.check = run_check(self.check, verdict, run_errors, len(self.runs), args.repeats)

    def result(self) -> LoadResult:
        """The measured runs' rates, median latencies, check and CPU use."""
        check = self.check
        usage = self.meter.per_request(self.requests) if self.meter is not None else {}
        if self.app_requests:
            usage["app"] = {"cpu_us": self.app_cpu_ns / self.app_requests / 1000}
        return LoadResult(
            self.subject.name,
            self.server.name,
            self.workload.name,
            self.runs,
            statistics.median(self.p50s),
            statistics.median(self.p99s),
            self.requests,
            self.errors,
            check,
            # A documented reason explains wrong counters, never failed requests.
            "" if check.startswith(WRK_ERRORS) else expected_failure(self.subject, self.server),
            usage,
        )


def workloads_of(subject: Subject) -> list[Workload]:
    """The workloads ``subject`` is loaded with, in table order."""
    # The fixed cookie only for the plain WSGI baseline: Flask's own cookie
    # session would parse it and try to load it, which is not the server's cost.
    return [w for w in UNDER_LOAD if w.role == subject.role and (not w.cookie or subject.family == "wsgi")]


def rotated(trials: list[Trial], index: int) -> list[Trial]:
    """The order of round ``index`` (from 0): the trials from the one
    ``index`` places down the list, wrapping around, so that no trial always
    follows the same one (a background writer's flush, a server just busy)."""
    start = index % len(trials) if trials else 0
    return trials[start:] + trials[:start]


_FAILURES = (RuntimeError, OSError, subprocess.SubprocessError)


def run_layout(
    subjects: list[Subject], server: Server, namespace: Namespace, args: LoadSettings, skipped: dict[str, str]
) -> list[LoadResult]:
    """Start every subject's gunicorn on ``server``, warm each trial up, run
    the rounds; a subject that fails is dropped from the rest, with why in
    ``skipped``. Every subject's data is removed afterwards."""
    started: list[Subject] = []
    trials: list[Trial] = []
    failed: set[str] = set()

    def attempt(trial: Trial, step: t.Callable[[LoadSettings], None]) -> None:
        """``step`` (a warm-up or a run) of a trial whose subject has not
        failed yet; if it fails now, the subject is dropped from the rest."""
        if trial.subject.name in failed:
            return
        try:
            step(args)
        except _FAILURES as exc:
            skipped[trial.label] = f"{type(exc).__name__}: {exc}"
            failed.add(trial.subject.name)

    try:
        with contextlib.ExitStack() as servers:
            for subject in subjects:
                if subject.name in skipped:
                    continue
                started.append(subject)
                print(f"  starting {subject.name} on {server.name} ...", file=sys.stderr, flush=True)
                try:
                    prepare(subject, namespace)
                    running = servers.enter_context(gunicorn(subject, server.args(), namespace))
                except Unavailable as exc:
                    skipped[subject.name] = str(exc)
                    continue
                except _FAILURES as exc:
                    skipped[f"{subject.name} on {server.name}"] = f"{type(exc).__name__}: {exc}"
                    continue
                trials += [Trial(subject, server, w, running) for w in workloads_of(subject)]
            for trial in trials:
                attempt(trial, trial.warm_up)
            for index in range(args.repeats):
                print(
                    f"  round {index + 1} of {args.repeats} on {server.name} ...", file=sys.stderr, flush=True
                )
                for trial in rotated(trials, index):
                    attempt(trial, trial.run_once)
    finally:
        for subject in started:
            subject.cleanup(namespace)
    return [trial.result() for trial in trials if trial.subject.name not in failed]


def run(
    namespace: Namespace, args: LoadSettings, only: str | None = None, servers: list[Server] | None = None
) -> tuple[list[LoadResult], dict[str, str]]:
    """Every gunicorn subject on every server layout; the results and the
    subjects that could not run."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")
    subjects = [
        s for s in all_subjects() if s.gunicorn and (not only or s.role != "session" or only in s.name)
    ]
    results: list[LoadResult] = []
    skipped: dict[str, str] = {}
    for server in servers or SERVERS:
        results += run_layout(subjects, server, namespace, args, skipped)
    return results, skipped


def report(results: list[LoadResult], skipped: dict[str, str]) -> None:
    """Print requests/s, p50, p99, CPU per request (worker µs, its context
    switches, the store server's µs) and the counter check of every run."""
    width = max((len(r.subject) for r in results), default=10)
    heading = (
        f"{'server':<12} {'workload':<14} {'req/s':>8} {'min-max':<13} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'cpu µs':>7} {'cs':>5} {'store':>6} {'app':>6}  check"
    )
    print(f"{'subject':<{width}}  {heading}")
    print("-" * (width + 92))
    for r in results:
        note = f" (expected: {r.expected_failure})" if r.expected_failure and not r.passed else ""
        cpu, switches, store = cpu_usage.columns(r.usage)
        app = f"{r.usage['app']['cpu_us']:.1f}" if "app" in r.usage else ""
        print(
            f"{r.subject:<{width}}  {r.server:<12} {r.workload:<14} {r.requests_per_s:8.0f} "
            f"{min(r.runs):6.0f}-{max(r.runs):<6.0f} {r.p50_ms:7.2f} {r.p99_ms:7.2f} "
            f"{cpu:>7} {switches:>5} {store:>6} {app:>6}  {r.check}{note}"
        )
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The load-test options (shared with ``run_all.py``)."""
    parser.add_argument("--duration", type=int, default=1, help="seconds per measured wrk run (1)")
    parser.add_argument("--repeats", type=int, default=5, help="measured wrk runs per workload (5)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up before them (1)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections = threads (8)")


def settings(args: argparse.Namespace) -> LoadSettings:
    """The :class:`LoadSettings` of parsed arguments."""
    return LoadSettings(args.duration, args.repeats, args.warmup, args.connections)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Requests/s and latency under gunicorn, loaded by wrk.")
    add_arguments(parser)
    parser.add_argument("--only", help="run only session subjects whose name contains this")
    args = parser.parse_args(argv)
    info = machine()
    print(f"{info['python']} on {info['platform']}\nCPU: {info['cpu']}\nwsgi_session: {info['build']}\n")
    namespace = Namespace.new()
    try:
        results, skipped = run(namespace, settings(args), args.only)
    finally:
        sweep(namespace)
    report(results, skipped)


if __name__ == "__main__":
    main()
