"""The targets of issue 4, checked against one run's results.

Every ratio compares numbers from the same run (medians, as the issue asks;
the in-process minimums are given too, since the machine is shared). The
input is the ``results.json`` structure that :mod:`benchmarks.run_all`
writes, so a report can be rebuilt from a saved file.
"""

from __future__ import annotations

import dataclasses
import typing as t

Results = dict[str, t.Any]

#: The peers' figures quoted in issue 4 (2-core machines), for context.
ISSUE_FIGURES = {
    ("bare", "plain"): "≈ 1 µs",
    ("beaker[memory]", "read"): "≈ 30-38 µs",
    ("beaker[redis]", "read"): "≈ 360-370 µs (≈ 7-8 RTT)",
    ("flask-session[redis]", "increment"): "≈ 460-480 µs",
    ("flask", "plain"): "≈ 65 µs",
}
ISSUE_LOAD_FIGURES = {
    "bare": "≈ 3,360",
    "beaker[memory]": "≈ 2,450",
    "beaker[redis]": "≈ 1,200",
    "flask-session[redis]": "≈ 1,090",
    "flask-session[postgresql]": "≈ 520",
}


@dataclasses.dataclass
class Check:
    """One target: what was measured against what was asked."""

    target: str
    measured: str
    goal: str
    met: bool | None  # None: could not be measured

    @property
    def verdict(self) -> str:
        return {True: "met", False: "**missed**", None: "n/a"}[self.met]


def row(results: Results, subject: str, workload: str) -> dict[str, t.Any] | None:
    """The in-process measurement of ``subject`` / ``workload``."""
    for measurement in results.get("inprocess", []):
        if measurement["subject"] == subject and measurement["workload"] == workload:
            return t.cast("dict[str, t.Any]", measurement)
    return None


def median(results: Results, subject: str, workload: str) -> float | None:
    found = row(results, subject, workload)
    return None if found is None else float(found["median_us"])


def load(results: Results, subject: str, workload: str, server: str = "gthread 1x4") -> float | None:
    """Requests/s of one gunicorn run."""
    run = load_run(results, subject, workload, server)
    return None if run is None else float(run["requests_per_s"])


def load_run(results: Results, subject: str, workload: str, server: str) -> dict[str, t.Any] | None:
    """One gunicorn run's result, as the report holds it."""
    for result in results.get("gunicorn", []):
        if (result["subject"], result["workload"], result["server"]) == (subject, workload, server):
            return dict(result)
    return None


def _not_comparable(
    check: Check, results: Results, subjects: tuple[str, ...], workload: str, server: str
) -> Check:
    """``check`` marked not comparable when a subject's run failed (counters
    not exact, or requests that failed): requests/s of an answer that loses
    data, or of errors, is not a result."""
    for subject in subjects:
        run = load_run(results, subject, workload, server)
        if run is not None and not run.get("passed", True):
            reason = run.get("expected_failure") or run.get("check") or "counters not exact"
            return Check(
                check.target,
                f"{check.measured}; not comparable: {subject} failed here ({reason})",
                check.goal,
                None,
            )
    return check


#: The round-trip reference of each store (one plain client call per round
#: trip), by the name it has had since the suite ran it under gunicorn.
RTT_SUBJECTS = {"redis": "redis-py GET", "postgresql": "psycopg2 SELECT 1"}


def _references(results: Results, store: str, unit: bool) -> list[str]:
    """The names of ``store``'s round-trip references the run recorded: its
    unit (``unit=True``; results saved before the flag count as units) or
    the others."""
    return [
        str(measurement["subject"])
        for measurement in results.get("inprocess", [])
        if measurement.get("role") == "rtt"
        and measurement.get("store") == store
        and measurement.get("unit", True) is unit
    ]


def rtt_subject(results: Results, store: str) -> str:
    """The name of ``store``'s round-trip unit in ``results``: found by its
    role, so results saved under an earlier name still render."""
    return next(iter(_references(results, store, unit=True)), RTT_SUBJECTS[store])


