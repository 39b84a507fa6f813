"""Run the whole benchmark suite and write the report: ``python benchmarks/run_all.py``.

Parts (all of them when none is named):

``--inprocess``
    µs/request of every subject and workload, store round trips counted,
    the Redis and PostgreSQL RTT measured in the same run
    (:mod:`benchmarks.inprocess`);
``--memory``
    RSS of 100,000 cached 1 KB sessions (:mod:`benchmarks.memory`);
``--profile``
    py-spy profiles of the Redis strict increment and of the memory store's
    increment and new visitor (:mod:`benchmarks.profiling`);
``--gunicorn``
    requests/s, p50 and p99 under gunicorn loaded by wrk, with exact counter
    checks (:mod:`benchmarks.loadtest`).

``--quick`` shortens everything (a smoke test: about two minutes, numbers
rougher). The report goes to ``benchmarks/results/``: ``results.md`` (also
printed), ``results.json`` and the PNG charts. Everything the run stores in
Redis, PostgreSQL or SQLite files is removed at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import subprocess
import sys
import time
import typing as t
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import inprocess, loadtest, memory, profiling, report
from benchmarks.cleanup import sweep
from benchmarks.settings import POSTGRES_URL, REDIS_URL, RESULTS, Namespace, machine

PACKAGES = (
    "werkzeug",
    "flask",
    "beaker",
    "flask-session",
    "flask-sqlalchemy",
    "redis",
    "sqlalchemy",
    "psycopg2-binary",
    "gunicorn",
)


def versions() -> dict[str, str]:
    """Installed versions of the packages measured or used."""
    found = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    try:
        output = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False)
        found["wrk"] = (output.stdout or output.stderr).split()[1]
    except (OSError, IndexError, subprocess.SubprocessError):
        found["wrk"] = "not installed"
    return found


def services() -> str:
    """The Redis and PostgreSQL server versions, where they answer."""
    parts = []
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        parts.append(f"Redis {client.info('server')['redis_version']}")
        client.close()
    except Exception as exc:
        parts.append(f"Redis unavailable ({type(exc).__name__})")
    try:
        import sqlalchemy as sa

        engine = sa.create_engine(POSTGRES_URL, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            parts.append(f"PostgreSQL {conn.exec_driver_sql('SHOW server_version').scalar()}")
        engine.dispose()
    except Exception as exc:
        parts.append(f"PostgreSQL unavailable ({type(exc).__name__})")
    return ", ".join(parts)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the wsgi_session benchmark suite.")
    parts = parser.add_argument_group("parts (default: all)")
    for part in ("inprocess", "memory", "profile", "gunicorn"):
        parts.add_argument(f"--{part}", action="store_true", help=f"run the {part} part")
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test, rougher numbers")
    inprocess.add_arguments(parser)
    loadtest.add_arguments(parser)
    parser.add_argument("--sessions", type=int, default=100_000, help="sessions for --memory (100000)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="report directory (benchmarks/results)")
    args = parser.parse_args(argv)
    if not any((args.inprocess, args.memory, args.profile, args.gunicorn)):
        args.inprocess = args.memory = args.profile = args.gunicorn = True
    if args.quick:
        args.runs, args.run_time = min(args.runs, 3), min(args.run_time, 0.05)
        args.repeats, args.warmup = min(args.repeats, 2), 1
        args.sessions = min(args.sessions, 20_000)
    numbers = (
        args.runs,
        args.run_time,
        args.duration,
        args.repeats,
        args.warmup,
        args.connections,
        args.sessions,
    )
    if min(numbers) <= 0:
        parser.error("--runs, --run-time, --duration, --repeats, --warmup, --connections, --sessions: > 0")
    return args


def run(args: argparse.Namespace, namespace: Namespace) -> dict[str, t.Any]:
    """Run the chosen parts; the ``results.json`` structure."""
    results: dict[str, t.Any] = {
        "machine": machine(),
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", "benchmarks/run_all.py", *sys.argv[1:]]),
        "versions": versions(),
        "services": services(),
        "settings": (
            f"{args.runs} interleaved runs of ~{args.run_time} s per in-process case"
            " (gc on; objects older than the run frozen, see inprocess.measure)"
        ),
    }
    timings = {}
    if args.inprocess:
        started = time.monotonic()
        print("in process ...", file=sys.stderr, flush=True)
        measured, skipped = inprocess.run(namespace, args.runs, args.run_time, args.requests, args.only)
        inprocess.report(measured, skipped)
        results["inprocess"], results["inprocess_skipped"] = inprocess.as_rows(measured), skipped
        timings["in process"] = time.monotonic() - started
    if args.memory:
        started = time.monotonic()
        print("memory ...", file=sys.stderr, flush=True)
        held, skipped = memory.run(args.sessions)
        results["memory"], results["memory_skipped"] = [r.as_dict() for r in held], skipped
        timings["memory"] = time.monotonic() - started
    if args.profile:
        started = time.monotonic()
        print("profile ...", file=sys.stderr, flush=True)
        results["profile"] = profiling.run(3.0 if args.quick else 8.0)
        timings["profile"] = time.monotonic() - started
    if args.gunicorn:
        started = time.monotonic()
        print("gunicorn ...", file=sys.stderr, flush=True)
        load_settings = loadtest.settings(args)
        loads, skipped = loadtest.run(namespace, load_settings, args.only)
        loadtest.report(loads, skipped)
        results["gunicorn"] = [r.as_dict() for r in loads]
        results["gunicorn_skipped"] = skipped
        results["load_settings"] = load_settings.describe()
        timings["gunicorn"] = time.monotonic() - started
    results["settings"] += "; time per part: " + ", ".join(
        f"{part} {sec:.0f} s" for part, sec in timings.items()
    )
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.monotonic()
    namespace = Namespace.new()
    try:
        results = run(args, namespace)
    finally:
        sweep(namespace)
    results["seconds"] = time.monotonic() - started
    path = report.write(results, args.output)
    print(path.read_text())
    print(f"written: {path} (and results.json, *.png next to it)", file=sys.stderr)


if __name__ == "__main__":
    main()
