"""Requests per second and latency under gunicorn, loaded by ``wrk`` on loopback.

For each server layout (:data:`SERVERS`: gthread 1 worker x 4 threads, and
2 sync workers) and each subject that runs under gunicorn, one gunicorn is
started on ``127.0.0.1`` (:mod:`benchmarks.serve`), and for each workload
(:data:`~benchmarks.workloads.UNDER_LOAD`) ``wrk`` runs a warm-up and then
several short measured runs (5 x 1 s by default: the spread shows how much
the shared machine disturbed them), with ``session.lua``: one visitor per
connection, keeping its cookie, checking every response's counter and tag.

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
import time
import typing as t
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import cpu_usage
from benchmarks.apps import parse_body
from benchmarks.cleanup import sweep
from benchmarks.gunicorn_process import Running, get, gunicorn
from benchmarks.settings import BENCHMARKS, Namespace, machine
from benchmarks.subjects import Subject, Unavailable, all_subjects
from benchmarks.workloads import UNDER_LOAD, Workload

LUA = BENCHMARKS / "session.lua"


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
            f"{self.repeats} runs after a {self.warmup} s warm-up of the same workload, on 127.0.0.1; "
            "req/s is the median of the runs (min-max in brackets), p50/p99 the medians of the runs'."
        )


@dataclasses.dataclass
class Visitor:
    """What ``session.lua`` recorded for one connection."""

    id: int
    sent: int
    ok: int
    other: int
    violations: int
    last: int
    tag: str
    cookie: str
    detail: str


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
        server (``store``) and ``wrk`` (:mod:`benchmarks.cpu_usage`); empty
        where ``/proc`` cannot be read.
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


# -- the load -----------------------------------------------------------------------------------


def wrk(port: int, workload: Workload, duration: int, connections: int) -> tuple[list[int], list[Visitor]]:
    """One wrk run: the summary numbers (requests, duration µs, connect,
    read, write, status and timeout errors, p50 µs, p99 µs) and each visitor."""
    command = ["wrk", "-t", str(connections), "-c", str(connections), "-d", f"{duration}s", "--latency"]
    command += ["--timeout", "5s", "-s", str(LUA), f"http://127.0.0.1:{port}{workload.path}", "--"]
    command.append(workload.check or "none")
    if workload.cookie:
        command.append(workload.cookie)
    output = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    summary: list[int] = []
    visitors: list[Visitor] = []
    for line in output.splitlines():
        if line.startswith("BENCH_SUMMARY "):
            summary = [int(float(value)) for value in line.split()[1:]]
        elif line.startswith("BENCH_CONN\t"):
            fields = line.split("\t")[1:]
            numbers = [int(value) for value in fields[:6]]
            detail = fields[8] if len(fields) > 8 else ""
            visitors.append(Visitor(*numbers, tag=fields[6], cookie=fields[7], detail=detail))
    if len(summary) != 9 or len(visitors) != connections:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    return summary, visitors


def verify(port: int, workload: Workload, visitors: list[Visitor], lag: float) -> str:
    """``"exact"`` if every visitor's session is right, else what is wrong."""
    if not workload.check:
        return "n/a"
    if lag:
        time.sleep(lag)  # background writes reach the store within the lag
    problems = []
    for visitor in visitors:
        where = f"connection {visitor.id}"
        if visitor.violations:
            problems.append(f"{where}: {visitor.violations} bad responses, first: {visitor.detail}")
        if visitor.other:
            problems.append(f"{where}: {visitor.other} responses were not 200")
        if not visitor.cookie:
            problems.append(f"{where}: no session cookie")
            continue
        status, headers, body = get(port, "/read", visitor.cookie)
        replaced = headers.get("set-cookie", visitor.cookie).split(";", 1)[0].strip() != visitor.cookie
        try:
            final, tag = parse_body(body)
        except ValueError:
            final, tag = -1, ""
        if status != 200 or replaced or tag != visitor.tag:
            problems.append(f"{where}: the server lost the session ({status}, {body[:40]!r})")
            continue
        in_flight = visitor.sent - visitor.ok - visitor.other  # sent as wrk stopped, never answered
        if workload.check == "read" and final != 0:
            problems.append(f"{where}: the server holds n={final}, expected 0")
        elif workload.check == "inc" and not visitor.ok <= final <= visitor.ok + in_flight:
            problems.append(f"{where}: the server holds n={final} after {visitor.ok} increments answered")
    if not problems:
        return "exact"
    more = f" (+{len(problems) - 2} more)" if len(problems) > 2 else ""
    return "FAIL: " + "; ".join(problems[:2]) + more


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


WRK_ERRORS = "wrk counted errors"  #: how a check failed by requests wrk counted as errors begins