def rtt(results: Results, store: str) -> float | None:
    """The median µs of one plain round trip to ``store``."""
    return median(results, rtt_subject(results, store), "round trip")


def worker_cpu(
    results: Results, subject: str, workload: str, server: str, group: str = "worker"
) -> float | None:
    """The gunicorn worker's CPU µs per request in one run, where metered;
    with ``group="app"``, the part of it spent inside the WSGI app."""
    used = ((load_run(results, subject, workload, server) or {}).get("usage") or {}).get(group)
    return None if used is None else float(used["cpu_us"])


def app_cpu_note(results: Results, cases: t.Sequence[tuple[str, str]], server: str) -> str:
    """``"; inside the app X vs Y µs/req"`` for two (subject, workload) cases, where metered."""
    cpu = [worker_cpu(results, subject, workload, server, "app") for subject, workload in cases]
    if None in cpu:
        return ""
    return f"; inside the app {cpu[0]:,.1f} vs {cpu[1]:,.1f} µs/req"


def two_round_trip_reference(results: Results, ours: str, theirs: str, server: str) -> str:
    """What two plain client calls per request reach against ``theirs``: the
    round trips of a strict increment (a read and a write) with no session
    code around them, made by redis-py (or psycopg2) and, for Redis, by our
    store's request path and by a bare socket. They are references, not
    bounds: they show how much of the cost is the round trips themselves
    and how much the client's Python.

    For a plain WSGI subject they are measured in the same run: the bare app
    making two calls per request and nothing else. Inside Flask they are
    estimated, on a gthread worker only (whose rate is about the inverse of
    its CPU per request): Flask alone's worker CPU plus what the two calls
    add to the bare app's, against the peer's worker CPU. A run that failed
    is left out: a failed run's rate is not a reference."""
    store = "postgresql" if "postgresql" in ours else "redis"
    names = [rtt_subject(results, store), *_references(results, store, unit=False)]
    peer_run = load_run(results, theirs, "increment", server)
    if peer_run is None or not peer_run.get("passed", True):
        return ""
    peer = float(peer_run["requests_per_s"])
    references = [(name, load_run(results, name, "2 round trips", server)) for name in names]
    usable = [(name, run) for name, run in references if run is not None and run.get("passed", True)]
    if not usable:
        return ""
    if not ours.startswith("flask"):
        rates = [(name, float(run["requests_per_s"])) for name, run in usable]
        listed = ", ".join(f"{name} {rate:,.0f} req/s ({rate / peer:.2f}x)" for name, rate in rates)
        return f"; the bare app making 2 calls per request and nothing else: {listed}"
    cases = (("bare", "plain"), ("flask", "plain"), (theirs, "increment"))
    cpu = [worker_cpu(results, subject, workload, server) for subject, workload in cases]
    if server != "gthread 1x4" or None in cpu:
        return ""
    bare_cpu, flask_cpu, peer_cpu = t.cast("list[float]", cpu)
    estimates = []
    for name, _run in usable:
        two_cpu = worker_cpu(results, name, "2 round trips", server)
        # Calls that seem to cost the worker nothing add nothing to estimate
        # from: a busier worker can spend less CPU per request (fewer wake-ups).
        if two_cpu is not None and two_cpu > bare_cpu:
            added = two_cpu - bare_cpu
            ratio = peer_cpu / (flask_cpu + added)
            estimates.append(f"{name} {ratio:.2f}x ({flask_cpu:,.0f} + {added:,.0f})")
    if not estimates:
        return ""
    return (
        f"; Flask alone plus 2 calls, estimated from worker CPU (µs/req, against {peer_cpu:,.0f}): "
        + ", ".join(estimates)
    )


