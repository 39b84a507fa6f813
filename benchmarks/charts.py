"""The PNG charts of a run: in-process µs per request, and requests/s under gunicorn.

Drawn with matplotlib (``Agg``, no screen) from the ``results.json``
structure by :func:`charts`, which :mod:`benchmarks.report` calls.
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    from pathlib import Path

    from benchmarks.targets import Results


def subjects_in_order(measurements: list[dict[str, t.Any]]) -> list[str]:
    """The subjects of ``measurements``, each once, in the order they came."""
    seen: dict[str, None] = {}
    for m in measurements:
        seen.setdefault(m["subject"], None)
    return list(seen)


def charts(results: Results, directory: Path) -> list[Path]:
    """Draw the PNG charts into ``directory``; the files written."""
    import matplotlib

    matplotlib.use("Agg")
    written = []
    if results.get("inprocess"):
        written.append(_inprocess_chart(results, directory / "inprocess.png"))
    if results.get("gunicorn"):
        written.append(_gunicorn_chart(results, directory / "gunicorn.png"))
    return written


def _inprocess_chart(results: Results, path: Path) -> Path:
    import matplotlib.pyplot as plt

    measurements = results["inprocess"]
    workloads = ("read", "increment", "new visitor", "read 20 KB")
    subjects = [
        s
        for s in subjects_in_order(measurements)
        if any(m["subject"] == s and m["workload"] in workloads for m in measurements)
    ]
    figure, axes = plt.subplots(1, len(workloads), figsize=(18, 0.32 * len(subjects) + 2), sharey=True)
    for ax, workload in zip(axes, workloads, strict=True):
        found = {m["subject"]: m for m in measurements if m["workload"] == workload}
        medians = [found[s]["median_us"] if s in found else 0 for s in subjects]
        minimums = [found[s]["min_us"] if s in found else 0 for s in subjects]
        colors = [
            "tab:blue" if s.startswith(("wsgi_session", "flask + wsgi_session")) else "tab:gray"
            for s in subjects
        ]
        positions = range(len(subjects))
        ax.barh(positions, medians, color=colors)
        ax.plot(minimums, positions, "k|", markersize=8, label="min")
        ax.set_xscale("log")
        ax.set_title(workload)
        ax.set_xlabel("µs/request (median; | = min), log scale")
        ax.grid(axis="x", which="both", alpha=0.3)
    axes[0].set_yticks(range(len(subjects)), subjects, fontsize=8)
    axes[0].invert_yaxis()
    figure.suptitle("In process: µs per request (blue: wsgi_session)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _gunicorn_chart(results: Results, path: Path) -> Path:
    import matplotlib.pyplot as plt

    runs = results["gunicorn"]
    servers = list(dict.fromkeys(r["server"] for r in runs))
    subjects = list(dict.fromkeys(r["subject"] for r in runs))
    figure, axes = plt.subplots(
        1, len(servers), figsize=(8 * len(servers), 0.45 * len(subjects) + 2), sharey=True
    )
    axes = list(axes) if len(servers) > 1 else [axes]
    height = 0.4
    for ax, server in zip(axes, servers, strict=True):
        # A baseline's bar is its plain request; a round-trip reference's, its
        # one round trip (read) and two (increment: what a strict write makes).
        for offset, (workload, reference), color in (
            (-height / 2, ("read", "round trip"), "tab:blue"),
            (height / 2, ("increment", "2 round trips"), "tab:orange"),
        ):
            values, low, high = [], [], []
            for subject in subjects:
                found = [r for r in runs if (r["server"], r["subject"]) == (server, subject)]
                match = [r for r in found if r["workload"] in (workload, reference)] or [
                    r for r in found if r["workload"] == "plain"
                ]
                median = match[0]["requests_per_s"] if match else 0
                values.append(median)
                low.append(median - match[0]["requests_per_s_min"] if match else 0)
                high.append(match[0]["requests_per_s_max"] - median if match else 0)
            ax.barh(
                [i + offset for i in range(len(subjects))],
                values,
                height=height,
                color=color,
                xerr=[low, high],
                error_kw={"elinewidth": 0.8, "capsize": 2},
                label=f"{workload} (baselines: plain; references: {reference})",
            )
        ax.set_title(f"gunicorn {server}, wrk 8 connections (median, min-max of the runs)")
        ax.set_xlabel("requests/s")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_yticks(range(len(subjects)), subjects, fontsize=8)
    axes[0].invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
