"""Cases: a subject running a workload, built, primed, checked and timed.

The building blocks of :mod:`benchmarks.inprocess` (and of the memory and
profiling measurements, which drive the same cases): :func:`build_cases`
pairs subjects with the workloads of their role, :func:`prepare` primes a
returning visitor's cookie, :func:`check` verifies a case measures what it
claims, :func:`run_batch` is the timed loop and :func:`calibrate` picks the
requests per run.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import typing as t

from werkzeug.test import EnvironBuilder

from .apps import drained, parse_body
from .subjects import Subject, Target, Unavailable, all_subjects
from .workloads import IN_PROCESS, Workload

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication, WSGIEnvironment

    from .settings import Namespace

#: Requests per run are kept within these bounds whatever the calibration says.
MIN_REQUESTS, MAX_REQUESTS = 20, 200_000


def _no_op_start_response(status: str, headers: list[tuple[str, str]], exc_info: t.Any = None) -> t.Any:
    return None


@dataclasses.dataclass
class Case:
    """A subject running a workload, with the environ its requests copy."""

    subject: Subject
    workload: Workload
    target: Target
    environ: WSGIEnvironment
    set_cookie: bool = False
    requests: int = 0

    @property
    def label(self) -> str:
        return f"{self.subject.name} / {self.workload.name}"


def base_environ(path: str) -> WSGIEnvironment:
    """A typical browser GET of ``path``, built once per case."""
    builder = EnvironBuilder(
        path=path,
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


def call(app: WSGIApplication, environ: WSGIEnvironment) -> tuple[str, list[tuple[str, str]], bytes]:
    """One request, recording the status, headers and body (not for the hot loop)."""
    seen: list[t.Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: t.Any = None) -> t.Any:
        seen[:] = [status, headers]
        return lambda data: None

    content = drained(app(environ.copy(), start_response))
    return seen[0], seen[1], content


def set_cookies(headers: list[tuple[str, str]]) -> list[str]:
    """The ``name=value`` part of each ``Set-Cookie`` header."""
    return [value.split(";", 1)[0].strip() for key, value in headers if key.lower() == "set-cookie"]


def prepare(subject: Subject, workload: Workload, target: Target) -> Case:
    """Build the case, prime it, and check it measures what it claims."""
    environ = base_environ(workload.path)
    if workload.returning:
        status, headers, _ = call(target.app, environ)
        cookies = set_cookies(headers)
        if not cookies:
            raise RuntimeError(f"{subject.name}: the priming request set no cookie ({status})")
        environ["HTTP_COOKIE"] = "; ".join(cookies)
    case = Case(subject, workload, target, environ)
    check(case)
    return case


def check(case: Case) -> None:
    """Two steady-state requests: 200, the right counter, and (for
    wsgi_session) ``Set-Cookie`` only where the workload needs it.

    :raises RuntimeError: naming what is wrong.
    """
    bodies = []
    for _ in range(2):
        status, headers, body = call(case.target.app, case.environ)
        if not status.startswith("200"):
            raise RuntimeError(f"{case.label}: status {status}")
        bodies.append(body)
        case.set_cookie = bool(set_cookies(headers))
    workload = case.workload
    if workload.check:
        check_bodies(case, bodies)
    if case.subject.ours and case.set_cookie != workload.wants_set_cookie:
        state = "sends" if case.set_cookie else "does not send"
        raise RuntimeError(f"{case.label}: the steady-state response {state} Set-Cookie")


def check_bodies(case: Case, bodies: list[bytes]) -> None:
    """Two steady-state answers: the same session, and the right counters."""
    try:
        (first, first_tag), (second, second_tag) = (parse_body(body) for body in bodies)
    except ValueError as exc:
        raise RuntimeError(f"{case.label}: {exc}") from None
    workload = case.workload
    if workload.returning and first_tag != second_tag:
        raise RuntimeError(f"{case.label}: the session was replaced: {bodies}")
    if workload.check == "read" and (first, second) != (0, 0):
        raise RuntimeError(f"{case.label}: a read-only request answered {bodies}")
    if workload.check == "inc":
        # A cookie session's counter lives in the cookie, which the harness
        # sends unchanged: each request increments the same value.
        step = 0 if case.subject.store == "cookie" or workload.creates else 1
        if second != first + step:
            raise RuntimeError(f"{case.label}: the counter did not go up by {step}: {bodies}")


def selected(subject: Subject, workload: Workload, only: str | None) -> bool:
    """Whether the pair runs: roles match; ``only`` filters session cases by label."""
    if workload.role != subject.role:
        return False
    return not only or subject.role != "session" or only in f"{subject.name} / {workload.name}"


def build_cases(
    namespace: Namespace,
    subjects: list[Subject] | None = None,
    workloads: list[Workload] | None = None,
    only: str | None = None,
) -> tuple[list[Case], dict[str, str]]:
    """Every subject paired with every workload of its role, and the
    subjects that could not run, with the reason. A subject's returning
    workloads share one target; a workload that creates sessions gets its
    own, in a child namespace, so clearing its store between runs does not
    touch the others' sessions."""
    cases: list[Case] = []
    skipped: dict[str, str] = {}
    for subject in subjects if subjects is not None else all_subjects():
        pairs = [w for w in (workloads or IN_PROCESS) if selected(subject, w, only)]
        targets: dict[bool, Target] = {}
        try:
            for workload in pairs:
                if workload.creates not in targets:
                    own = namespace.child("new") if workload.creates else namespace
                    targets[workload.creates] = subject.build(own)
                cases.append(prepare(subject, workload, targets[workload.creates]))
        except Unavailable as exc:
            skipped[subject.name] = str(exc)
        except Exception as exc:
            skipped[subject.name] = f"{type(exc).__name__}: {exc}"
        if subject.name in skipped:
            cases = [case for case in cases if case.subject is not subject]
            for target in targets.values():
                _close_quietly(target)
    return cases, skipped


def close_cases(cases: list[Case]) -> None:
    """Close every target once."""
    seen: set[int] = set()
    for case in cases:
        if id(case.target) not in seen:
            seen.add(id(case.target))
            _close_quietly(case.target)


def _close_quietly(target: Target) -> None:
    try:
        target.close()
    except Exception as exc:
        print(f"warning: closing a target failed: {exc!r}", file=sys.stderr)


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


def calibrate(case: Case, run_time: float) -> int:
    """Requests per run so that a run lasts about ``run_time`` seconds
    (doubling a warm-up batch until it takes 20 ms)."""
    requests = 4
    while True:
        elapsed = run_batch(case.target.app, case.environ, requests) / 1e9
        if elapsed >= 0.02 or requests >= MAX_REQUESTS:
            break
        requests *= 2
    if case.workload.creates:
        case.target.clear()
    return max(MIN_REQUESTS, min(MAX_REQUESTS, int(run_time * requests / elapsed)))
