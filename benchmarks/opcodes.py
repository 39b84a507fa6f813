"""Bytecode instructions per request, by function: the work a request does.

Timings on a shared machine move by 10 % from one run to the next; the
number of bytecode instructions a request executes does not. This traces a
few requests of one in-process case (``sys.settrace`` with opcode events,
after warm-up requests) and prints, per Python function, the instructions
and calls per request::

    python benchmarks/opcodes.py                              # memory store, increment
    python benchmarks/opcodes.py --subject beaker-memory --workload "new visitor"

Code that runs in C (``json``, ``hmac``, dict and string methods) counts as
the one instruction that called it, so the total is a floor of the work, not
a timing: compare it between commits and between workloads.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
import types
import typing as t
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cases import build_cases, close_cases, run_batch
from benchmarks.cleanup import sweep
from benchmarks.settings import Namespace
from benchmarks.subjects import Subject, by_slug
from benchmarks.workloads import IN_PROCESS, Workload


@dataclasses.dataclass
class Trace:
    """Instructions and calls per request, by ``file:function``."""

    requests: int
    instructions: collections.Counter[str]
    calls: collections.Counter[str]

    def per_request(self) -> list[tuple[str, float, float]]:
        """``(function, instructions, calls)`` per request, most instructions first."""
        return [
            (name, count / self.requests, self.calls[name] / self.requests)
            for name, count in self.instructions.most_common()
        ]

    @property
    def total(self) -> float:
        """Bytecode instructions per request, all functions together."""
        return sum(self.instructions.values()) / self.requests

    @property
    def total_calls(self) -> float:
        """Python function calls per request (calls into C are not counted)."""
        return sum(self.calls.values()) / self.requests


def _name(code: types.CodeType) -> str:
    """``file:qualified.name``: short, and unique enough within the suite."""
    return f"{Path(code.co_filename).name}:{code.co_qualname}"


def trace(slug: str, workload_name: str, requests: int = 20, warmup: int = 50) -> Trace:
    """Trace ``requests`` requests of one in-process case (after ``warmup``).

    :raises SystemExit: no such subject or workload, or the case cannot run here.
    """
    workloads = [w for w in IN_PROCESS if w.name == workload_name]
    if not workloads:
        names = ", ".join(repr(w.name) for w in IN_PROCESS)
        raise SystemExit(f"no in-process workload {workload_name!r}; there are {names}")
    try:
        subject = by_slug(slug)
    except KeyError:
        raise SystemExit(f"no subject {slug!r} (see the slugs in benchmarks/subjects.py)") from None
    namespace = Namespace.new()
    try:
        return _trace_case(namespace, subject, workloads, requests, warmup)
    finally:
        sweep(namespace)


def _trace_case(
    namespace: Namespace, subject: Subject, workloads: list[Workload], requests: int, warmup: int
) -> Trace:
    """Build the case, warm it up and trace it; close it whatever happens."""
    cases, skipped = build_cases(namespace, [subject], workloads)
    if not cases:
        raise SystemExit(f"cannot run {subject.slug} / {workloads[0].name}: {skipped or 'not for it'}")
    case = cases[0]
    instructions: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()

    def tracer(frame: types.FrameType, event: str, arg: t.Any) -> t.Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            instructions[_name(frame.f_code)] += 1
        elif event == "call":
            calls[_name(frame.f_code)] += 1
        return tracer

    try:
        run_batch(case.target.app, case.environ, warmup)
        previous = sys.gettrace()  # a debugger's or coverage's tracer, put back afterwards
        sys.settrace(tracer)
        try:
            run_batch(case.target.app, case.environ, requests)
        finally:
            sys.settrace(previous)
    finally:
        close_cases(cases)
    # The loop itself is not the request's work.
    del instructions["cases.py:run_batch"], calls["cases.py:run_batch"]
    return Trace(requests, instructions, calls)


def main(argv: list[str] | None = None) -> None:
    """The command line: trace one case and print its busiest functions."""
    parser = argparse.ArgumentParser(description="Bytecode instructions per request, by function.")
    parser.add_argument("--subject", default="ws-mem", help="a subject's slug (ws-mem)")
    parser.add_argument("--workload", default="increment", help="an in-process workload (increment)")
    parser.add_argument("--top", type=int, default=25, help="functions listed (25)")
    args = parser.parse_args(argv)
    result = trace(args.subject, args.workload)
    print(
        f"{args.subject} / {args.workload}: {result.total:,.0f} instructions "
        f"and {result.total_calls:.0f} Python calls per request"
    )
    for name, count, calls in result.per_request()[: args.top]:
        print(f"{count:7.0f} {calls:5.1f}  {name}")


if __name__ == "__main__":
    main()
