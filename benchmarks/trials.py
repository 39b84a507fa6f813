"""One subject x server x workload under ``wrk``, measured one run at a time.

A :class:`Trial` holds what the load test (:mod:`benchmarks.loadtest`) has
measured of one subject's workload on one gunicorn layout so far: each
measured run's rate and latencies, what ``wrk`` counted as errors, the check
of every session afterwards, the CPU the processes used (:mod:`benchmarks.cpu_usage`)
and, with one worker, the CPU spent inside the WSGI app
(:mod:`benchmarks.app_meter`). :meth:`Trial.result` sums it up as a
:class:`LoadResult`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import typing as t

from benchmarks import app_meter, cpu_usage
from benchmarks.wrk_runs import WRK_ERRORS, run_check, verify, wrk

if t.TYPE_CHECKING:
    from benchmarks.gunicorn_process import Running
    from benchmarks.subjects import Subject
    from benchmarks.workloads import Workload


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
            "interleaved: each round runs every subject's workloads once, "
            "the rounds' starts spread over the list; "
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


def expected_failure(subject: Subject, server: Server) -> str:
    """Why this subject cannot keep exact counters on this server, or ``""``."""
    if server.workers == 1:
        return ""
    if not subject.shared:
        return "per-process store, 2 processes"
    if subject.lag or "notify" in subject.name:
        return "relaxed mode: documented staleness across processes"
    return ""


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
    #: A run whose app meter was reset (gunicorn replaced the worker): no app figure.
    app_lost: bool = False
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
            counted = app_meter.read(port).since(before)
            if counted is None:
                self.app_lost = True
            else:
                self.app_requests += counted.requests
                self.app_cpu_ns += counted.cpu_ns
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
        if self.app_requests and not self.app_lost:
            usage["app"] = {
                "cpu_us": self.app_cpu_ns / self.app_requests / 1000,
                "requests": self.app_requests,
            }
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


def rotated(trials: list[Trial], index: int, repeats: int) -> list[Trial]:
    """The order of round ``index`` (from 0) of ``repeats``: the list from a
    starting trial, wrapping around, the starts spread evenly over the list.
    So each trial's place in its round moves from round to round, and a drift
    of the machine within rounds does not always fall on the same trials (a
    trial still follows the one before it in the list, except where the
    round starts)."""
    if not trials:
        return []
    start = index * len(trials) // max(repeats, 1) % len(trials)
    return trials[start:] + trials[:start]