def run_check(check: str, verdict: str, errors: dict[str, int], run: int, runs: int) -> str:
    """The check of a load test after its run number ``run``: the first
    failure stays; else a wrong session (``verdict``) or any error wrk
    counted fails it. A failed request is cheap, so a run with errors would
    report a rate that was never served."""
    if check not in ("exact", "n/a"):
        return check
    if verdict not in ("exact", "n/a"):
        return f"{verdict} (run {run} of {runs})"
    failed = {name: count for name, count in errors.items() if count}
    if failed:
        return f"{WRK_ERRORS} {failed} (run {run} of {runs})"
    return check


def measure(
    running: Running, workload: Workload, subject: Subject, server: Server, args: LoadSettings
) -> LoadResult:
    """A warm-up, then ``args.repeats`` measured wrk runs, each verified;
    what the processes used is metered around the measured runs only."""
    port = running.port
    wrk(port, workload, args.warmup, args.connections)
    meter = meter_for(subject, running)
    runs, p50s, p99s, requests = [], [], [], 0
    errors = dict.fromkeys(("connect", "read", "write", "status", "timeout"), 0)
    check = "n/a" if not workload.check else "exact"
    for index in range(args.repeats):
        with meter.measuring() if meter is not None else contextlib.nullcontext():
            summary, visitors = wrk(port, workload, args.duration, args.connections)
        count, micros, *error_counts, p50, p99 = summary
        runs.append(count / (micros / 1e6))
        p50s.append(p50 / 1000)
        p99s.append(p99 / 1000)
        requests += count
        run_errors = dict(zip(errors, error_counts, strict=True))
        for name, value in run_errors.items():
            errors[name] += value
        verdict = verify(port, workload, visitors, subject.lag)
        check = run_check(check, verdict, run_errors, index + 1, args.repeats)
    return LoadResult(
        subject.name,
        server.name,
        workload.name,
        runs,
        statistics.median(p50s),
        statistics.median(p99s),
        requests,
        errors,
        check,
        # A documented reason explains wrong counters, never failed requests.
        "" if check.startswith(WRK_ERRORS) else expected_failure(subject, server),
        meter.per_request(requests) if meter is not None else {},
    )


def run_subject(
    subject: Subject, server: Server, namespace: Namespace, args: LoadSettings
) -> list[LoadResult]:
    """Every workload of ``subject`` on one gunicorn."""
    # The fixed cookie only for the plain WSGI baseline: Flask's own cookie
    # session would parse it and try to load it, which is not the server's cost.
    workloads = [
        w for w in UNDER_LOAD if w.role == subject.role and (not w.cookie or subject.family == "wsgi")
    ]
    with gunicorn(subject, server.args(), namespace) as running:
        return [measure(running, workload, subject, server, args) for workload in workloads]


def run(
    namespace: Namespace, args: LoadSettings, only: str | None = None, servers: list[Server] | None = None
) -> tuple[list[LoadResult], dict[str, str]]:
    """Every gunicorn subject on every server layout; the results and the
    subjects that could not run. Each subject's data is removed after it."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")
    subjects = [
        s for s in all_subjects() if s.gunicorn and (not only or s.role != "session" or only in s.name)
    ]
    results: list[LoadResult] = []
    skipped: dict[str, str] = {}
    for server in servers or SERVERS:
        for subject in subjects:
            if subject.name in skipped:
                continue
            label = f"{subject.name} on {server.name}"
            print(f"  {label} ...", file=sys.stderr, flush=True)
            try:
                prepare(subject, namespace)
                results += run_subject(subject, server, namespace, args)
            except Unavailable as exc:
                skipped[subject.name] = str(exc)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                skipped[label] = f"{type(exc).__name__}: {exc}"
            finally:
                subject.cleanup(namespace)
    return results, skipped


def report(results: list[LoadResult], skipped: dict[str, str]) -> None:
    """Print requests/s, p50, p99, CPU per request (worker µs, its context
    switches, the store server's µs) and the counter check of every run."""
    width = max((len(r.subject) for r in results), default=10)
    heading = (
        f"{'server':<12} {'workload':<14} {'req/s':>8} {'min-max':<13} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'cpu µs':>7} {'cs':>5} {'store':>6}  check"
    )
    print(f"{'subject':<{width}}  {heading}")
    print("-" * (width + 85))
    for r in results:
        note = f" (expected: {r.expected_failure})" if r.expected_failure and not r.passed else ""
        cpu, switches, store = cpu_usage.columns(r.usage)
        print(
            f"{r.subject:<{width}}  {r.server:<12} {r.workload:<14} {r.requests_per_s:8.0f} "
            f"{min(r.runs):6.0f}-{max(r.runs):<6.0f} {r.p50_ms:7.2f} {r.p99_ms:7.2f} "
            f"{cpu:>7} {switches:>5} {store:>6}  {r.check}{note}"
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
