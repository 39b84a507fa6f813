"""Requests per second and latency under gunicorn, loaded by ``wrk`` on loopback.

For each server layout (:data:`SERVERS`: gthread 1 worker x 4 threads, and
2 sync workers) every subject that runs under gunicorn gets a gunicorn of its
own on ``127.0.0.1`` (:mod:`benchmarks.serve`), all started together. Each
subject x workload (:data:`~benchmarks.workloads.UNDER_LOAD`) is a
:class:`Trial`: a warm-up, then several short measured ``wrk`` runs (5 x 1 s
by default: the spread shows how much the shared machine disturbed them) with
``session.lua``: one visitor per connection, keeping its cookie, checking
every response's counter and tag (:mod:`benchmarks.wrk_runs`).

The runs are interleaved: each round runs every trial once, the rounds
starting at places spread evenly over the list (:func:`benchmarks.trials.rotated`),
so a trial's place in its round moves. A shared machine's speed drifts over
the minutes a layout takes; measured one subject after another, two subjects
compared by a target would see different machines, while interleaved, each
subject's median is taken over the same stretch of time. The other
gunicorns wait idle meanwhile (their masters and workers wake about once a
second); a subject that fails is stopped at once and left out of the rest.
Each trial is warmed up once, before the first round: between its runs its
server idles while the others' run (a minute or so with every subject), which
the first requests of a run may feel (cold caches, idle pooled connections).

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
import shutil
import sys
import typing as t
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import cpu_usage
from benchmarks.cleanup import sweep
from benchmarks.gunicorn_process import gunicorn
from benchmarks.settings import Namespace, machine
from benchmarks.subjects import Subject, Unavailable, all_subjects
from benchmarks.trials import SERVERS, LoadResult, LoadSettings, Server, Trial, rotated
from benchmarks.workloads import UNDER_LOAD, Workload


def prepare(subject: Subject, namespace: Namespace) -> None:
    """Create the subject's tables in this process before workers race to."""
    from benchmarks.cases import base_environ, call

    target = subject.build(namespace)
    try:
        call(target.app, base_environ("/read"))
    finally:
        target.close()


def workloads_of(subject: Subject) -> list[Workload]:
    """The workloads ``subject`` is loaded with, in table order."""
    # The fixed cookie only for the plain WSGI baseline: Flask's own cookie
    # session would parse it and try to load it, which is not the server's cost.
    return [w for w in UNDER_LOAD if w.role == subject.role and (not w.cookie or subject.family == "wsgi")]


def run_layout(
    subjects: list[Subject], server: Server, namespace: Namespace, args: LoadSettings, skipped: dict[str, str]
) -> list[LoadResult]:
    """Start every subject's gunicorn on ``server``, warm each trial up, run
    the rounds. A subject whose start, warm-up or run fails, whatever the
    error, is stopped at once and left out of the rest, with why in
    ``skipped``; the others go on. Every subject's data is removed afterwards."""
    started: list[Subject] = []
    servers: dict[str, contextlib.ExitStack] = {}  # each running subject's gunicorn, by name
    trials: list[Trial] = []

    def fail(subject: Subject, exc: Exception) -> None:
        skipped[f"{subject.name} on {server.name}"] = f"{type(exc).__name__}: {exc}"
        stack = servers.pop(subject.name, None)
        if stack is not None:
            stack.close()  # a failing server must not disturb the rounds of the others

    def attempt(trial: Trial, step: t.Callable[[LoadSettings], None]) -> None:
        if trial.subject.name in servers:
            try:
                step(args)
            except Exception as exc:  # wrk, the checks or the meter: the subject is dropped
                fail(trial.subject, exc)

    try:
        for subject in subjects:
            if subject.name in skipped:
                continue
            started.append(subject)
            print(f"  starting {subject.name} on {server.name} ...", file=sys.stderr, flush=True)
            stack = contextlib.ExitStack()
            try:
                prepare(subject, namespace)
                running = stack.enter_context(
                    gunicorn(subject, server.args(), namespace, server.workers == 1)
                )
            except Unavailable as exc:
                skipped[subject.name] = str(exc)
                continue
            except Exception as exc:  # whatever it was, the reason is kept and the rest go on
                stack.close()
                fail(subject, exc)
                continue
            servers[subject.name] = stack
            trials += [Trial(subject, server, w, running) for w in workloads_of(subject)]
        for trial in trials:
            attempt(trial, trial.warm_up)
        for index in range(args.repeats):
            print(f"  round {index + 1} of {args.repeats} on {server.name} ...", file=sys.stderr, flush=True)
            for trial in rotated(trials, index, args.repeats):
                attempt(trial, trial.run_once)
        return [trial.result() for trial in trials if trial.subject.name in servers]
    finally:
        for stack in servers.values():
            stack.close()
        for subject in started:
            try:
                subject.cleanup(namespace)
            except Exception as exc:  # the next subjects' data must go too
                print(f"  could not clean up {subject.name}: {exc}", file=sys.stderr, flush=True)


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


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The load-test options (shared with ``run_all.py``)."""
    parser.add_argument("--duration", type=int, default=1, help="seconds per measured wrk run (1)")
    parser.add_argument("--repeats", type=_positive, default=5, help="measured wrk runs per workload (5)")
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