def _memory_store(results: Results) -> list[Check]:
    bare = median(results, "bare", "plain")
    checks = []
    for workload, limit in (("read", 4.0), ("increment", 8.0), ("new visitor", 15.0)):
        ours, beaker = (
            median(results, "wsgi_session[memory]", workload),
            median(results, "beaker[memory]", workload),
        )
        if bare is None or ours is None:
            checks.append(Check(f"memory store {workload}: added over bare", "—", f"≤ {limit:g} µs", None))
            continue
        added = ours - bare
        checks.append(
            Check(
                f"memory store {workload}: added over bare",
                f"{added:.1f} µs",
                f"≤ {limit:g} µs",
                added <= limit,
            )
        )
        if beaker is not None:
            ratio = (beaker - bare) / added
            checks.append(
                Check(
                    f"memory store {workload}: vs Beaker memory (added µs)",
                    f"{ratio:.1f}x faster",
                    "≥ 5x",
                    ratio >= 5,
                )
            )
    return checks


def _redis(results: Results) -> list[Check]:
    unit = rtt(results, "redis")
    checks = []
    for workload, limit in (("read", 1.3), ("increment", 2.3)):
        value = median(results, "wsgi_session[redis]", workload)
        found = row(results, "wsgi_session[redis]", workload)
        if unit is None or value is None or found is None:
            checks.append(Check(f"Redis strict {workload}", "—", f"≤ {limit} RTT", None))
            continue
        counted = found["round_trips"]["redis"]
        checks.append(
            Check(
                f"Redis strict {workload}",
                f"{value / unit:.2f} RTT ({value:.0f} µs, RTT {unit:.0f} µs; "
                f"{counted:.2f} round trips counted)",
                f"≤ {limit} RTT",
                value / unit <= limit,
            )
        )
    memory = median(results, "wsgi_session[memory]", "read")
    relaxed = [
        (value, name)
        for name in (
            "wsgi_session[redis, notify]",
            "wsgi_session[redis, background+notify]",
            "wsgi_session[redis, background]",
        )
        if (value := median(results, name, "read")) is not None
    ]
    if memory is not None and relaxed:
        best, name = min(relaxed)
        checks.append(
            Check(
                "Redis relaxed cached read vs memory store read",
                f"{best / memory:.2f}x ({name}: {best:.1f} µs vs {memory:.1f} µs)",
                "≤ 2x",
                best / memory <= 2,
            )
        )
    return checks


def _postgresql(results: Results) -> list[Check]:
    """Queries per request: what the server received (counted on the wire,
    psycopg2's own ``BEGIN``/``ROLLBACK``/``SET`` included), with the
    statements the code executed alongside."""
    checks = []
    for workload, limit in (("read", 1), ("increment", 2)):
        found = row(results, "wsgi_session[postgresql]", workload)
        trips = None if found is None else found["round_trips"].get("sql_round_trips")
        if found is None or trips is None:
            checks.append(
                Check(f"PostgreSQL strict {workload}: queries per request", "—", f"≤ {limit}", None)
            )
            continue
        statements = found["round_trips"]["sql_statements"]
        checks.append(
            Check(
                f"PostgreSQL strict {workload}: queries per request",
                f"{trips:.2f} queries received by the server ({statements:.2f} statements executed)",
                f"≤ {limit}",
                trips <= limit + 0.01,
            )
        )
    return checks


def _ratio(label: str, ours: float | None, theirs: float | None, goal: float, unit: str = "req/s") -> Check:
    if ours is None or theirs is None:
        return Check(label, "—", f"≥ {goal:g}x", None)
    ratio = ours / theirs
    return Check(label, f"{ratio:.2f}x ({ours:,.0f} vs {theirs:,.0f} {unit})", f"≥ {goal:g}x", ratio >= goal)


