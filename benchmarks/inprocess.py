"""In-process cost of a session middleware, in microseconds per request.

No HTTP server and no sockets: each *case* is a WSGI callable called in a
tight loop with a copy of a prepared environ, a no-op ``start_response``, and
the body iterated and closed as a server would. What is left is the Python
cost of the middleware itself, which is what this script compares:

* ``bare / plain``: a plain WSGI app, no middleware (the baseline);
* ``wsgi_session[memory] / ...``: the same kind of app behind
  :class:`~wsgi_session.SessionMiddleware` with the default
  :class:`~wsgi_session.stores.MemoryStore`, for each workload.

Run it from the repository root::

    python benchmarks/inprocess.py                 # 20,000 requests x 5 runs
    python benchmarks/inprocess.py --requests 5000 --runs 3 --only read
    python benchmarks/inprocess.py --profile       # cProfile each case instead

Extending it: a :class:`Subject` is something that wraps an inner WSGI app
(another store, another session library); a :class:`Workload` is what the
inner app does with its session and which environ it is sent. Add one to
:data:`SUBJECTS` or :data:`WORKLOADS`; :func:`build_cases` pairs them.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import os
import platform
import pstats
import statistics
import sys
import time
import typing as t
from pathlib import Path

from werkzeug.test import EnvironBuilder

if t.TYPE_CHECKING:
    from collections.abc import MutableMapping

    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# Run from a checkout without installing: make ``import wsgi_session`` work.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsgi_session import SessionConfig, SessionMiddleware

SECRET = "benchmark secret, not for production use!"
BODY = [b"ok"]
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "2")]

Save = t.Callable[["MutableMapping[str, t.Any]"], None]


def _no_op_start_response(status: str, headers: list[tuple[str, str]], exc_info: t.Any = None) -> t.Any:
    return None


# -- what is measured -----------------------------------------------------------


@dataclasses.dataclass
class Target:
    """One subject wrapped around one inner app, ready to be called.

    :param app: the WSGI callable to measure.
    :param clear: forget every stored session (called between runs of
        workloads that create sessions, so the store does not grow).
    :param close: release the subject's resources at the end.
    """

    app: WSGIApplication
    clear: t.Callable[[], None] = lambda: None
    close: t.Callable[[], None] = lambda: None


@dataclasses.dataclass(frozen=True)
class Subject:
    """A session implementation under test.

    :param name: shown in the table, e.g. ``"wsgi_session[redis]"``.
    :param wrap: builds a :class:`Target` around an inner WSGI app.
    :param environ_key: where the inner app finds the session; ``None`` for
        the bare baseline, which has none.
    :param save: called by the inner app after it writes, for libraries that
        need an explicit save (Beaker's ``session.save()``).
    """

    name: str
    wrap: t.Callable[[WSGIApplication], Target]
    environ_key: str | None = "session"
    save: Save | None = None


@dataclasses.dataclass(frozen=True)
class Workload:
    """What each request of a case does.

    :param name: shown in the table.
    :param make_app: builds the inner WSGI app from the subject's
        ``environ_key`` and ``save``.
    :param needs_session: only subjects with a session can run it.
    :param returning: send the cookie of a session created by a priming
        request (a returning visitor); otherwise send no cookie.
    :param creates: every request creates a session; the store is cleared
        between runs.
    :param wants_set_cookie: whether a steady-state response should carry
        ``Set-Cookie`` (checked once before measuring).
    """

    name: str
    make_app: t.Callable[[str | None, Save | None], WSGIApplication]
    needs_session: bool = True
    returning: bool = False
    creates: bool = False
    wants_set_cookie: bool = False


@dataclasses.dataclass
class Case:
    """A subject running a workload, with the environ its requests copy."""

    subject: Subject
    workload: Workload
    target: Target
    environ: WSGIEnvironment

    @property
    def label(self) -> str:
        return f"{self.subject.name} / {self.workload.name}"


# -- the inner apps -----------------------------------------------------------------


def plain_app(key: str | None, save: Save | None) -> WSGIApplication:
    """Never touches a session (the baseline, and the pass-through case)."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", HEADERS)
        return BODY

    return app


