"""One ``wrk`` run with ``session.lua``, and the check of what it left behind.

:func:`wrk` loads one server for a few seconds with one visitor per
connection, each keeping its cookie; the Lua script checks every response's
counter and tag and prints, at the end, a summary line and one line per
connection (:class:`Visitor`). :func:`verify` then asks the server for each
visitor's session, and :func:`run_check` folds a run's verdict and wrk's own
error counts into the check of a whole measurement.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
import typing as t

from benchmarks.apps import parse_body
from benchmarks.gunicorn_process import get
from benchmarks.settings import BENCHMARKS

if t.TYPE_CHECKING:
    from benchmarks.workloads import Workload

LUA = BENCHMARKS / "session.lua"


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
