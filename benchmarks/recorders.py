"""Recording a profiled child from outside: py-spy, or Linux ``perf``.

Both record a child process that runs one in-process case in a loop
(:func:`benchmarks.profiling.child`), with nothing added inside it, and hand
back its stacks in py-spy's raw format (:mod:`benchmarks.stacks`), so the
same summaries read either.

**Pausing.** py-spy reads Python frames without stopping the process
(``--nonblocking``), but the C frames of the compiled build only with
``--native``, and for that it stops the process at each sample. A stopped
process is caught at its next entry into the kernel, so code that makes
system calls is over-counted: in a loop of ``os.urandom(24)`` (0.41 µs) and a
SHA-256 (0.46 µs), ``os.urandom`` drew 99 % of the paused samples and 36 % of
the unpaused ones. ``perf`` samples from the kernel's timer (``cpu-clock``,
so it needs no hardware counters) and unwinds each stack afterwards from a
copy of its top (``--call-graph dwarf``): the process never waits, and a C
function's share of the samples is its share of the time.

**What perf cannot name.** CPython 3.11 runs Python code inside its
interpreter loop, with no native frame per Python function (that came in
3.12), so interpreted code shows as the interpreter's own C functions. In
the memory-store cases that is the benchmark's app and loop and the
middleware's pure-Python ``SessionMiddleware.__call__`` (one call into the
compiled request path); :func:`raw_stacks` charges those samples to the loop.

The child under ``perf`` starts with sampling off (``--delay=-1``) and turns
it on for each batch of its measured loop only, through ``perf``'s control
FIFO (:func:`switch`), so imports, set-up and the emptying of the store
between batches (which the in-process benchmark does not time either) are
not in the profile.

``perf`` comes with Debian's ``linux-perf`` package and needs a kernel that
lets a user profile their own processes (``kernel.perf_event_paranoid`` at
most 2, the default).
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import typing as t
from pathlib import Path

#: py-spy's options for a case with round trips: a low rate, and
#: ``--nonblocking``, so the profiler (which needs CPU on the same 2 cores)
#: does not stretch the round trips it measures; ``--idle`` to see them.
IO_OPTIONS = ("--nonblocking", "--idle", "--rate", "200")
#: For a case without I/O: more often, and unpaused.
CPU_OPTIONS = ("--nonblocking", "--rate", "1000")
#: For a case without I/O on the compiled build when ``perf`` cannot run:
#: paused, so its shares of code that makes system calls are overstated.
NATIVE_OPTIONS = ("--native", "--rate", "200")
#: ``perf``'s samples per second: ``dwarf`` unwinding copies 16 KB of stack per sample,
#: so a few seconds at this rate stay within tens of megabytes.
RATE = 999
#: The environment variable that tells the child where ``perf``'s control and
#: acknowledgement FIFOs are (``control:ack``).
CONTROL_ENV = "BENCH_PERF_CONTROL"
#: The frame put under every sample of the measured loop's thread: it is what
#: marks a sample as one of the loop for the summaries (as the real
#: ``run_batch`` frame does in py-spy's stacks), and what interpreted code is
#: charged to.
LOOP_FRAME = "run_batch (benchmarks/cases.py)"


def py_spy(command: list[str], options: tuple[str, ...], cwd: Path, timeout: float) -> tuple[str, str]:
    """Run ``command`` under ``py-spy record``: its standard output, and its
    stacks (``--threads``, so each starts with its thread's label)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory() as directory:
        raw_path = Path(directory) / "profile.txt"
        recorder = [py_spy, "record", *options, "--threads", "--format", "raw", "-o", str(raw_path), "--"]
        completed = subprocess.run(
            [*recorder, *command], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
        if completed.returncode != 0 or not raw_path.exists():
            raise RuntimeError(f"py-spy failed: {completed.stderr[-1500:]}")
        return completed.stdout, raw_path.read_text()


def perf_available() -> bool:
    """Whether ``perf`` is installed and may sample this user's processes."""
    perf = shutil.which("perf")
    if perf is None:
        return False
    with tempfile.TemporaryDirectory() as directory:
        probe = [perf, "record", "-q", "-e", "cpu-clock", "-o", str(Path(directory) / "probe"), "--", "true"]
        try:
            completed = subprocess.run(probe, capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            return False
        return completed.returncode == 0


def perf_options(rate: int = RATE) -> tuple[str, ...]:
    """``perf record``'s options, as the report quotes them."""
    return ("-e", "cpu-clock", "-F", str(rate), "--call-graph", "dwarf,16384")


def perf(command: list[str], cwd: Path, timeout: float, rate: int = RATE) -> tuple[str, str]:
    """Run ``command`` under ``perf record`` with sampling off until the
    child turns it on (:func:`switch`); its standard output, and its
    stacks in py-spy's raw format."""
    executable = shutil.which("perf") or "perf"
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        control, ack, data = folder / "control", folder / "ack", folder / "perf.data"
        os.mkfifo(control)
        os.mkfifo(ack)
        recorder = [executable, "record", "-q", *perf_options(rate), "--delay=-1"]
        recorder += [f"--control=fifo:{control},{ack}", "-o", str(data), "--", *command]
        env = {**os.environ, CONTROL_ENV: f"{control}:{ack}"}
        completed = subprocess.run(
            recorder, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if completed.returncode != 0 or not data.exists():
            raise RuntimeError(f"perf record failed: {completed.stderr[-1500:]}")
        script = subprocess.run(
            [executable, "script", "-i", str(data), "-F", "pid,tid,ip,sym,dso"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if script.returncode != 0:
            raise RuntimeError(f"perf script failed: {script.stderr[-1500:]}")
        return completed.stdout, raw_stacks(script.stdout)


@contextlib.contextmanager
def switch() -> t.Iterator[t.Callable[[bool], None]]:
    """A switch that turns ``perf``'s sampling on (``True``) and off, when
    this process runs under :func:`perf`; otherwise one that does nothing."""
    fifos = os.environ.get(CONTROL_ENV)
    if not fifos:
        yield lambda on: None
        return
    control_path, ack_path = fifos.split(":")
    with open(control_path, "w") as control, open(ack_path) as ack:

        def turn(on: bool) -> None:
            control.write("enable\n" if on else "disable\n")
            control.flush()
            ack.readline()  # perf has done it

        try:
            yield turn
        finally:
            turn(False)


def raw_stacks(script: str) -> str:
    """``perf script -F pid,tid,ip,sym,dso`` output as py-spy raw stacks.

    A sample's header is ``pid/tid``, followed by its frames innermost
    first, ``address symbol (object)``; inlined functions share their
    caller's address. The thread whose id is the process's (the main
    thread, which runs the measured loop) is labelled ``MainThread`` and
    gets :data:`LOOP_FRAME` at its root; any other is ``thread-<tid>``.
    """
    counts: collections.Counter[str] = collections.Counter()
    for header, frames in _samples(script):
        pid, _, tid = header.partition("/")
        if pid == tid:
            line = [f"thread ({tid}): MainThread", LOOP_FRAME]
        else:
            line = [f"thread ({tid}): thread-{tid}"]
        line += reversed(frames)
        counts[";".join(line)] += 1
    return "\n".join(f"{stack} {count}" for stack, count in counts.items())


def _samples(script: str) -> t.Iterator[tuple[str, list[str]]]:
    """Each sample of ``perf script``'s text: its ``pid/tid`` and its frames
    (``symbol (object)``, innermost first, each on a line of its own that
    starts with a tab)."""
    header: str | None = None
    frames: list[str] = []
    for line in script.splitlines():
        if not line.strip():
            continue
        if not line.startswith("\t"):  # a header: `` pid/tid``, padded
            if header is not None:
                yield header, frames
            header, frames = line.split()[0], []
            continue
        _address, _, frame = line.strip().partition(" ")
        frames.append(frame.replace(";", ","))
    if header is not None:
        yield header, frames