def _with_cpu(check: Check, results: Results, subjects: tuple[str, str], workload: str, server: str) -> Check:
    """``check`` with the worker CPU per request of both subjects, where
    measured: a gunicorn worker's rate is about the inverse of it."""
    cpu = [worker_cpu(results, subject, workload, server) for subject in subjects]
    if None in cpu:
        return check
    note = f"; worker CPU {cpu[0]:,.0f} vs {cpu[1]:,.0f} µs/req"
    note += app_cpu_note(results, [(subject, workload) for subject in subjects], server)
    return dataclasses.replace(check, measured=check.measured + note)


def _gunicorn(results: Results) -> list[Check]:
    checks = []
    for server in ("gthread 1x4", "sync x2"):
        memory, bare = (
            load(results, "wsgi_session[memory]", "read", server),
            load(results, "bare", "plain", server),
        )
        if memory is not None and bare is not None:
            share = memory / bare
            measured = f"{share:.0%} ({memory:,.0f} vs {bare:,.0f} req/s)"
            # The bare app sent a cookie of a session's size: what the cookie
            # alone costs the server, before any session code runs.
            with_cookie = load(results, "bare", "plain + cookie", server)
            if with_cookie is not None:
                measured += (
                    f"; the bare app does {with_cookie / bare:.0%} with a session-sized cookie "
                    f"({with_cookie:,.0f} req/s), and we do {memory / with_cookie:.0%} of that"
                )
            measured += app_cpu_note(results, [("wsgi_session[memory]", "read"), ("bare", "plain")], server)
            check = Check(f"{server}: memory-store read vs bare app", measured, "≥ 90 %", share >= 0.9)
            checks.append(_not_comparable(check, results, ("wsgi_session[memory]",), "read", server))
        pairs = (
            ("Redis increment vs Beaker Redis", "wsgi_session[redis]", "beaker[redis]"),
            (
                "inside Flask: Redis increment vs Flask-Session",
                "flask + wsgi_session[redis]",
                "flask-session[redis]",
            ),
            (
                "inside Flask: PostgreSQL increment vs Flask-Session",
                "flask + wsgi_session[postgresql]",
                "flask-session[postgresql]",
            ),
        )
        for label, ours, theirs in pairs:
            check = _ratio(
                f"{server}: {label}",
                load(results, ours, "increment", server),
                load(results, theirs, "increment", server),
                2,
            )
            check = _with_cpu(check, results, (ours, theirs), "increment", server)
            reference = two_round_trip_reference(results, ours, theirs, server)
            check = dataclasses.replace(check, measured=check.measured + reference)
            checks.append(_not_comparable(check, results, (ours, theirs), "increment", server))
            # The same in the relaxed write mode (the response does not wait
            # for the store): exact within one process, stale across several.
            relaxed = ours[:-1] + ", background]"
            ratio = _ratio(
                f"{server}: {label}, ours in background mode",
                load(results, relaxed, "increment", server),
                load(results, theirs, "increment", server),
                2,
            )
            if ratio.met is not None:
                checks.append(_not_comparable(ratio, results, (relaxed, theirs), "increment", server))
    return checks


def _memory(results: Results) -> list[Check]:
    for result in results.get("memory", []):
        if result["library"] == "wsgi_session[memory]":
            scaled = result["rss_before"] + result["per_session"] * 100_000
            return [
                Check(
                    "RSS with 100,000 cached 1 KB sessions",
                    f"{scaled / 2**20:.0f} MB ({result['overhead']:,.0f} B per session beyond its data)",
                    "≤ 250 MB",
                    scaled <= 250 * 2**20,
                )
            ]
    return [Check("RSS with 100,000 cached 1 KB sessions", "—", "≤ 250 MB", None)]


def evaluate(results: Results) -> list[Check]:
    """Every target of issue 4 that this run measured (or could not)."""
    checks: list[Check] = []
    if results.get("inprocess"):
        checks += _memory_store(results) + _redis(results) + _postgresql(results)
    if results.get("gunicorn"):
        checks += _gunicorn(results)
    if results.get("memory"):
        checks += _memory(results)
    return checks
