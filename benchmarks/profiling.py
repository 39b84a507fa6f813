"""Where the time of a request goes: profiles of three in-process cases.

A child process runs one in-process case in a loop for a few seconds while
``py-spy`` (or ``perf``, see below) samples it from outside (no
instrumentation in the process, so the numbers are not inflated the way
cProfile's are), with ``--idle`` so that time blocked on a socket is seen
too. Three cases are profiled:

``wsgi_session[redis] / increment`` (strict mode)
    Each sample of the request thread inside the measured loop is put in one
    bucket by its innermost frame: blocked on the Redis socket (the round
    trips themselves), blocked on a lock or condition (waiting for a group
    commit's turn), or CPU, attributed to wsgi_session (per module),
    redis-py, werkzeug or the benchmark's app; standard-library code is
    counted for the library frame that called it. The same process times
    every round trip from its send to its parsed reply, and reads how long
    Redis itself spent per command (``INFO commandstats``, before and after).
    The flush thread's samples are reported on their own.

``wsgi_session[memory] / increment`` and ``/ new visitor``
    No I/O at all: the samples are the CPU cost of the middleware itself,
    attributed to the wsgi_session *function* whose own lines ran (standard
    library and C calls counted for the wsgi_session function that made
    them), the benchmark's app, or the rest. On the compiled build they are
    recorded by Linux ``perf`` where it is installed
    (:mod:`benchmarks.recorders`), else by py-spy ``--native``; mypyc's C
    functions (``CPyDef_<module>___<Class>___<method>``) are charged as the
    Python functions they were compiled from.

Run it from the repository root::

    python benchmarks/profiling.py              # prints the Markdown summary
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import subprocess
import sys
import time
import typing as t
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import recorders
from benchmarks.settings import ROOT
from benchmarks.stacks import module_of, samples
from wsgi_session._mypyc import is_compiled

#: The profiled cases: (subject slug, workload constant of benchmarks.workloads).
CASES = (("ws-redis", "INCREMENT"), ("ws-mem", "INCREMENT"), ("ws-mem", "NEW_VISITOR"))
_REDIS_PY_READS = {"_read_from_socket", "read_response", "readline", "read", "_read_response"}
#: CPython's C function that runs interpreted code (a native stack's only trace of it).
_INTERPRETER_LOOP = "_PyEval_EvalFrameDefault"
#: The lean path's function that blocks in ``recv``.
_LEAN_READS = {"_fill"}
_LIBRARIES = (
    ("wsgi_session/", None),
    ("redis/", "redis-py"),
    ("werkzeug/", "werkzeug"),
    ("benchmarks/", "benchmark app"),
)


def child(seconds: float, slug: str, workload_name: str) -> None:
    """Run one case for about ``seconds`` and print requests and time as JSON."""
    from benchmarks import workloads
    from benchmarks.cases import build_cases, calibrate, close_cases, run_batch
    from benchmarks.cleanup import sweep
    from benchmarks.settings import Namespace
    from benchmarks.subjects import by_slug

    subject = by_slug(slug)
    namespace = Namespace.new()
    try:
        cases, skipped = build_cases(namespace, [subject], [getattr(workloads, workload_name)])
        if not cases:
            raise SystemExit(f"cannot build the case: {skipped}")
        case = cases[0]
        try:
            batch = calibrate(case, 0.2)
            waits = _time_replies() if subject.store == "redis" else {}
            server_before = _redis_command_stats() if subject.store == "redis" else {}
            # Until ``seconds`` have passed, not a number of batches: the batch was
            # sized under the profiler, whose pauses can make it far too small.
            # The batches are timed (and, under perf, sampled) alone: without
            # the emptying of the store between them, as in benchmarks.inprocess.
            requests, batches_ns, started = 0, 0, time.perf_counter()
            with recorders.switch() as sample:
                while requests == 0 or time.perf_counter() - started < seconds:
                    if case.workload.creates:
                        case.target.clear()
                    sample(True)
                    batches_ns += run_batch(case.target.app, case.environ, batch)
                    sample(False)
                    requests += batch
            elapsed = batches_ns / 1e9
            server = _server_time(server_before, _redis_command_stats()) if server_before else {}
            # Commands of the request path only (not connection set-up or this module's INFO).
            waits = {name: values for name, values in waits.items() if len(values) >= requests // 2}
            per_request = {name: sum(values) / requests / 1000 for name, values in waits.items()}
            medians = {name: statistics.median(values) / 1000 for name, values in waits.items()}
            result = {
                "case": f"{subject.name} / {case.workload.name}",
                "requests": requests,
                "seconds": elapsed,
                "waits_us": per_request,
                "medians_us": medians,
                "server_us": server,
            }
            print(json.dumps(result))
        finally:
            close_cases(cases)
    finally:
        sweep(namespace)


def _redis_command_stats() -> dict[str, tuple[int, int]]:
    """``(calls, µs)`` per command, as Redis counts them (all clients)."""
    import redis

    from benchmarks.settings import REDIS_URL

    client = redis.Redis.from_url(REDIS_URL)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {
        name.removeprefix("cmdstat_").upper(): (int(value["calls"]), int(value["usec"]))
        for name, value in stats.items()
    }


def _server_time(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, float]:
    """µs Redis spent per call of each command that ran between two readings."""
    spent = {}
    for name, (calls, usec) in after.items():
        calls_before, usec_before = before.get(name, (0, 0))
        if calls > calls_before and name in ("EVALSHA", "HGET", "HGETALL", "GET"):
            spent[name] = (usec - usec_before) / (calls - calls_before)
    return spent


def _time_replies() -> dict[str, list[int]]:
    """Time every round trip of the store's lean Redis path (from the start
    of the send to the parsed replies), by command name; returns the dict
    that fills up."""
    from wsgi_session.stores._resp import LeanPath

    waits: dict[str, list[int]] = collections.defaultdict(list)
    lean_call = LeanPath.call

    def call(self: t.Any, commands: t.Any, read_only: bool = False) -> t.Any:
        started = time.perf_counter_ns()
        try:
            return lean_call(self, commands, read_only)
        finally:
            waits[commands[0][0].decode()].append(time.perf_counter_ns() - started)

    LeanPath.call = call  # type: ignore[method-assign]
    return waits


def bucket(frames: list[tuple[str, str]]) -> str:
    """The bucket of one sample (see the module docstring)."""
    qualified, path = frames[-1]
    func = qualified.rsplit(".", 1)[-1]
    if ("redis/" in path and func in _REDIS_PY_READS) or (path.endswith("_resp.py") and func in _LEAN_READS):
        return "round trip: waiting for the reply"
    if func in {"sendall", "send_packed_command"} and ("redis/" in path or path.endswith("socket.py")):
        return "round trip: in the send syscall (the kernel runs Redis)"
    if path.endswith("threading.py") and func in {"wait", "acquire", "_wait_for_tstate_lock"}:
        return "blocked: lock / condition wait"
    for _func, path in reversed(frames):
        for marker, name in _LIBRARIES:
            if marker in path:
                if name is None:
                    return f"CPU: wsgi_session.{str(module_of(path)).replace('/', '.')}"
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
    for thread, frames, count in samples(raw):
        if thread.startswith("wsgi-session"):
            flush[bucket(frames)] += count
            continue
        if not any(func == "run_batch" for func, _ in frames):
            continue
        total += count
        buckets[bucket(frames)] += count
        for name in _functions(frames):
            inclusive[name] += count
    if not total:
        return "py-spy recorded no samples of the measured loop."
    per_request = seconds / requests * 1e6
    waits, medians = measured.get("waits_us", {}), measured.get("medians_us", {})
    waited = sum(waits.values())
    wait_text = " + ".join(
        f"`{name}` {value:.0f} µs (median {medians.get(name, 0):.0f})" for name, value in waits.items()
    )
    server = measured.get("server_us", {})
    server_text = ", ".join(f"`{name}` {value:.1f} µs" for name, value in server.items())
    lines = [
        _recorded(measured, total),
        "",
        f"Timed in the same process, the round trips from the start of each send to its parsed reply, "
        f"per request: {wait_text} = {waited:.0f} µs of the {per_request:.0f} µs; the remaining "
        f"{per_request - waited:.0f} µs are Python in the request thread (and waiting for the GIL).",
    ]
    if server_text:
        lines += [
            "",
            f"Time Redis itself spent per call (`INFO commandstats` before and after): {server_text} "
            "(`EVALSHA` is the merge script).",
        ]
    lines += [
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


def _recorded(measured: dict[str, t.Any], sample_count: int) -> str:
    requests, seconds = measured["requests"], measured["seconds"]
    return (
        f"`{measured['recorder']}` of the in-process `{measured['case']}` loop: "
        f"{requests:,} requests in {seconds:.1f} s under the profiler "
        f"({seconds / requests * 1e6:.1f} µs/request), {sample_count:,} samples of the request thread."
    )


def _functions(frames: list[tuple[str, str]]) -> set[str]:
    """The wsgi_session functions (``module:function``) anywhere in a stack."""
    return {f"{module}:{func}" for func, path in frames if (module := module_of(path)) is not None}


def owner(frames: list[tuple[str, str]]) -> str:
    """Who a CPU sample's time is charged to: the innermost wsgi_session
    function (``module:function``), the benchmark app, or ``other``.

    In a ``perf`` stack (:mod:`benchmarks.recorders`) interpreted Python has
    no frames of its own, only the interpreter's loop: time under such a
    loop inside a compiled function (the app's view, called by the request
    path; pure-Python library code) is charged as interpreted code that
    function called."""
    interpreted = False
    for func, path in reversed(frames):
        module = module_of(path)
        if module is not None:
            name = f"`{module}:{func.rsplit('.', 1)[-1] if '<' in func else func}`"
            return f"interpreted Python called by {name}" if interpreted else name
        if "benchmarks/" in path:
            return "the benchmark app and loop"
        # (``.cold``: the part of it the C compiler moved out of line)
        interpreted = interpreted or func.split(".", 1)[0] == _INTERPRETER_LOOP
    return "other"


def summarize_cpu(raw: str, measured: dict[str, t.Any], top: int = 14) -> str:
    """The Markdown summary of a case without I/O: CPU per owning function,
    and the heaviest wsgi_session functions with what they call."""
    owners: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for thread, frames, count in samples(raw):
        if thread.startswith("wsgi-session") or not any(func == "run_batch" for func, _ in frames):
            continue
        total += count
        owners[owner(frames)] += count
        for name in _functions(frames):
            inclusive[name] += count
    if not total:
        return "The profiler recorded no samples of the measured loop."
    recorder = measured.get("recorder", "")
    if recorder.startswith("perf"):
        how = (
            "perf read them from the kernel's timer without stopping the process; interpreted "
            "code has no frames of its own there: the loop and `SessionMiddleware.__call__` "
            "count as the benchmark's loop, the app's view as interpreted Python called by "
            "the request path"
        )
    elif "--nonblocking" in recorder:
        how = "py-spy read them without pausing the process"
    else:
        how = (
            "py-spy paused the process for each, which stretches the time under the profiler "
            "and overstates code that makes system calls"
        )
    lines = [
        _recorded(measured, total),
        "",
        f"Shares of the request thread's samples ({how}): multiply by the in-process median for µs.",
        "",
        "| whose own lines ran (self time) | share |",
        "| :--- | ---: |",
    ]
    shown = owners.most_common(top)
    lines += [f"| {name} | {count / total:.1%} |" for name, count in shown]
    rest = total - sum(count for _, count in shown)
    if rest:
        lines.append(f"| {len(owners) - len(shown)} more | {rest / total:.1%} |")
    lines += ["", "| wsgi_session function, with what it calls | share |", "| :--- | ---: |"]
    lines += [f"| `{name}` | {count / total:.1%} |" for name, count in inclusive.most_common(top)]
    return "\n".join(lines)


def record_case(seconds: float, slug: str, workload_name: str) -> tuple[str, dict[str, t.Any]]:
    """Record the child with py-spy, or with ``perf`` for a case without I/O
    on the compiled build where ``perf`` can run (py-spy ``--native`` where
    it cannot, or fails); the Markdown summary and what the child measured."""
    command = [sys.executable, "-m", "benchmarks.profiling", "--child", str(seconds)]
    command += ["--case", slug, "--workload", workload_name]
    options = recorders.IO_OPTIONS if slug == "ws-redis" else recorders.CPU_OPTIONS
    recorded = None
    if is_compiled() and options is recorders.CPU_OPTIONS:
        options = recorders.NATIVE_OPTIONS
        if recorders.perf_available():
            try:
                recorded = recorders.perf(command, ROOT, timeout=seconds + 300)
                recorder = f"perf record {' '.join(recorders.perf_options())}"
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                print(f"perf failed, recording with py-spy --native instead: {exc}", file=sys.stderr)
    if recorded is None:
        recorded = recorders.py_spy(command, options, ROOT, timeout=seconds + 120)
        recorder = f"py-spy record {' '.join(options)}"
    output, raw = recorded
    lines = [line for line in output.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"the profiled child printed no result: {output[-500:]}")
    measured = json.loads(lines[-1])
    measured["recorder"] = recorder
    summary = summarize(raw, measured) if measured["waits_us"] else summarize_cpu(raw, measured)
    return summary, measured


def run(seconds: float = 8.0) -> str:
    """The profile summaries of :data:`CASES` (a pointer to the cProfile
    option when they cannot be recorded)."""
    sections, used = [], set()
    for slug, workload_name in CASES:
        try:
            summary, measured = record_case(seconds, slug, workload_name)
        except (OSError, RuntimeError, subprocess.SubprocessError, ValueError) as exc:
            return (
                f"The profiler could not run ({exc}); "
                "`python benchmarks/inprocess.py --profile` profiles every case with cProfile."
            )
        sections.append(f"### {measured['case']}\n\n{summary}")
        used.add(measured["recorder"])
    if is_compiled():
        perf, native = (any(word in recorder for recorder in used) for word in ("perf record", "--native"))
        sections.insert(0, recorders.compiled_note(perf, native))
    return "\n\n".join(sections)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Profile in-process cases with py-spy or perf.")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long to sample each case (8)")
    parser.add_argument("--child", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child, args.case, args.workload)
        return
    print(run(args.seconds))


if __name__ == "__main__":
    main()
