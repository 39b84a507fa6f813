"""Recording a profiled child from outside: py-spy, or Linux ``perf``.

Both record a child process that runs one in-process case in a loop
(:func:`benchmarks.profiling.child`) and hand back its stacks in py-spy's raw
format (:mod:`benchmarks.stacks`), so the same summaries read either. The
child's only part in it is to tell ``perf`` when its measured batches run.

**Pausing.** py-spy reads Python frames without stopping the process
(``--nonblocking``), but the C frames of the compiled build only with
``--native``, and for that it stops the process at each sample. A stopped
process is caught at its next entry into the kernel, so code that makes
system calls is over-counted: in a loop of ``os.urandom(24)`` (0.41 µs) and a
SHA-256 (0.46 µs), ``os.urandom`` drew 99 % of the paused samples and 36 % of
the unpaused ones. ``perf`` samples from the kernel's timer (``cpu-clock``,
so it needs no hardware counters) and unwinds each stack afterwards from a
copy of its top (``--call-graph dwarf``): the process never waits, and a C
function's share of the samples is its share of the time, the kernel's
included.

**What perf cannot name.** CPython 3.11 runs Python code inside its
interpreter loop, with no native frame per Python function (3.12 can add
them, with ``-X perf``), so interpreted code shows as the interpreter's own
C functions. In the memory-store cases that is the benchmark's loop, the
middleware's pure-Python ``SessionMiddleware.__call__`` (one call into the
compiled request path) and the app's view, which the compiled path calls;
:func:`benchmarks.profiling.owner` charges the first two to the loop and the
view as interpreted code called by the compiled function that called it.

The child under ``perf`` starts with sampling off (``--delay=-1``) and turns
it on for each batch of its measured loop only, through ``perf``'s control
FIFO (:func:`switch`), so imports, set-up and the emptying of the store
between batches (which the in-process benchmark does not time either) are
not in the profile.

``perf`` comes with Debian's ``linux-perf`` package. It must be allowed to
sample the kernel too, or system calls would be under-counted instead: run
as root, or with ``kernel.perf_event_paranoid`` at most 1 (at 2 an
unprivileged user's samples leave the kernel out; at 3, Debian's default,
there are none). :func:`perf_available` checks both.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import shutil
import signal
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
#: ``perf``'s samples per second. ``dwarf`` unwinding copies 16 KB of stack
#: per sample: an 8 s case writes about 130 MB to the temporary directory.
RATE = 999
#: The environment variable that tells the child which directory holds
#: ``perf``'s FIFOs (:data:`CONTROL` and :data:`ACK`).
CONTROL_ENV = "BENCH_PERF_FIFOS"
CONTROL, ACK = "control", "ack"
#: The frame put under every sample of the measured loop's thread: it is what
#: marks a sample as one of the loop for the summaries (as the real
#: ``run_batch`` frame does in py-spy's stacks).
LOOP_FRAME = "run_batch (benchmarks/cases.py)"


def py_spy(command: list[str], options: tuple[str, ...], cwd: Path, timeout: float) -> tuple[str, str]:
    """Run ``command`` under ``py-spy record``: its standard output, and its
    stacks (``--threads``, so each starts with its thread's label)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory() as directory:
        raw_path = Path(directory) / "profile.txt"
        recorder = [py_spy, "record", *options, "--threads", "--format", "raw", "-o", str(raw_path), "--"]
        code, output, errors = _run([*recorder, *command], cwd, timeout)
        if code != 0 or not raw_path.exists():
            raise RuntimeError(f"py-spy failed: {errors[-1500:]}")
        return output, raw_path.read_text()


def perf_available() -> bool:
    """Whether ``perf`` can record the way :func:`perf` does (see :func:`perf_problem`)."""
    return perf_problem() is None


@functools.cache
def perf_problem() -> str | None:
    """Why ``perf`` cannot record the way :func:`perf` does, or ``None`` if it
    can: installed, allowed to sample this user's processes, the kernel's
    part of them included (a user without the privilege gets user-space
    samples only, silently: the probe's recording says so), with the same
    options. Probed once per process."""
    executable = shutil.which("perf")
    if executable is None:
        return "perf is not installed (apt-get install linux-perf)"
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        try:
            code, _, errors = _run(_perf_record(executable, folder, ["true"]), folder, 60)
            if code != 0:
                return f"perf record failed: {errors.strip()[-300:]}"
            code, events, errors = _run([executable, "evlist", "-v", "-i", "perf.data"], folder, 60)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"perf could not run: {exc}"
        if code != 0:
            return f"perf evlist failed: {errors.strip()[-300:]}"
        if "exclude_kernel: 1" in events:
            return (
                "perf may not sample the kernel here: run as root, or lower kernel.perf_event_paranoid to 1"
            )
    return None


def perf_options(rate: int = RATE) -> tuple[str, ...]:
    """``perf record``'s sampling options, as the report quotes them."""
    return ("-e", "cpu-clock", "-F", str(rate), "--call-graph", "dwarf,16384")


def perf(command: list[str], cwd: Path, timeout: float, rate: int = RATE) -> tuple[str, str]:
    """Run ``command`` under ``perf record`` with sampling off until the
    child turns it on (:func:`switch`); its standard output, and its
    stacks in py-spy's raw format."""
    executable = shutil.which("perf") or "perf"
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        env = {**os.environ, CONTROL_ENV: str(folder)}
        code, output, errors = _run(_perf_record(executable, folder, command, rate), cwd, timeout, env)
        if code != 0 or not (folder / "perf.data").exists():
            raise RuntimeError(f"perf record failed: {errors[-1500:]}")
        script = [executable, "script", "-i", str(folder / "perf.data"), "-F", "pid,tid,ip,sym,dso"]
        code, text, errors = _run(script, folder, timeout)
        if code != 0:
            raise RuntimeError(f"perf script failed: {errors[-1500:]}")
        return output, raw_stacks(text)


def _perf_record(executable: str, folder: Path, command: list[str], rate: int = RATE) -> list[str]:
    """``perf record`` of ``command`` into ``folder``: sampling off until the
    control FIFO turns it on, and no copies of the sampled libraries in
    ``~/.debug`` (``-N``)."""
    os.mkfifo(folder / CONTROL)
    os.mkfifo(folder / ACK)
    return [
        *(executable, "record", "-q", "-N", *perf_options(rate), "--delay=-1"),
        f"--control=fifo:{folder / CONTROL},{folder / ACK}",
        *("-o", str(folder / "perf.data"), "--", *command),
    ]


def _run(
    command: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run ``command`` in a session of its own: its exit code, output and
    errors. On a timeout (or any other exception while waiting, such as
    :class:`KeyboardInterrupt`) the whole session is killed, the recorder and
    the child it started, and the exception goes on."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        output, errors = process.communicate(timeout=timeout)
    except BaseException:  # a timeout, or Ctrl-C, which the session no longer receives
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return process.returncode, output, errors


@contextlib.contextmanager
def switch() -> t.Iterator[t.Callable[[bool], None]]:
    """A switch that turns ``perf``'s sampling on (``True``) and off, when
    this process runs under :func:`perf`; otherwise one that does nothing.

    The FIFOs are opened without waiting: if ``perf`` is gone (or the
    variable was left over from another run) there is nobody at the other
    end, and this raises instead of blocking for good. An end of file on
    the acknowledgement FIFO means ``perf`` has exited, and raises too."""
    folder = os.environ.get(CONTROL_ENV)
    if not folder:
        yield lambda on: None
        return
    # Without a reader, opening for writing without waiting fails (ENXIO).
    control = os.open(Path(folder) / CONTROL, os.O_WRONLY | os.O_NONBLOCK)
    try:
        ack = os.open(Path(folder) / ACK, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        os.close(control)
        raise
    try:
        os.set_blocking(control, True)
        os.set_blocking(ack, True)

        def turn(on: bool) -> None:
            os.write(control, b"enable\n" if on else b"disable\n")
            answer = b""
            while b"\n" not in answer:  # perf writes "ack\n" and its C string's NUL
                chunk = os.read(ack, 64)
                if not chunk:
                    raise RuntimeError("perf exited without acknowledging a command")
                answer += chunk

        try:
            yield turn
        except BaseException:
            with contextlib.suppress(OSError, RuntimeError):  # keep the first error
                turn(False)
            raise
        turn(False)
    finally:
        os.close(control)
        os.close(ack)


def raw_stacks(script: str) -> str:
    """``perf script -F pid,tid,ip,sym,dso`` output as py-spy raw stacks.

    A sample's header is ``pid/tid``, followed by its frames innermost
    first, ``address symbol (object)``; inlined functions share their
    caller's address. The thread whose id is its process's (the main
    thread, which runs the measured loop; the profiled child starts no
    processes of its own) is labelled ``MainThread`` and gets
    :data:`LOOP_FRAME` at its root; any other is ``thread-<tid>``. A sample
    without frames (no call chain) is left out.
    """
    counts: collections.Counter[str] = collections.Counter()
    for header, frames in _samples(script):
        if not frames:
            continue
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


def compiled_note(perf: bool, native: bool) -> str:
    """What the report says of how the compiled build's profiles were
    recorded, given whether ``perf`` and py-spy ``--native`` recorded any."""
    return (_COMPILED_NOTE + (_PERF_NOTE if perf else "") + (_NATIVE_NOTE if native else "")).rstrip()


_COMPILED_NOTE = (
    "*Compiled build:* mypyc's C functions are charged as the functions they were compiled "
    "from (a small one the C compiler inlined counts for its caller). The Redis case, py-spy "
    "`--nonblocking`, sees no native frames: there compiled code counts for its nearest Python "
    "caller (the middleware, the benchmark app). "
)
_PERF_NOTE = (
    "Memory-store cases headed `perf record` were sampled by Linux `perf` "
    "(`benchmarks/recorders.py`), which does not stop the process. "
)
_NATIVE_NOTE = (
    "Those headed `py-spy record --native` (where `perf` could not run) were sampled by py-spy, "
    "which pauses the process for each sample, and a paused process stops at its next entry "
    "into the kernel: code that makes a system call (the new visitor's `os.urandom`, the app's "
    "tag) draws more samples than its time (`benchmarks/pieces.py` times those pieces alone)."
)
