"""Invalidation messages: trusting the cache without asking the store.

With ``coherence="notify"`` every process announces the ids it changes (Redis
``PUBLISH`` in the same script as the write; PostgreSQL ``NOTIFY`` in the
same statement or transaction), and every process listens, dropping those ids from its
cache. A read of a cached session then costs no round trip at all.

Three things could make a cached copy stale, and each is handled:

* **The message is in flight.** Another process committed, its message has
  not arrived yet. This is the staleness bound of the mode: the delivery time
  of one pub/sub message (well under a millisecond on loopback; one network
  hop between hosts). Use the default ``coherence="validate"`` where a reader
  must never see a change later than the writer's response.
* **A load races a message.** A load started before a change and finished
  after its message arrived would put the old data in the cache. Every
  message bumps an *epoch*; a load remembers the epoch it started at and is
  cached only if no message for its id arrived since.
* **Messages are lost.** While the subscription is down nothing is trusted:
  :attr:`InvalidationListener.healthy` is false and reads validate against
  the store. Each (re)subscription first drops every cached entry, because
  messages may have been missed before it.
"""

from __future__ import annotations

import logging
import secrets
import threading
import typing as t

from .background import PeriodicTask

if t.TYPE_CHECKING:
    from .stores.base import Store

log = logging.getLogger(__name__)

#: Forget per-id invalidation epochs beyond this many (all loads in flight are
#: then refused caching once, which is always safe).
_MAX_TRACKED = 100_000


class InvalidationListener:
    """Subscribes to a store's change announcements on a daemon thread.

    :param store: a store with ``supports_notifications``.
    :param drop: called with an id another process changed.
    :param drop_all: called when messages may have been missed.
    """

    def __init__(self, store: Store, drop: t.Callable[[str], None], drop_all: t.Callable[[], None]) -> None:
        self.store = store
        #: Identifies this process's own announcements, which it ignores.
        self.origin = secrets.token_hex(8)
        self._drop = drop
        self._drop_all = drop_all
        self._lock = threading.Lock()
        self._epoch = 0
        self._reset_epoch = 0
        self._invalidated: dict[str, int] = {}
        self.healthy = False
        self.messages = 0
        self.resets = 0
        self._stop = threading.Event()
        self._task = PeriodicTask("wsgi-session-listen", 0.5, self._listen_once)
        store.enable_notifications(self.origin)

    def ensure_running(self) -> None:
        """Start listening in this process (lazily, fork-safe)."""
        self._task.ensure_running()

    def stop(self) -> None:
        """Stop listening; reads validate from now on."""
        self.healthy = False
        self._stop.set()
        self._task.stop(timeout=2.0)

    @property
    def epoch(self) -> int:
        """Increases with every message and reset; read before a load."""
        return self._epoch

    def may_cache(self, session_id: str, started: int) -> bool:
        """Whether a load of ``session_id`` that began at epoch ``started``
        may be cached: no message for it (and no reset) arrived since."""
        if not self.healthy or started < self._reset_epoch:
            return False
        return self._invalidated.get(session_id, -1) < started

    def _listen_once(self) -> None:
        """One subscription, until it fails or the listener stops."""
        if self._stop.is_set():
            return
        try:
            self.store.listen(self._on_message, self._on_reset, self._stop)
        except Exception as exc:
            log.warning("session invalidation subscription lost (%s); validating reads meanwhile", exc)
        finally:
            self.healthy = False

    def _on_reset(self) -> None:
        with self._lock:
            self._epoch += 1
            self._reset_epoch = self._epoch
            self._invalidated.clear()
            self.resets += 1
        self._drop_all()
        self.healthy = True

    def _on_message(self, origin: str, session_id: str) -> None:
        if origin == self.origin:
            return
        with self._lock:
            self._epoch += 1
            if len(self._invalidated) >= _MAX_TRACKED:
                self._invalidated.clear()
                self._reset_epoch = self._epoch
            self._invalidated[session_id] = self._epoch
            self.messages += 1
        self._drop(session_id)
