"""Writing a run's results: ``results.md``, ``results.json`` and PNG charts.

Everything is rebuilt from the ``results.json`` structure, so a saved run can
be re-rendered (``python benchmarks/report.py benchmarks/results/results.json``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import cpu_usage
from benchmarks.charts import charts, subjects_in_order
from benchmarks.targets import ISSUE_FIGURES, ISSUE_LOAD_FIGURES, Results, evaluate

HEADLINE_WORKLOADS = ("read", "increment", "new visitor", "read 20 KB", "untouched")


def _table(header: list[str], rows: list[list[str]], align: str = "") -> str:
    """A Markdown table; ``align`` has one ``l`` or ``r`` per column."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def header(results: Results) -> str:
    info = results["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in results.get("versions", {}).items())
    return "\n".join(
        [
            "# wsgi_session benchmarks",
            "",
            f"Generated {results['started']} by `{results['command']}` in {results['seconds']:.0f} s.",
            "",
            f"- **Machine:** {info['cpu']}; {info['python']}; {info['platform']}",
            f"- **wsgi_session:** commit {info['wsgi_session']}, {info.get('build', 'pure Python')}",
            f"- **Libraries:** {versions}",
            f"- **Services (loopback):** {results.get('services', '')}",
            f"- **Settings:** {results.get('settings', '')}",
            "",
            "The machine is shared with other test runs, so every comparison below is between "
            "subjects measured side by side in this one run; in-process tables give the minimum "
            "as well as the median.",
        ]
    )


def targets_section(results: Results) -> str:
    checks = evaluate(results)
    if not checks:
        return ""
    rows = [[c.target, c.measured, c.goal, c.verdict] for c in checks]
    return "## Targets of issue 4\n\n" + _table(["target", "measured (this run)", "goal", ""], rows, "llll")


def inprocess_section(results: Results) -> str:
    measurements = results.get("inprocess", [])
    if not measurements:
        return ""
    by_key = {(m["subject"], m["workload"]): m for m in measurements}
    rows = []
    for subject in subjects_in_order(measurements):
        cells = [f"`{subject}`"]
        for workload in ("plain", *HEADLINE_WORKLOADS):
            m = by_key.get((subject, workload)) or (
                by_key.get((subject, "round trip")) if workload == "plain" else None
            )
            cells.append("" if m is None else f"{m['median_us']:,.1f} ({m['min_us']:,.1f})")
        rows.append(cells)
    headline = _table(["subject", "plain / RTT", *HEADLINE_WORKLOADS], rows)
    detail_rows = []
    for m in measurements:
        trips = m.get("store_round_trips")
        in_rtt = m.get("in_rtts")
        detail_rows.append(
            [
                f"`{m['subject']}`",
                m["workload"],
                f"{m['median_us']:,.2f}",
                f"{m['min_us']:,.2f}",
                f"{m['max_us']:,.2f}",
                "" if m.get("added_us") is None else f"{m['added_us']:+,.2f}",
                "" if trips is None else f"{trips:.2f}",
                f"{m['round_trips']['sql_statements']:.2f}" if m["store"] in ("postgresql", "sqlite") else "",
                "" if in_rtt is None else f"{in_rtt:.2f}",
                "yes" if m["set_cookie"] else "",
                f"{m['requests_per_run']:,}",
                m.get("problem", ""),
            ]
        )
    detail = _table(
        [
            "subject",
            "workload",
            "median µs",
            "min µs",
            "max µs",
            "added µs",
            "store RT/req",
            "SQL stmts",
            "in RTTs",
            "Set-Cookie",
            "req/run",
            "problem",
        ],
        detail_rows,
        "llrrrrrrrlrl",
    )
    return "\n\n".join(
        [
            "## In process: µs per request",
            "Median (min) of the runs, µs per request, calling the WSGI callable in a loop (no server, "
            "no HTTP parsing). Store-backed subjects include their real round trips to Redis/PostgreSQL "
            "on loopback; the RTT references are one redis-py `GET` and one psycopg2 `SELECT 1` "
            "measured in the same run.",
            headline,
            "### Every case\n\n*added*: over the family's baseline (`bare` for plain WSGI subjects, "
            "`flask` for Flask ones). *store RT/req*: round trips per request, counted: Redis sends "
            "(a pipeline is one); for PostgreSQL the queries the server received, counted on the wire "
            "by a proxy in a separate pass (psycopg2's own `BEGIN`, `ROLLBACK` and `SET` included); "
            "for SQLite the statements (local calls, no network). *SQL stmts*: statements the code "
            "executed (counted at the DBAPI cursor). *in RTTs*: the median divided by the median of "
            "one plain round trip to the same server. *Set-Cookie*: the steady-state response carries one.",
            detail,
            "![in-process](inprocess.png)",
        ]
    )


def _app_cpu(usage: dict[str, dict[str, float]]) -> str:
    """The CPU µs per request inside the WSGI app, where metered."""
    app = usage.get("app")
    return f"{app['cpu_us']:,.1f}" if app else ""


def gunicorn_section(results: Results) -> str:
    runs = results.get("gunicorn", [])
    if not runs:
        return ""
    rows = []
    for r in runs:
        errors = sum(r["errors"].values())
        check = r["check"] if r["passed"] else f"**{r['check']}**"
        if r["expected_failure"] and not r["passed"]:
            check += f" — expected: {r['expected_failure']}"
        rows.append(
            [
                f"`{r['subject']}`",
                r["server"],
                r["workload"],
                f"{r['requests_per_s']:,.0f} ({r['requests_per_s_min']:,.0f}-{r['requests_per_s_max']:,.0f})",
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                *cpu_usage.columns(r.get("usage", {})),
                _app_cpu(r.get("usage", {})),
                str(errors) if errors else "",
                check,
            ]
        )
    settings = results.get("load_settings", "")
    return "\n\n".join(
        [
            "## Under gunicorn: requests/s, latency, exact counters",
            f"{settings} `wrk` keeps one cookie per connection (`session.lua`); after each measured "
            "run every connection's session is fetched from the server and compared with what the "
            "script counted (*exact*: the counter went up by exactly one per 200 response, or stayed 0 "
            "for reads, no session was replaced or re-created, and the server's final counter equals "
            "the 200s answered, or one more when a request was in flight as wrk stopped). "
            "CPU per request is read from `/proc` around the measured runs "
            "(`benchmarks/cpu_usage.py`): the worker column is gunicorn's processes (all threads), "
            "with their context switches; the store column is the Redis or PostgreSQL server. On a "
            "2-core machine shared with wrk and the store, these explain the rates: a gthread "
            "worker is one process whose Python runs on one core at a time (the GIL), so its CPU "
            "per request bounds its rate. With one worker, the app column is the part of the "
            "worker's CPU spent inside the WSGI app (the session library and the view: thread CPU "
            "time around each call, `benchmarks/app_meter.py`); the rest is gunicorn and the kernel.",
            _table(
                [
                    "subject",
                    "server",
                    "workload",
                    "req/s (min-max)",
                    "p50 ms",
                    "p99 ms",
                    "worker CPU µs/req",
                    "context switches/req",
                    "store CPU µs/req",
                    "app CPU µs/req",
                    "errors",
                    "counters",
                ],
                rows,
                "lllrrrrrrrrl",
            ),
            "![gunicorn](gunicorn.png)",
        ]
    )


def memory_section(results: Results) -> str:
    rows = [
        [
            f"`{r['library']}`",
            f"{r['held']:,}",
            f"{r['rss_before'] / 2**20:.1f} MB",
            f"{r['rss_after'] / 2**20:.1f} MB",
            f"{r['per_session']:,.0f} B",
            f"{r['overhead']:,.0f} B",
            f"{r['seconds']:.1f} s",
        ]
        for r in results.get("memory", [])
    ]
    if not rows:
        return ""
    return "\n\n".join(
        [
            "## Memory: cached 1 KB sessions",
            "A fresh process per library serves new visitors that each store a distinct "
            "1,024-character string; RSS (`VmRSS`) after one request and after all of them, "
            "garbage collected.",
            _table(
                [
                    "library",
                    "sessions held",
                    "RSS before",
                    "RSS after",
                    "per session",
                    "beyond its data",
                    "time",
                ],
                rows,
            ),
        ]
    )


def peers_section(results: Results) -> str:
    rows = []
    for (subject, workload), figure in ISSUE_FIGURES.items():
        found = next(
            (m for m in results.get("inprocess", []) if (m["subject"], m["workload"]) == (subject, workload)),
            None,
        )
        if found is not None:
            rows.append([f"`{subject}` {workload}, in process", figure, f"{found['median_us']:,.1f} µs"])
    for subject, figure in ISSUE_LOAD_FIGURES.items():
        found = next(
            (
                r
                for r in results.get("gunicorn", [])
                if r["subject"] == subject
                and r["server"] == "gthread 1x4"
                and r["workload"] in ("plain", "increment")
            ),
            None,
        )
        if found is not None:
            rows.append(
                [
                    f"`{subject}` {found['workload']}, gthread 1x4",
                    f"{figure} req/s",
                    f"{found['requests_per_s']:,.0f} req/s",
                ]
            )
    if not rows:
        return ""
    return "## The peers here vs the figures quoted in issue 4\n\n" + _table(
        ["measurement", "issue 4", "this run"], rows, "lrr"
    )


def profile_section(results: Results) -> str:
    text = results.get("profile")
    return f"## Profile\n\n{text}" if text else ""


def skipped_section(results: Results) -> str:
    skipped = {
        **results.get("inprocess_skipped", {}),
        **results.get("gunicorn_skipped", {}),
        **results.get("memory_skipped", {}),
    }
    if not skipped:
        return ""
    return "## Not measured\n\n" + "\n".join(f"- `{name}`: {reason}" for name, reason in skipped.items())


def markdown(results: Results) -> str:
    """The whole report."""
    sections = [
        header(results),
        targets_section(results),
        inprocess_section(results),
        gunicorn_section(results),
        memory_section(results),
        peers_section(results),
        profile_section(results),
        skipped_section(results),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def write(results: Results, directory: Path) -> Path:
    """Write ``results.json``, ``results.md`` and the charts; the Markdown path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    charts(results, directory)
    target = directory / "results.md"
    target.write_text(markdown(results))
    return target


def main(argv: list[str] | None = None) -> None:
    """Re-render a saved ``results.json`` (written next to it)."""
    path = Path((argv or sys.argv[1:] or ["benchmarks/results/results.json"])[0])
    results = json.loads(path.read_text())
    print(write(results, path.parent).read_text())


if __name__ == "__main__":
    main()
