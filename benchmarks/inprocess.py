"""In-process cost of a session middleware, in microseconds per request.

No HTTP server and no sockets between client and app: each *case* is a
subject's WSGI callable called in a tight loop with a copy of a prepared
environ, a no-op ``start_response``, and the body iterated and closed as a
server would. What is left is the cost of the session library (plus its
store's round trips), which is what this script compares, side by side in
one process:

* the baselines: ``bare`` (a plain WSGI app) and ``flask`` (the Flask app,
  no session use);
* wsgi_session with each store (memory, Redis, PostgreSQL, SQLite) in each
  mode the installed version offers, Beaker, Flask-Session, Flask's cookie
  session (:mod:`benchmarks.subjects`, :mod:`benchmarks.peers`);
* the RTT references: one redis-py ``GET`` and one psycopg2 ``SELECT 1`` per
  request, measured in the same run, so store-backed results read as
  "round trips per request".

Store round trips are counted for real (:mod:`benchmarks.counting`): Redis
sends and SQL statements during the timed runs; the queries PostgreSQL
actually receives (psycopg2's own ``BEGIN``, ``ROLLBACK`` and ``SET``
included) in a separate pass through a counting proxy.

Runs are interleaved (run 1 of every case, then run 2...) so that a slow
moment of the shared machine hits every case; each run lasts about
``--run-time`` seconds (the number of requests is calibrated per case).

Run it from the repository root::

    python benchmarks/inprocess.py                       # everything
    python benchmarks/inprocess.py --only redis --runs 3 # bare + matching cases
    python benchmarks/inprocess.py --profile --only "wsgi_session[redis] / increment"

Extending it: add a :class:`~benchmarks.subjects.Subject` to
:func:`~benchmarks.subjects.all_subjects` or a
:class:`~benchmarks.workloads.Workload` to :data:`~benchmarks.workloads.IN_PROCESS`;
:func:`benchmarks.cases.build_cases` pairs them by role.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import pstats
import statistics
import sys
import typing as t
from pathlib import Path

# Run from a checkout without installing: make ``import benchmarks`` work.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cases import Case, build_cases, calibrate, check, close_cases, run_batch
from benchmarks.cleanup import sweep
from benchmarks.counting import PostgresQueryCounter
from benchmarks.settings import Namespace, machine

if t.TYPE_CHECKING:
    from benchmarks.subjects import Subject
    from benchmarks.workloads import Workload


@dataclasses.dataclass
class Measurement:
    """The result of one case.

    :param runs: µs/request of each run.
    :param round_trips: store round trips per request, by counter
        (``redis`` sends, ``sql_statements``) over all runs, and for
        PostgreSQL ``sql_round_trips``, the queries the server received (see
        :func:`count_postgres_round_trips`).
    :param set_cookie: the steady-state response carries ``Set-Cookie``.
    :param problem: what the check after measuring found wrong (the
        numbers are then suspect), or ``""``.
    """

    subject: Subject
    workload: Workload
    runs: list[float]
    requests: int
    round_trips: dict[str, float]
    set_cookie: bool
    problem: str = ""

    @property
    def label(self) -> str:
        return f"{self.subject.name} / {self.workload.name}"

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    def as_dict(self) -> dict[str, t.Any]:
        return {
            "subject": self.subject.name,
            "workload": self.workload.name,
            "median_us": self.median,
            "min_us": min(self.runs),
            "max_us": max(self.runs),
            "runs_us": self.runs,
            "requests_per_run": self.requests,
            "round_trips": self.round_trips,
            "set_cookie": self.set_cookie,
            "problem": self.problem,
        }


# -- measuring ---------------------------------------------------------------------------


def measure(cases: list[Case], runs: int, run_time: float, requests: int | None = None) -> list[Measurement]:
    """Each case's µs/request per run and its round trips per request.
    Runs are interleaved so drift in machine speed hits all cases; each case
    is checked again afterwards (its session must have survived intact).

    Each run starts in a steady state: one untimed request, then the
    subject's pending background writes are awaited. Interleaved, a case's
    runs are seconds apart, so its session has been idle longer than
    wsgi_session's ``touch_interval`` (10 s) and the first request queues an
    expiry refresh; while that write is pending (up to the 50 ms flush
    interval) reads are served from the cache without the version check. In
    a steady stream of requests that window is one in ``touch_interval``;
    timed, it would cover most of a short run and hide the round trips.
    """
    for case in cases:
        case.requests = requests or calibrate(case, run_time)
    times: dict[int, list[float]] = {id(case): [] for case in cases}
    trips: dict[int, dict[str, int]] = {id(case): {} for case in cases}
    for _ in range(runs):
        for case in cases:
            if case.workload.creates:
                case.target.clear()
            else:
                run_batch(case.target.app, case.environ, 1)  # may queue an expiry refresh
            case.target.settle()
            # Every subject lives in this one process: without the freeze, the
            # objects of all of them would be scanned by the collections that
            # one case's allocations trigger (a tax on whichever allocates
            # most, growing with the number of subjects). Frozen, a run pays
            # for the garbage collection of what it allocates itself.
            gc.collect()
            gc.freeze()
            before = case.target.counters.snapshot()
            try:
                elapsed = run_batch(case.target.app, case.environ, case.requests)
            finally:
                gc.unfreeze()
            after = case.target.counters.snapshot()
            times[id(case)].append(elapsed / case.requests / 1000)
            for name, value in after.items():
                trips[id(case)][name] = trips[id(case)].get(name, 0) + value - before[name]
    results = []
    for case in cases:
        try:
            check(case)
            problem = ""
        except RuntimeError as exc:
            problem = str(exc)
        per_request = {name: total / (runs * case.requests) for name, total in trips[id(case)].items()}
        results.append(
            Measurement(
                case.subject,
                case.workload,
                times[id(case)],
                case.requests,
                per_request,
                case.set_cookie,
                problem,
            )
        )
    return results


def count_postgres_round_trips(results: list[Measurement], namespace: Namespace, requests: int = 30) -> None:
    """Add ``round_trips["sql_round_trips"]`` to every PostgreSQL measurement:
    the queries that reached the server per request, counted on the wire by a
    :class:`~benchmarks.counting.PostgresQueryCounter` in a separate pass
    (the proxy's extra hop would distort the timed runs)."""
    measured = {(m.subject.name, m.workload.name): m for m in results if m.subject.store == "postgresql"}
    if not measured:
        return
    subjects = list({m.subject.slug: m.subject for m in measured.values()}.values())
    workloads = list({m.workload.name: m.workload for m in measured.values()}.values())
    with PostgresQueryCounter.running(namespace.postgres_url) as proxy:
        proxied = namespace.via(proxy.url_for(namespace.postgres_url)).child("count")
        # One subject at a time: the proxy counts every query it forwards, so
        # no other subject's background threads (flushes, bloom rebuilds) may
        # be alive while a case is counted.
        for subject in subjects:
            cases, _ = build_cases(proxied, [subject], workloads)
            try:
                for case in cases:
                    if case.workload.creates:
                        case.target.clear()
                    else:
                        run_batch(case.target.app, case.environ, 3)
                    case.target.settle()
                    before = proxy.queries.value
                    run_batch(case.target.app, case.environ, requests)
                    case.target.settle()  # background writes belong to these requests
                    found = measured.get((case.subject.name, case.workload.name))
                    if found is not None:
                        found.round_trips["sql_round_trips"] = (proxy.queries.value - before) / requests
            finally:
                close_cases(cases)


def profile(cases: list[Case], run_time: float, top: int) -> None:
    """cProfile each session case for one run and print the top functions."""
    for case in cases:
        if case.subject.role != "session":
            continue
        requests = calibrate(case, run_time)
        profiler = cProfile.Profile()
        profiler.runcall(run_batch, case.target.app, case.environ, requests)
        print(f"\n=== {case.label}: {requests} requests (times include cProfile overhead) ===")
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.strip_dirs().sort_stats("tottime").print_stats(top)


# -- reporting -------------------------------------------------------------------------


def rtt_units(results: list[Measurement]) -> dict[str, float]:
    """The median µs of one round trip, by store (``redis``, ``postgresql``)."""
    return {m.subject.store: m.median for m in results if m.subject.role == "rtt" and m.subject.unit}


def baselines(results: list[Measurement]) -> dict[str, float]:
    """The median µs of each family's baseline (``wsgi``: bare, ``flask``: Flask alone)."""
    return {m.subject.family: m.median for m in results if m.subject.role == "baseline"}


def store_round_trips(measurement: Measurement) -> float | None:
    """Round trips per request to the subject's store (``None`` without one)."""
    store = measurement.subject.store
    if store == "redis":
        return measurement.round_trips.get("redis", 0.0)
    if store == "postgresql":
        return measurement.round_trips.get("sql_round_trips")
    if store == "sqlite":
        return measurement.round_trips.get("sql_statements", 0.0)
    return None


def as_rows(results: list[Measurement]) -> list[dict[str, t.Any]]:
    """Each measurement as a dict for ``results.json``, with what it means:
    the time added over its family's baseline, its store round trips per
    request and its time in RTTs of its store."""
    base = baselines(results)
    units = rtt_units(results)
    rows = []
    for m in results:
        unit = units.get(m.subject.store)
        row = m.as_dict()
        row.update(
            role=m.subject.role,
            family=m.subject.family,
            store=m.subject.store,
            ours=m.subject.ours,
            unit=m.subject.role == "rtt" and m.subject.unit,
            added_us=(
                m.median - base[m.subject.family]
                if m.subject.role == "session" and m.subject.family in base
                else None
            ),
            store_round_trips=store_round_trips(m),
            in_rtts=m.median / unit if unit and m.subject.role == "session" else None,
        )
        rows.append(row)
    return rows


def report(results: list[Measurement], skipped: dict[str, str]) -> None:
    """Print median, min and max µs/request, the cost over the family's
    baseline, the store round trips counted and the time in RTTs."""
    base = baselines(results)
    units = rtt_units(results)
    width = max(len(m.label) for m in results)
    columns = ("median", "min", "max", "added")
    print(f"{'case':<{width}}  " + "  ".join(f"{c:>8}" for c in columns) + f"  {'store':>6}  {'in':>5}")
    print(f"{'':<{width}}  " + "  ".join(f"{'µs/req':>8}" for _ in columns) + f"  {'RT/req':>6}  {'RTTs':>5}")
    print("-" * (width + 56))
    for m in results:
        added = "" if m.subject.role != "session" else f"{m.median - base.get(m.subject.family, 0):+8.2f}"
        trips = store_round_trips(m)
        unit = units.get(m.subject.store)
        print(
            f"{m.label:<{width}}  {m.median:8.2f}  {min(m.runs):8.2f}  {max(m.runs):8.2f}  {added:>8}  "
            f"{'' if trips is None else f'{trips:6.2f}':>6}  "
            f"{'' if unit is None or m.subject.role == 'rtt' else f'{m.median / unit:5.2f}':>5}"
        )
    for m in results:
        if m.problem:
            print(f"PROBLEM {m.label}: {m.problem}")
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")


def run(
    namespace: Namespace,
    runs: int = 5,
    run_time: float = 0.15,
    requests: int | None = None,
    only: str | None = None,
) -> tuple[list[Measurement], dict[str, str]]:
    """Build, measure and close every case; the measurements and the
    subjects that could not run, with the reason."""
    cases, skipped = build_cases(namespace, only=only)
    try:
        results = measure(cases, runs, run_time, requests)
    finally:
        close_cases(cases)
    count_postgres_round_trips(results, namespace)
    return results, skipped


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The in-process options (shared with ``run_all.py``)."""
    parser.add_argument("--runs", type=int, default=5, help="runs per case; median/min/max reported (5)")
    parser.add_argument("--run-time", type=float, default=0.15, help="seconds per run, calibrated (0.15)")
    parser.add_argument("--requests", type=int, help="fixed requests per run instead of calibrating")
    parser.add_argument("--only", help="measure only session cases whose label contains this")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="In-process cost of a session middleware, in µs/request.")
    add_arguments(parser)
    parser.add_argument("--profile", action="store_true", help="cProfile one run of each case instead")
    parser.add_argument("--top", type=int, default=25, help="functions shown per profile (25)")
    args = parser.parse_args(argv)
    if args.runs < 1 or (args.requests is not None and args.requests < 1) or args.run_time <= 0:
        parser.error("--runs, --requests and --run-time must be positive")
    info = machine()
    print(f"{info['python']} on {info['platform']}\nCPU: {info['cpu']}\nwsgi_session: {info['build']}\n")
    namespace = Namespace.new()
    try:
        if args.profile:
            cases, skipped = build_cases(namespace, only=args.only)
            try:
                profile(cases, args.run_time, args.top)
            finally:
                close_cases(cases)
            return
        results, skipped = run(namespace, args.runs, args.run_time, args.requests, args.only)
    finally:
        sweep(namespace)
    print(f"{args.runs} runs of ~{args.run_time} s per case, interleaved, gc on (older objects frozen)\n")
    report(results, skipped)


if __name__ == "__main__":
    main()