def read_app(key: str | None, save: Save | None) -> WSGIApplication:
    """Reads a counter; writes it only if the session has none (the priming
    request), so a returning visitor's request is read-only."""
    assert key is not None

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        session = environ[key]
        if session.get("n") is None:
            session["n"] = 0
            if save is not None:
                save(session)
        start_response("200 OK", HEADERS)
        return BODY

    return app


def increment_app(key: str | None, save: Save | None) -> WSGIApplication:
    """Increments ``session["n"]`` on every request."""
    assert key is not None

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        session = environ[key]
        session["n"] = session.get("n", 0) + 1
        if save is not None:
            save(session)
        start_response("200 OK", HEADERS)
        return BODY

    return app


def new_visitor_app(key: str | None, save: Save | None) -> WSGIApplication:
    """Writes one key, so a visitor without a cookie gets a new session."""
    assert key is not None

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        session = environ[key]
        session["seen"] = True
        if save is not None:
            save(session)
        start_response("200 OK", HEADERS)
        return BODY

    return app


# -- subjects ---------------------------------------------------------------------------


def bare(app: WSGIApplication) -> Target:
    """No middleware at all."""
    return Target(app)


def wsgi_session_memory(app: WSGIApplication) -> Target:
    """:class:`SessionMiddleware` with its default :class:`MemoryStore`."""
    middleware = SessionMiddleware(app, SessionConfig(secret_keys=[SECRET]))
    return Target(middleware, clear=middleware.advanced.clear_store, close=middleware.close)


#: Everything measured. Future subjects (``wsgi_session[redis]``,
#: ``wsgi_session[sqlite]``, Beaker, Flask-Session) go here.
SUBJECTS: list[Subject] = [
    Subject("bare", bare, environ_key=None),
    Subject("wsgi_session[memory]", wsgi_session_memory),
]

WORKLOADS: list[Workload] = [
    Workload("plain", plain_app, needs_session=False),
    Workload("untouched", plain_app),
    Workload("read", read_app, returning=True),
    Workload("increment", increment_app, returning=True),
    Workload("new visitor", new_visitor_app, creates=True, wants_set_cookie=True),
]


# -- building cases ---------------------------------------------------------------------


def base_environ() -> WSGIEnvironment:
    """A typical browser GET, built once per case."""
    builder = EnvironBuilder(
        path="/",
        headers={
            "Host": "localhost",
            "User-Agent": "Mozilla/5.0 (benchmark)",
            "Accept": "text/html",
            "Accept-Language": "en",
        },
    )
    try:
        return builder.get_environ()
    finally:
        builder.close()


def call(app: WSGIApplication, environ: WSGIEnvironment) -> tuple[str, list[tuple[str, str]]]:
    """One request, recording the status and headers (not for the hot loop)."""
    seen: list[t.Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: t.Any = None) -> t.Any:
        seen[:] = [status, headers]
        return lambda data: None

    body = app(environ.copy(), start_response)
    try:
        for _chunk in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return seen[0], seen[1]


def set_cookies(headers: list[tuple[str, str]]) -> list[str]:
    """The ``name=value`` part of each ``Set-Cookie`` header."""
    return [value.split(";", 1)[0] for key, value in headers if key.lower() == "set-cookie"]


def prepare(subject: Subject, workload: Workload) -> Case:
    """Build the case, prime it, and check it measures what it claims."""
    target = subject.wrap(workload.make_app(subject.environ_key, subject.save))
    environ = base_environ()
    if workload.returning:
        status, headers = call(target.app, environ)
        cookies = set_cookies(headers)
        if not cookies:
            raise RuntimeError(f"{subject.name}: the priming request set no cookie ({status})")
        environ["HTTP_COOKIE"] = "; ".join(cookies)
    case = Case(subject, workload, target, environ)
    check(case)
    return case


def check(case: Case) -> None:
    """One steady-state request: 200, and Set-Cookie only where expected."""
    status, headers = call(case.target.app, case.environ)
    if not status.startswith("200"):
        raise RuntimeError(f"{case.label}: status {status}")
    has_cookie = bool(set_cookies(headers))
    if has_cookie != case.workload.wants_set_cookie:
        state = "sends" if has_cookie else "does not send"
        raise RuntimeError(f"{case.label}: the steady-state response {state} Set-Cookie")


