"""Memory: the RSS of a process holding 100,000 cached sessions of 1 KB each.

Each measurement runs in a fresh child process: build the middleware, serve
one request, collect garbage and read the RSS (``VmRSS`` of
``/proc/self/status``); then serve ``--sessions`` new visitors, each storing
a distinct 1,024-character string, collect garbage and read the RSS again.
The growth divided by the sessions held is the cost of one cached session;
minus the 1,024 bytes of its data, what the library adds per session (its
id, token memo, record, dict and cache bookkeeping).

Subjects: wsgi_session's :class:`~wsgi_session.stores.MemoryStore` (the
default store) with room for every session, the same with the default
``cache_max_entries`` (100,000: how many does it really keep?), and Beaker's
memory backend for comparison.

Run it from the repository root::

    python benchmarks/memory.py                      # 100,000 sessions
    python benchmarks/memory.py --sessions 20000
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import subprocess
import sys
import time
import typing as t
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.apps import BLOB_1K
from benchmarks.settings import ROOT, SECRET

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

DATA_BYTES = len(BLOB_1K)
LIBRARIES = ("wsgi_session[memory]", "wsgi_session[memory], default limit", "beaker[memory]")


@dataclasses.dataclass
class MemoryResult:
    """One library holding ``sessions`` sessions.

    :param held: how many sessions the store reports holding at the end.
    :param rss_before: bytes, after one request.
    :param rss_after: bytes, after all of them.
    """

    library: str
    sessions: int
    held: int
    rss_before: int
    rss_after: int
    seconds: float

    @property
    def per_session(self) -> float:
        """RSS growth per session held, in bytes."""
        return (self.rss_after - self.rss_before) / max(1, self.held)

    @property
    def overhead(self) -> float:
        """Bytes per session beyond its 1 KB of data."""
        return self.per_session - DATA_BYTES

    def as_dict(self) -> dict[str, t.Any]:
        return {**dataclasses.asdict(self), "per_session": self.per_session, "overhead": self.overhead}


def rss() -> int:
    """This process's resident set size, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _writer(key: str, save: bool) -> WSGIApplication:
    """An app storing a distinct 1 KB string in each visitor's session."""
    serial = iter(range(10**9))

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        session = environ[key]
        session["blob"] = f"{BLOB_1K[:-8]}{next(serial):08d}"
        if save:
            session.save()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return app


def _build(library: str, sessions: int) -> tuple[WSGIApplication, t.Callable[[], int]]:
    """The app of ``library`` and a function counting the sessions it holds."""
    if library.startswith("wsgi_session"):
        from wsgi_session import SessionConfig, SessionMiddleware

        # The cache is sharded and each shard evicts at its share of
        # cache_max_entries: give room to spare, except in the variant that
        # shows how many the default limit really holds.
        limit = {} if "default" in library else {"cache_max_entries": 2 * sessions}
        config = SessionConfig(secret_keys=[SECRET], **limit)
        middleware = SessionMiddleware(_writer("session", save=False), config)
        return middleware, middleware.advanced.count
    from beaker.container import MemoryNamespaceManager
    from beaker.middleware import SessionMiddleware as BeakerMiddleware

    options = {"session.type": "memory", "session.secret": SECRET, "session.auto": False}
    return BeakerMiddleware(_writer("beaker.session", save=True), options), lambda: len(
        MemoryNamespaceManager.namespaces.dict
    )


def child(library: str, sessions: int) -> MemoryResult:
    """Measure in this process (a fresh one: see :func:`measure`)."""
    from benchmarks.cases import base_environ, run_batch

    app, held = _build(library, sessions)
    environ = base_environ("/")
    run_batch(app, environ, 1)
    gc.collect()
    before = rss()
    started = time.perf_counter()
    run_batch(app, environ, sessions)
    seconds = time.perf_counter() - started
    gc.collect()
    return MemoryResult(library, sessions, held() - 1, before, rss(), seconds)


def measure(library: str, sessions: int) -> MemoryResult:
    """Run :func:`child` in a new Python process and return its result."""
    command = [sys.executable, "-m", "benchmarks.memory", "--child", library, "--sessions", str(sessions)]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{library}: the child failed:\n{completed.stderr[-2000:]}")
    fields = json.loads(completed.stdout.strip().splitlines()[-1])
    return MemoryResult(**{field.name: fields[field.name] for field in dataclasses.fields(MemoryResult)})


def run(sessions: int = 100_000) -> tuple[list[MemoryResult], dict[str, str]]:
    """Every library's result, and the ones that could not run."""
    results, skipped = [], {}
    for library in LIBRARIES:
        try:
            results.append(measure(library, sessions))
        except (RuntimeError, subprocess.SubprocessError) as exc:
            skipped[library] = str(exc)
    return results, skipped


def report(results: list[MemoryResult], skipped: dict[str, str]) -> None:
    """Print the RSS numbers."""
    columns = f"{'sessions':>9} {'RSS before':>11} {'RSS after':>10} {'per session':>12} {'beyond data':>12}"
    width = max((len(r.library) for r in results), default=7)
    print(f"{'library':<{width}} {columns}")
    for r in results:
        print(
            f"{r.library:<{width}} {r.held:>9,} {r.rss_before / 2**20:9.1f} MB {r.rss_after / 2**20:8.1f} MB "
            f"{r.per_session:10,.0f} B {r.overhead:10,.0f} B"
        )
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="RSS of cached 1 KB sessions.")
    parser.add_argument("--sessions", type=int, default=100_000, help="sessions to create (100000)")
    parser.add_argument("--child", choices=LIBRARIES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.sessions).as_dict()))
        return
    report(*run(args.sessions))


if __name__ == "__main__":
    main()
