"""The benchmark's native profiler: Linux ``perf`` (benchmarks/recorders.py).

``perf script``'s text is written by hand where the right reading must be
known exactly; one test records a real child under a real ``perf`` to show
that only what the child switches on is sampled.
"""

from __future__ import annotations

import collections
import errno
import os
import sys
import textwrap
from pathlib import Path

import pytest

from benchmarks import recorders
from benchmarks.profiling import owner, summarize_cpu
from benchmarks.stacks import samples
from tests.services import service_unavailable

_COMPILED_SO = "/x/wsgi_session/3d8f__mypyc.cpython-311-x86_64-linux-gnu.so"
_LIBPYTHON = "/usr/lib/libpython3.11.so.1.0"
_MAIN = " 4242/4242  "  # as perf pads it
_SCRIPT = f"""\
{_MAIN}
\t7f0001 CPyDef_record___apply_diff ({_COMPILED_SO})
\t7f0002 CPyDef__exchange___RequestPath___serve ({_COMPILED_SO})
\t7f0003 _PyEval_EvalFrameDefault ({_LIBPYTHON})

{_MAIN}
\t7f0001 CPyDef_record___apply_diff ({_COMPILED_SO})
\t7f0002 CPyDef__exchange___RequestPath___serve ({_COMPILED_SO})
\t7f0003 _PyEval_EvalFrameDefault ({_LIBPYTHON})

{_MAIN}
\t7f0004 os_urandom_impl (inlined)
\t7f0005 _PyEval_EvalFrameDefault ({_LIBPYTHON})
\t7f0002 CPyDef__exchange___RequestPath___serve ({_COMPILED_SO})
\t7f0003 _PyEval_EvalFrameDefault ({_LIBPYTHON})

 4242/4250{"  "}
\t7f0006 pthread_cond_wait (/lib/libc.so.6)
"""
_MEASURED = {
    "case": "wsgi_session[memory] / new visitor",
    "requests": 1000,
    "seconds": 0.01,
    "recorder": "perf record -e cpu-clock",
}


def test_perf_script_text_becomes_py_spy_raw_stacks() -> None:
    raw = recorders.raw_stacks(_SCRIPT)
    stacks = {(thread, tuple(func for func, _ in frames)): count for thread, frames, count in samples(raw)}
    # Outermost first; the main thread's stacks rooted in the loop frame.
    loop = ("run_batch", "_PyEval_EvalFrameDefault", "RequestPath.serve")
    assert stacks == {
        ("MainThread", (*loop, "apply_diff")): 2,
        ("MainThread", (*loop, "_PyEval_EvalFrameDefault", "os_urandom_impl")): 1,
        ("thread-4250", ("pthread_cond_wait",)): 1,
    }


def test_perf_summary_names_interpreted_code_by_the_compiled_function_that_called_it() -> None:
    text = summarize_cpu(recorders.raw_stacks(_SCRIPT), _MEASURED)
    assert "3 samples of the request thread" in text  # the other thread is not the request's
    assert "perf read them from the kernel's timer without stopping the process" in text
    assert "| `record:apply_diff` | 66.7% |" in text
    assert "| interpreted Python called by `_exchange:RequestPath.serve` | 33.3% |" in text
    # With what it calls: the request path holds every sample.
    assert "| `_exchange:RequestPath.serve` | 100.0% |" in text


def test_a_compiled_function_called_from_interpreted_code_owns_its_own_time() -> None:
    frames = [
        ("run_batch", "benchmarks/cases.py"),
        ("RequestPath.serve", "wsgi_session/_exchange.py"),
        ("_PyEval_EvalFrameDefault", _LIBPYTHON),  # the app
        ("Session.__setitem__", "wsgi_session/session.py"),
        ("PyDict_SetItem", _LIBPYTHON),
    ]
    assert owner(frames) == "`session:Session.__setitem__`"
    assert owner(frames[:3]) == "interpreted Python called by `_exchange:RequestPath.serve`"
    # The part of the interpreter's loop that the C compiler moved out of line is the loop too.
    cold = [*frames[:2], ("_PyEval_EvalFrameDefault.cold", _LIBPYTHON)]
    assert owner(cold) == "interpreted Python called by `_exchange:RequestPath.serve`"


def test_a_sample_without_a_call_chain_is_left_out() -> None:
    script = f"{_MAIN} 7f0001\n\n{_MAIN}\n\t7f0001 CPyDef_record___apply_diff ({_COMPILED_SO})\n"
    assert recorders.raw_stacks(script).splitlines() == [
        f"thread (4242): MainThread;{recorders.LOOP_FRAME};CPyDef_record___apply_diff ({_COMPILED_SO}) 1"
    ]


def test_the_switch_fails_at_once_when_no_perf_is_listening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A child whose perf is gone (or that inherited a stale variable) must
    not block for good opening the control FIFO: nobody would ever read it."""
    os.mkfifo(tmp_path / recorders.CONTROL)
    os.mkfifo(tmp_path / recorders.ACK)
    monkeypatch.setenv(recorders.CONTROL_ENV, str(tmp_path))
    with pytest.raises(OSError) as caught, recorders.switch():
        pass
    assert caught.value.errno == errno.ENXIO
    monkeypatch.setenv(recorders.CONTROL_ENV, str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError), recorders.switch():
        pass
    monkeypatch.delenv(recorders.CONTROL_ENV)
    with recorders.switch() as sample:  # not under perf: a switch that does nothing
        sample(True)


_CHILD = """\
import hashlib, sys, time, zlib
sys.path.insert(0, {root!r})
from benchmarks.recorders import switch

data = bytes(range(256)) * 256

def burn(seconds, work):  # CPU seconds: what perf's cpu-clock samples
    end = time.process_time() + seconds
    while time.process_time() < end:
        work()

with switch() as sample:
    burn(0.3, lambda: zlib.compress(data))  # not sampled
    sample(True)
    burn(0.3, lambda: hashlib.sha256(data).digest())
    sample(False)
    burn(0.3, lambda: zlib.compress(data))  # not sampled
print("child done")
"""


def test_perf_samples_only_what_the_child_switches_on(tmp_path: Path) -> None:
    problem = recorders.perf_problem()
    if problem is not None:
        service_unavailable(problem)
    child = tmp_path / "child.py"
    child.write_text(textwrap.dedent(_CHILD.format(root=str(Path(__file__).resolve().parent.parent))))
    output, raw = recorders.perf([sys.executable, str(child)], tmp_path, timeout=120)
    assert output == "child done\n"
    libraries: collections.Counter[str] = collections.Counter()
    total = 0
    for thread, frames, count in samples(raw):
        assert thread == "MainThread"
        assert frames[0] == ("run_batch", "benchmarks/cases.py")
        total += count
        for library, marks in (("hashing", ("libcrypto", "_hashlib")), ("zlib", ("libz.", "zlib."))):
            if any(mark in path for _, path in frames for mark in marks):
                libraries[library] += count
    assert total > 150  # 0.3 s of CPU at 999 samples a second
    assert libraries["hashing"] > total / 2
    assert libraries["zlib"] == 0  # sampling was off while it compressed