def build_cases(only: str | None = None) -> list[Case]:
    """Every subject paired with every workload it can run. The bare
    baseline is always included; ``only`` filters the rest by label."""
    cases = []
    for subject in SUBJECTS:
        for workload in WORKLOADS:
            if workload.needs_session == (subject.environ_key is None):
                continue
            label = f"{subject.name} / {workload.name}"
            if only and subject.environ_key is not None and only not in label:
                continue
            cases.append(prepare(subject, workload))
    return cases


# -- measuring ---------------------------------------------------------------------------


def run_batch(app: WSGIApplication, environ: WSGIEnvironment, requests: int) -> int:
    """Nanoseconds for ``requests`` calls, each with a fresh environ copy,
    its body iterated and closed."""
    copy = environ.copy
    start_response = _no_op_start_response
    started = time.perf_counter_ns()
    for _ in range(requests):
        body = app(copy(), start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return time.perf_counter_ns() - started


def measure(cases: list[Case], requests: int, runs: int) -> dict[str, list[float]]:
    """µs/request of each run of each case. Runs are interleaved (run 1 of
    every case, then run 2...) so drift in machine speed hits all cases."""
    results: dict[str, list[float]] = {case.label: [] for case in cases}
    for case in cases:  # warm-up: caches, memo dicts, branch predictors
        run_batch(case.target.app, case.environ, max(1, requests // 10))
    for _ in range(runs):
        for case in cases:
            if case.workload.creates:
                case.target.clear()
            gc.collect()
            elapsed = run_batch(case.target.app, case.environ, requests)
            results[case.label].append(elapsed / requests / 1000)
    return results


def profile(cases: list[Case], requests: int, top: int) -> None:
    """cProfile each session case for one batch and print the top functions."""
    for case in cases:
        if case.subject.environ_key is None:
            continue
        if case.workload.creates:
            case.target.clear()
        profiler = cProfile.Profile()
        profiler.runcall(run_batch, case.target.app, case.environ, requests)
        print(f"\n=== {case.label}: {requests} requests (times include cProfile overhead) ===")
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.strip_dirs().sort_stats("tottime").print_stats(top)


# -- reporting -------------------------------------------------------------------------


def machine() -> str:
    """Python version, platform and CPU, for the report header."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"Python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.platform()}\nCPU: {cpu}, {os.cpu_count()} logical CPUs"
    )


def report(results: dict[str, list[float]], baseline: str) -> None:
    """Print median, min and max µs/request, and the cost over ``baseline``."""
    bare_median = statistics.median(results[baseline])
    width = max(len(label) for label in results)
    print(
        f"{'case':<{width}}  {'median':>8}  {'min':>8}  {'max':>8}  {'added':>8}  {'ratio':>6}"
        f"\n{'':<{width}}  {'µs/req':>8}  {'µs/req':>8}  {'µs/req':>8}  {'µs/req':>8}  {'x bare':>6}"
    )
    print("-" * (width + 50))
    for label, runs in results.items():
        median = statistics.median(runs)
        added = "" if label == baseline else f"{median - bare_median:+8.2f}"
        print(
            f"{label:<{width}}  {median:8.2f}  {min(runs):8.2f}  {max(runs):8.2f}  "
            f"{added:>8}  {median / bare_median:6.1f}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="In-process cost of a session middleware, in µs/request.")
    parser.add_argument("--requests", type=int, default=20_000, help="requests per run (20000)")
    parser.add_argument("--runs", type=int, default=5, help="runs per case; the median is reported (5)")
    parser.add_argument("--only", help="measure only cases whose label contains this (plus bare)")
    parser.add_argument("--profile", action="store_true", help="cProfile one run of each case instead")
    parser.add_argument("--top", type=int, default=25, help="functions shown per profile (25)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.runs < 1:
        parser.error("--requests and --runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(machine())
    cases = build_cases(args.only)
    try:
        if args.profile:
            profile(cases, args.requests, args.top)
            return
        print(f"{args.requests} requests x {args.runs} runs per case, in process, gc enabled\n")
        results = measure(cases, args.requests, args.runs)
        report(results, baseline=cases[0].label)
    finally:
        for case in cases:
            case.target.close()


if __name__ == "__main__":
    main()
