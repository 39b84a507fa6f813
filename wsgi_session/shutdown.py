"""Flushing pending session writes when a process ends.

Every :class:`~wsgi_session.middleware.SessionMiddleware` that has served a
request is registered here (weakly). Three exits flush them:

* ``atexit`` — a normal interpreter exit, including ``sys.exit()``;
* ``SIGTERM`` — only where nothing else handles it: if the process still has
  the default handler when the first request is served (in the main thread), a
  handler is installed that closes every middleware and then exits as the
  default would have. Servers with their own handler (gunicorn) keep it;
* gunicorn's ``worker_exit`` hook — put this in ``gunicorn.conf.py``::

      from wsgi_session.shutdown import worker_exit

``close()`` is idempotent, so being reached by several of these is harmless.
"""

from __future__ import annotations

import atexit
import logging
import signal
import threading
import typing as t
import weakref

if t.TYPE_CHECKING:
    from types import FrameType

    from .middleware import SessionMiddleware

log = logging.getLogger(__name__)

_live: weakref.WeakSet[SessionMiddleware] = weakref.WeakSet()
_lock = threading.Lock()
_signal_checked = False


def register(middleware: SessionMiddleware) -> None:
    """Close ``middleware`` when the process exits."""
    global _signal_checked
    with _lock:
        _live.add(middleware)
        if _signal_checked or threading.current_thread() is not threading.main_thread():
            return
        _signal_checked = True
        try:
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _on_sigterm)
        except ValueError:  # pragma: no cover - not the main interpreter
            pass


def close_all() -> None:
    """Close every registered middleware (flushing pending writes)."""
    for middleware in list(_live):
        try:
            middleware.close()
        except Exception:
            log.exception("closing a session middleware failed")


def worker_exit(server: object, worker: object) -> None:
    """gunicorn ``worker_exit`` hook: flush this worker's pending writes."""
    close_all()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    close_all()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise SystemExit(128 + signum)


atexit.register(close_all)
