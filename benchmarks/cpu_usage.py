"""CPU time and context switches of the processes under load, from ``/proc``.

Requests per second on a shared two-core machine say how fast a subject was,
not why. Under gunicorn every process on the path competes for the same cores:
the worker (or workers), the store's server and ``wrk`` itself. What each of
them spent per request explains a result and survives a noisy neighbour
better than the rate does, since CPU time is charged to whoever used it.

Three groups are metered around each measured ``wrk`` run:

* ``worker``: the gunicorn master and every process below it, all threads;
  also its context switches (voluntary and involuntary, summed over the
  threads: a thread that waits for a socket or for the GIL gives up the CPU);
* ``store``: the store's server processes by name (``redis-server``,
  ``postgres``), whatever else they served meanwhile, which on this machine
  is nothing;
* ``wrk``: the load generator, as the children this process has waited for.

Linux only: elsewhere (no ``/proc``) :func:`process_usage` returns ``None``
and nothing is reported. Clock-tick resolution (10 ms) is why the figures are
summed over a whole measured run, then divided by its requests. A process that
ends between two readings takes its counts with it, and a thread its context
switches (its CPU time stays with the process); here none do: gunicorn's
workers and threads, and a PostgreSQL backend per pooled connection, live as
long as the server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import typing as t
from pathlib import Path

_PROC = Path("/proc")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_SWITCH_FIELDS = ("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")

#: The store's server processes by the subject's store name.
STORE_PROCESSES = {"redis": "redis-server", "postgresql": "postgres"}


@dataclasses.dataclass(frozen=True)
class Usage:
    """CPU seconds in user and kernel mode, and context switches."""

    user: float = 0.0
    system: float = 0.0
    switches: int = 0

    @property
    def cpu(self) -> float:
        return self.user + self.system

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.user + other.user, self.system + other.system, self.switches + other.switches)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.user - other.user, self.system - other.system, self.switches - other.switches)


def process_usage(pid: int) -> Usage | None:
    """What process ``pid`` has used so far, all its threads together
    (``None`` if it is gone, or there is no ``/proc``)."""
    try:
        # The command name in parentheses may hold spaces: split after it.
        fields = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        switches = sum(_thread_switches(task) for task in (_PROC / str(pid) / "task").iterdir())
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    # Fields 14 and 15 of stat (utime, stime), counted after the name's ")".
    return Usage(int(fields[11]) / _TICK, int(fields[12]) / _TICK, switches)


def _thread_switches(task: Path) -> int:
    try:
        lines = (task / "status").read_text().splitlines()
    except FileNotFoundError:  # the thread ended meanwhile
        return 0
    return sum(int(line.split()[1]) for line in lines if line.startswith(_SWITCH_FIELDS))


def _processes() -> t.Iterator[tuple[int, int, str]]:
    """``(pid, parent pid, command name)`` of every process."""
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        yield int(entry.name), int(stat.rsplit(")", 1)[1].split()[1]), name


def tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for child, parent, _name in _processes():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def named(name: str) -> list[int]:
    """Every process whose command name is ``name``."""
    return [pid for pid, _parent, comm in _processes() if comm == name]


def waited_children() -> Usage:
    """What this process's finished, waited-for children used in all."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Usage(usage.ru_utime, usage.ru_stime, usage.ru_nvcsw + usage.ru_nivcsw)


class Meter:
    """Sums what each group of processes uses over the runs it measures.

    :param groups: each group's name and how to find its processes now.
    """

    def __init__(self, groups: dict[str, t.Callable[[], list[int]]]) -> None:
        self._groups = groups
        self.used: dict[str, Usage] = {name: Usage() for name in (*groups, "wrk")}

    def _read(self) -> dict[str, dict[int, Usage]]:
        readings: dict[str, dict[int, Usage]] = {}
        for name, find in self._groups.items():
            usages = {pid: process_usage(pid) for pid in find()}
            readings[name] = {pid: usage for pid, usage in usages.items() if usage is not None}
        return readings

    @contextlib.contextmanager
    def measuring(self) -> t.Iterator[None]:
        """Add what the groups use during the ``with`` block."""
        before, children = self._read(), waited_children()
        yield
        after = self._read()
        self.used["wrk"] += waited_children() - children
        for name, now in after.items():
            then = before[name]
            for pid, usage in now.items():
                self.used[name] += usage - then.get(pid, Usage())

    def per_request(self, requests: int) -> dict[str, dict[str, float]]:
        """CPU µs (and context switches) per request of each group."""
        if requests <= 0:
            return {}
        return {
            name: {"cpu_us": used.cpu / requests * 1e6, "switches": used.switches / requests}
            for name, used in self.used.items()
        }


def available() -> bool:
    """Whether this system has a readable ``/proc`` with this process in it."""
    return process_usage(os.getpid()) is not None


def columns(usage: dict[str, dict[str, float]]) -> tuple[str, str, str]:
    """The worker's CPU µs and context switches per request, and the
    store server's CPU µs, as table cells (``""`` where not measured)."""
    worker, store = usage.get("worker"), usage.get("store")
    return (
        f"{worker['cpu_us']:,.0f}" if worker else "",
        f"{worker['switches']:.1f}" if worker else "",
        f"{store['cpu_us']:,.0f}" if store else "",
    )
