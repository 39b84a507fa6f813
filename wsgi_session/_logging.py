"""Log lines that bad input cannot turn into a flood.

A client can send a million tampered cookies; the log must not grow by a
million lines. :class:`RateLimitedLog` writes at most one line per category
per interval and says how many it held back.
"""

from __future__ import annotations

import logging
import threading
import time


class RateLimitedLog:
    """At most one record per ``category`` every ``interval`` seconds.

    :param logger: where records go.
    :param interval: seconds between two records of one category.
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0) -> None:
        self._logger = logger
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, level: int, category: str, message: str, *args: object) -> None:
        """Log ``message % args`` unless ``category`` logged recently."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(category)
            if last is not None and now - last < self._interval:
                self._held[category] = self._held.get(category, 0) + 1
                return
            self._last[category] = now
            held = self._held.pop(category, 0)
        if held:
            message += " (%d similar messages suppressed)"
            args = (*args, held)
        self._logger.log(level, message, *args)

    def warning(self, category: str, message: str, *args: object) -> None:
        """:meth:`log` at WARNING."""
        self.log(logging.WARNING, category, message, *args)
