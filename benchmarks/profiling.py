"""Where the time of a Redis strict increment goes, beyond its round trips.

A child process runs the in-process ``wsgi_session[redis] / increment`` case
in a loop for a few seconds while ``py-spy`` samples it from outside (no
instrumentation in the process, so the numbers are not inflated the way
cProfile's are), with ``--idle`` so that time blocked on the socket is seen
too. Each sample of the request thread inside the measured loop is put in
one bucket by its innermost frame:

* blocked on the Redis socket (reading replies, sending commands): the
  round trips themselves (on loopback, mostly Redis itself and the
  scheduling of its process on the shared cores);
* blocked on a lock or condition (waiting for a group commit's turn);
* CPU, attributed to the innermost frame of wsgi_session (per module),
  redis-py, werkzeug or the benchmark's app; standard-library code is
  counted for the library frame that called it.

The flush thread's samples are reported on their own. Without py-spy the
same case is profiled with cProfile instead (deterministic, but with its
overhead).

Run it from the repository root::

    python benchmarks/profiling.py              # prints the Markdown summary
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.settings import ROOT

CASE_SLUG = "ws-redis"
#: Samples per second: low, and ``--nonblocking``, so the profiler (which needs
#: CPU on the same 2 cores) slows the process down little.
RATE = 200
_FRAME = re.compile(r"^(?P<func>.*) \((?P<path>.*):(?P<line>\d+)\)$")
_LIBRARIES = (
    ("wsgi_session/", None),
    ("redis/", "redis-py"),
    ("werkzeug/", "werkzeug"),
    ("benchmarks/", "benchmark app"),
)


def child(seconds: float) -> None:
    """Run the case for about ``seconds`` and print requests and time as JSON."""
    from benchmarks.cases import build_cases, calibrate, close_cases, run_batch
    from benchmarks.cleanup import sweep
    from benchmarks.settings import Namespace
    from benchmarks.subjects import by_slug
    from benchmarks.workloads import INCREMENT

    namespace = Namespace.new()
    try:
        cases, skipped = build_cases(namespace, [by_slug(CASE_SLUG)], [INCREMENT])
        if not cases:
            raise SystemExit(f"cannot build the case: {skipped}")
        case = cases[0]
        try:
            batch = calibrate(case, 0.2)
            waits = _time_replies()
            requests, started = 0, time.perf_counter()
            for _ in range(max(1, int(seconds / 0.2))):
                run_batch(case.target.app, case.environ, batch)
                requests += batch
            elapsed = time.perf_counter() - started
            per_request = {name: sum(values) / requests / 1000 for name, values in waits.items()}
            medians = {name: statistics.median(values) / 1000 for name, values in waits.items()}
            print(
                json.dumps(
                    {"requests": requests, "seconds": elapsed, "waits_us": per_request, "medians_us": medians}
                )
            )
        finally:
            close_cases(cases)
    finally:
        sweep(namespace)


def _time_replies() -> dict[str, list[int]]:
    """Time every redis-py round trip (from the start of the send to the
    parsed first reply), by command name; returns the dict that fills up."""
    import redis.connection

    waits: dict[str, list[int]] = collections.defaultdict(list)
    sent: dict[int, tuple[str, int]] = {}
    send, read = redis.connection.Connection.send_packed_command, redis.connection.Connection.read_response

    def send_packed_command(self: t.Any, command: t.Any, check_health: bool = True) -> None:
        started = time.perf_counter_ns()
        first = command if isinstance(command, (bytes, bytearray)) else bytes(command[0])
        sent[id(self)] = (first.split(b"\r\n", 3)[2].decode(errors="replace"), started)
        send(self, command, check_health)

    def read_response(self: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
        try:
            return read(self, *args, **kwargs)
        finally:
            name, started = sent.pop(id(self), ("", 0))
            if name:  # the first reply of a send: its round trip
                waits[name].append(time.perf_counter_ns() - started)

    redis.connection.Connection.send_packed_command = send_packed_command  # type: ignore[method-assign]
    redis.connection.Connection.read_response = read_response  # type: ignore[method-assign]
    return waits


def _frames(stack: str) -> tuple[str, list[tuple[str, str]]]:
    """A py-spy raw stack: the thread's name, and its frames (func, path) outermost first."""
    label, *frames = stack.split(";")
    thread = label.split(": ", 1)[1] if ": " in label else label
    parsed = []
    for frame in frames:
        match = _FRAME.match(frame)
        parsed.append((match["func"], match["path"]) if match else (frame, ""))
    return thread, parsed


