"""Background threads (wsgi_session.background) and the flush thread's idling.

An idle flush thread used to wake every ``interval`` (20 times a second by
default) to find nothing to write; each wake takes the GIL from the threads
serving requests. It now sleeps until a write is queued. These tests run
real threads with short intervals and wait with generous deadlines, so a
slow machine makes them slower, not flaky.
"""

from __future__ import annotations

import threading
import time
import typing as t

from wsgi_session.background import PeriodicTask
from wsgi_session.flusher import Flusher
from wsgi_session.record import SessionDiff
from wsgi_session.stores.memory import MemoryStore


def wait_until(condition: t.Callable[[], bool], timeout: float = 5.0) -> bool:
    """Whether ``condition()`` came true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.002)
    return False


def test_a_task_with_nothing_to_do_sleeps_until_woken() -> None:
    task = PeriodicTask("test-idle", 0.005, lambda: True, idle_until_woken=True)
    task.ensure_running()
    try:
        assert wait_until(lambda: task.runs == 1)
        time.sleep(0.2)  # 40 intervals
        assert task.runs == 1
        task.wake()
        assert wait_until(lambda: task.runs == 2)
        time.sleep(0.1)
        assert task.runs == 2  # one wake, one run
    finally:
        task.stop()
    assert not task.running


def test_a_task_with_work_left_and_a_plain_task_keep_their_interval() -> None:
    busy = PeriodicTask("test-busy", 0.005, lambda: False, idle_until_woken=True)
    plain = PeriodicTask("test-plain", 0.005, lambda: True)
    busy.ensure_running()
    plain.ensure_running()
    try:
        assert wait_until(lambda: busy.runs >= 10 and plain.runs >= 10)
    finally:
        busy.stop()
        plain.stop()


def test_a_wake_during_a_run_is_not_lost() -> None:
    woken_once = threading.Event()
    holder: list[PeriodicTask] = []

    def work() -> bool:
        if not woken_once.is_set():
            woken_once.set()
            holder[0].wake()  # work arrives while the run is under way
        return True

    task = PeriodicTask("test-race", 0.005, work, idle_until_woken=True)
    holder.append(task)
    task.ensure_running()
    try:
        assert wait_until(lambda: task.runs >= 2)
    finally:
        task.stop()


class _StopLandsBeforeTheClear(threading.Event):
    """An event whose first ``clear()`` lets ``stop()`` land just before it:
    the race of a stop between the loop's timed wait and its clear."""

    def __init__(self, task: PeriodicTask) -> None:
        super().__init__()
        self.task = task
        self.raced = False

    def clear(self) -> None:
        if not self.raced:
            self.raced = True
            self.task._stop.set()  # what stop() does, in its order
            self.set()
        super().clear()


def test_a_stop_between_the_wait_and_the_clear_is_not_lost() -> None:
    task = PeriodicTask("test-stop-race", 0.005, lambda: True, idle_until_woken=True)
    task._woken = _StopLandsBeforeTheClear(task)
    task.ensure_running()
    thread = task._thread
    assert thread is not None
    thread.join(timeout=3)
    assert not thread.is_alive()  # it saw the stop, instead of sleeping until a wake
    assert task.runs == 0


def test_stop_ends_an_idle_thread_at_once() -> None:
    task = PeriodicTask("test-stop", 3600, lambda: True, first_delay=0, idle_until_woken=True)
    task.ensure_running()
    assert wait_until(lambda: task.runs == 1)
    started = time.monotonic()
    task.stop(timeout=5)
    assert not task.running
    assert time.monotonic() - started < 4


def _write(n: int) -> SessionDiff:
    """A write of ``n`` that creates session ``s1`` if needed."""
    return SessionDiff(
        "s1", {"n": b"%d" % n}, frozenset(), clear=False, expires=4e9, absolute=None, longterm=False,
        created=1.0, create=True,
    )  # fmt: skip


def test_an_idle_flusher_writes_what_is_queued_later() -> None:
    store = MemoryStore()
    flusher = Flusher(store, interval=0.005)
    try:
        flusher.enqueue([_write(1)])
        assert wait_until(lambda: store.load("s1") is not None)
        assert wait_until(lambda: flusher.stats.pending == 0)
        runs = flusher._task.runs
        time.sleep(0.2)  # idle: 40 intervals, no run
        # At most one more: the run that wrote the diff may not have counted itself yet.
        assert flusher._task.runs <= runs + 1
        flusher.enqueue([_write(2)])
        assert wait_until(lambda: (record := store.load("s1")) is not None and record.values["n"] == b"2")
    finally:
        flusher.close()
