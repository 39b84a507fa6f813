"""The key store: a bloom filter of known ids, wired to the manager.

:class:`KeyStore` decides when the filter is used (see :mod:`wsgi_session.bloom`
for the filter and the rules that make trusting it safe):

* It is on when ``bloom_filter`` is ``True``, or ``None`` (the default) with a
  persistent store.
* It is seeded from the store's ids in the process that serves, on a
  background thread started with the first request, and rebuilt every
  ``bloom_rebuild_interval`` (which also forgets destroyed and purged ids).
  Until the first seeding finishes the filter proves nothing and every
  decision falls back to asking the store.
* **New ids.** A candidate the filter has never seen is used without an
  ``exists()`` round trip. (The default generator's 192 random bits make
  that check pointless, so the manager skips it with or without a filter; the
  filter pays off with a custom ``id_generator``.)
* **Unknown tokens.** A validly signed token whose id the filter has never
  seen, issued before the last seeding began (minus a safety margin), is
  answered without loading: the id was never stored. Not done in
  ``write_mode="background"``, where a write may stay pending longer than the
  margin.
"""

from __future__ import annotations

import logging
import typing as t

from .background import PeriodicTask
from .bloom import BloomStats, KnownIds

if t.TYPE_CHECKING:
    from .config import SessionConfig
    from .stores.base import Store

log = logging.getLogger(__name__)


class KeyStore:
    """The manager's bloom filter of ids.

    :param config: sizing, rebuild interval and write mode.
    :param store: the store whose ids are known.
    :param clock: epoch seconds (the clock that stamps tokens).
    """

    def __init__(self, config: SessionConfig, store: Store, clock: t.Callable[[], float]) -> None:
        self.known = KnownIds.from_config(config, clock=clock)
        self._store = store
        self._clock = clock
        self._single_process = store.is_local
        self._may_skip = config.write_mode == "strict"
        self._task = PeriodicTask(
            "wsgi-session-bloom",
            config.bloom_rebuild_interval.total_seconds(),
            self.rebuild,
            first_delay=0.0,
        )

    @staticmethod
    def wanted(config: SessionConfig, store: Store) -> bool:
        """Whether ``config`` asks for a filter in front of ``store``."""
        if config.bloom_filter is None:
            return not store.is_local
        return config.bloom_filter

    def ensure_running(self) -> None:
        """Start the seeding/rebuild thread in this process."""
        self._task.ensure_running()

    def stop(self) -> None:
        """Stop rebuilding."""
        self._task.stop()

    def rebuild(self) -> int:
        """Seed the filter from every stored id again; returns how many."""
        count = self.known.rebuild(self._store.iter_ids(1000))
        log.info("session bloom filter rebuilt from %d stored ids", count)
        return count

    def claim(self, generate: t.Callable[[], str]) -> str:
        """A new id the store does not hold, asking it only on a "maybe"."""
        return self.known.claim_new_id(generate, self._store.exists)

    def added(self, session_id: str) -> None:
        """Record an id about to be issued (renewal, default-generator ids)."""
        self.known.add(session_id)

    def never_issued(self, session_id: str, issued: float) -> bool:
        """Whether the filter proves that no session ``session_id`` exists."""
        if not self._may_skip:
            return False
        return self.known.can_skip_lookup(session_id, issued, self._clock(), self._single_process)

    def stats(self) -> BloomStats:
        """Size, element count, estimated false-positive rate, lookups saved."""
        return self.known.stats()
