"""Background threads that start in the process that serves, not before.

A thread started at import or construction time does not survive ``fork()``:
under ``gunicorn --preload`` the app is built in the master and the workers
would inherit a dead thread. :class:`PeriodicTask` therefore starts on first
use (:meth:`PeriodicTask.ensure_running`), and forgets its thread in a forked
child (``os.register_at_fork``) so the child starts its own.

A task's function may raise anything: the error is logged and the loop goes on.
"""

from __future__ import annotations

import logging
import os
import threading
import typing as t
import weakref

log = logging.getLogger(__name__)

_tasks: weakref.WeakSet[PeriodicTask] = weakref.WeakSet()


def _forget_threads_after_fork() -> None:
    for task in list(_tasks):
        task._reset_after_fork()


os.register_at_fork(after_in_child=_forget_threads_after_fork)


class PeriodicTask:
    """Run ``function`` every ``interval`` seconds on a daemon thread.

    :param name: the thread's name (shows in py-spy and logs).
    :param interval: seconds between runs.
    :param function: the work; exceptions are logged, never fatal.
    :param first_delay: seconds before the first run; default ``interval``.
    :param idle_until_woken: when ``function`` returns ``True`` (nothing left
        to do), the thread sleeps until :meth:`wake` instead of waking every
        ``interval``: an idle process's thread then costs nothing, and does
        not take the GIL from the threads serving requests. The run after a
        wake still comes ``interval`` seconds later, so work queued in that
        window is done together.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        function: t.Callable[[], object],
        first_delay: float | None = None,
        idle_until_woken: bool = False,
    ) -> None:
        self.name = name
        self.interval = interval
        self.first_delay = interval if first_delay is None else first_delay
        self._function = function
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._idle_until_woken = idle_until_woken
        self._woken = threading.Event()
        self.runs = 0
        self.errors = 0
        #: Whether this process has started the thread (a plain attribute: read
        #: on every request; no liveness check).
        self.started = False
        _tasks.add(self)

    @property
    def running(self) -> bool:
        """Whether the thread is alive in this process."""
        return self._thread is not None and self._thread.is_alive()

    def ensure_running(self) -> None:
        """Start the thread if this process has none (cheap when it has)."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                thread.start()
                self._thread = thread
                self.started = True

    def wake(self) -> None:
        """There is work: a thread idling until woken runs again after
        ``interval`` seconds (cheap when it is not idle)."""
        if not self._woken.is_set():
            self._woken.set()

    def run_once(self) -> bool:
        """Run the function now, in the caller's thread, with the same
        error handling as the loop; whether it returned ``True``."""
        try:
            finished = self._function() is True
        except Exception:
            finished = False
            self.errors += 1
            log.exception("%s: background task failed; it will run again", self.name)
        self.runs += 1
        return finished

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and wait up to ``timeout`` seconds for it."""
        self._stop.set()
        self._woken.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _loop(self) -> None:
        delay = self.first_delay
        while not self._stop.wait(delay):
            self._woken.clear()  # before the run: a wake during it is not lost
            if self._stop.is_set():  # stop() came between the wait and the clear
                break
            if self.run_once() and self._idle_until_woken:
                self._woken.wait()
            delay = self.interval

    def _reset_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._woken = threading.Event()
        self._thread = None
        self.started = False
