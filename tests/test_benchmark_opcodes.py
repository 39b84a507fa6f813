"""The opcode counter of the benchmark suite (``benchmarks/opcodes.py``)."""

from __future__ import annotations

import sys
import types

import pytest

from benchmarks.opcodes import trace
from wsgi_session._mypyc import is_compiled

pytestmark = pytest.mark.skipif(
    is_compiled(), reason="the opcode counter counts Python bytecode: the compiled build runs none"
)


def test_a_write_is_more_work_than_a_read_and_the_loop_is_not_counted() -> None:
    read = trace("ws-mem", "read", requests=5, warmup=5)
    increment = trace("ws-mem", "increment", requests=5, warmup=5)
    functions = {name for name, _, _ in read.per_request()}
    assert "session.py:Session._load" in functions
    assert "cases.py:run_batch" not in functions
    # Every request loads its session once, whatever it does with it.
    assert {name: calls for name, _, calls in read.per_request()}["session.py:Session._load"] == 1
    # The increment also encodes and merges its change: strictly more work.
    assert increment.total > read.total > 0
    assert "record.py:apply_diff" in {name for name, _, _ in increment.per_request()}
    assert "record.py:apply_diff" not in functions


def test_an_unknown_workload_or_subject_is_refused_not_traced_as_something_else() -> None:
    with pytest.raises(SystemExit, match="no in-process workload 'incremnet'"):
        trace("ws-mem", "incremnet")
    with pytest.raises(SystemExit, match="no subject 'ws-nope'"):
        trace("ws-nope", "read")


def test_a_tracer_that_was_installed_before_is_put_back() -> None:
    def outer(frame: types.FrameType, event: str, arg: object) -> None:
        return None

    previous = sys.gettrace()
    sys.settrace(outer)
    try:
        trace("ws-mem", "read", requests=2, warmup=2)
        assert sys.gettrace() is outer
    finally:
        sys.settrace(previous)