def bucket(frames: list[tuple[str, str]]) -> str:
    """The bucket of one sample (see the module docstring)."""
    qualified, path = frames[-1]
    func = qualified.rsplit(".", 1)[-1]
    if "redis/" in path and func in {
        "_read_from_socket",
        "read_response",
        "readline",
        "read",
        "_read_response",
    }:
        return "round trip: waiting for the reply"
    if func in {"sendall", "send_packed_command"} and ("redis/" in path or path.endswith("socket.py")):
        return "round trip: in the send syscall (the kernel runs Redis)"
    if path.endswith("threading.py") and func in {"wait", "acquire", "_wait_for_tstate_lock"}:
        return "blocked: lock / condition wait"
    for _func, path in reversed(frames):
        for marker, name in _LIBRARIES:
            if marker in path:
                if name is None:
                    module = path.split("wsgi_session/", 1)[1].removesuffix(".py").replace("/", ".")
                    return f"CPU: wsgi_session.{module}"
                return f"CPU: {name}"
    return "CPU: other"


def summarize(raw: str, measured: dict[str, t.Any]) -> str:
    """The Markdown summary of a py-spy raw (collapsed stacks) recording and
    of what the child measured (``requests``, ``seconds``, ``waits_us``)."""
    requests, seconds = measured["requests"], measured["seconds"]
    buckets: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    flush: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        thread, frames = _frames(stack)
        if thread.startswith("wsgi-session"):
            flush[bucket(frames)] += count
            continue
        if not any(func == "run_batch" for func, _ in frames):
            continue
        total += count
        buckets[bucket(frames)] += count
        seen = set()
        for func, path in frames:
            if "wsgi_session/" in path:
                name = f"{path.split('wsgi_session/', 1)[1]}:{func}"
                if name not in seen:
                    seen.add(name)
                    inclusive[name] += count
    if not total:
        return "py-spy recorded no samples of the measured loop."
    per_request = seconds / requests * 1e6
    waits, medians = measured.get("waits_us", {}), measured.get("medians_us", {})
    waited = sum(waits.values())
    wait_text = " + ".join(
        f"`{name}` {value:.0f} µs (median {medians.get(name, 0):.0f})" for name, value in waits.items()
    )
    lines = [
        f"`py-spy record --nonblocking --idle --rate {RATE}` of the in-process "
        f"`wsgi_session[redis] / increment` loop: {requests:,} requests in {seconds:.1f} s under the "
        f"profiler ({per_request:.0f} µs/request), {total:,} samples of the request thread.",
        "",
        f"Timed in the same process, the round trips from the start of each send to its parsed reply, "
        f"per request: {wait_text} = {waited:.0f} µs of the {per_request:.0f} µs; the remaining "
        f"{per_request - waited:.0f} µs are Python in the request thread (and waiting for the GIL).",
        "",
        "| where the request thread's time goes | share | µs/request |",
        "| :--- | ---: | ---: |",
    ]
    for name, count in buckets.most_common():
        lines.append(f"| {name} | {count / total:.1%} | {per_request * count / total:.0f} |")
    lines += [
        "",
        "Heaviest wsgi_session functions, inclusive of what they call:",
        "",
        "| function | share |",
        "| :--- | ---: |",
    ]
    for name, count in inclusive.most_common(12):
        lines.append(f"| `{name}` | {count / total:.1%} |")
    if flush:
        flush_total = sum(flush.values())
        parts = ", ".join(f"{name} {count / flush_total:.0%}" for name, count in flush.most_common(4))
        lines += ["", f"Flush thread: {flush_total:,} samples ({parts})."]
    return "\n".join(lines)


def with_py_spy(seconds: float) -> tuple[str, dict[str, float]]:
    """Record the child with py-spy; the Markdown summary and the buckets' shares."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory() as directory:
        raw_path = Path(directory) / "profile.txt"
        command = [
            py_spy,
            "record",
            "--nonblocking",
            "--idle",
            "--threads",
            "--rate",
            str(RATE),
            "--format",
            "raw",
        ]
        command += [
            "-o",
            str(raw_path),
            "--",
            sys.executable,
            "-m",
            "benchmarks.profiling",
            "--child",
            str(seconds),
        ]
        completed = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 120, check=False
        )
        if completed.returncode != 0 or not raw_path.exists():
            raise RuntimeError(f"py-spy failed: {completed.stderr[-1500:]}")
        lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"the profiled child printed no result: {completed.stdout[-500:]}")
        measured = json.loads(lines[-1])
        return summarize(raw_path.read_text(), measured), measured


def run(seconds: float = 8.0) -> str:
    """The profile summary (py-spy; cProfile when py-spy cannot run)."""
    try:
        return with_py_spy(seconds)[0]
    except (OSError, RuntimeError, subprocess.SubprocessError, ValueError) as exc:
        return (
            f"py-spy could not profile ({exc}); "
            "`python benchmarks/inprocess.py --profile --only redis` profiles with cProfile."
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Profile the Redis strict increment in process with py-spy.")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long to sample (8)")
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child)
        return
    print(run(args.seconds))


if __name__ == "__main__":
    main()
