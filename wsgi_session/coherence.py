"""The per-process cache in front of a persistent store, kept coherent.

Every gunicorn worker has its own memory, so a session cached by one worker
can be changed by another. :class:`CachedStore` wraps a persistent store with
a lock-sharded cache and never trusts a cached copy blindly:

* **Validation** (the default): a cached record is used only after asking the
  store for the session's *version* — one small round trip (an ``HGET`` on
  Redis, a one-column ``SELECT`` on SQL). If it matches, the cached record
  (already decrypted, decoded values memoised) is used; if not, the record is
  loaded again. So a read-only request costs one round trip, a write two (the
  check and the write), and every request sees every change committed before
  it began, on any worker or host.
* **Often stale**: with several workers, a session that changes is often
  stale in the worker that gets its next request, and the load after the
  version check is a second round trip. A cache that found more than a
  fifth of its recent copies stale (:attr:`CachedStore.stale_share`, a
  moving average) checks with :meth:`~wsgi_session.stores.base.Store.load_if_changed`
  instead: one round trip either way (on Redis a script that sends the
  record only if the version moved on; on SQL the row). Below that share
  the version check stays, cheaper for a current copy.
* **Own writes**: a session with writes still pending in this process (the
  store is down, or ``write_mode="background"``) is served from the cache,
  which holds those writes merged in, so the process reads its own writes.
* **Memory-only sessions**: in opt-in mode a session without consent lives in
  this cache only and never reaches the store (so it is per worker).

Strict writes go through the :class:`~wsgi_session.flusher.Flusher`'s group
commit and the cache takes the records the store returns; background writes
(except the creation of a session, always written at once) and expiry
touches are merged into the cache at once and flushed within the flush
interval.
"""

from __future__ import annotations

import dataclasses
import logging
import typing as t

from .cache import ShardedCache
from .flusher import Flusher
from .invalidation import InvalidationListener
from .record import SessionRecord, apply_diff
from .stores.base import UNCHANGED, Store, Unchanged

if t.TYPE_CHECKING:
    from .config import SessionConfig
    from .record import SessionDiff

log = logging.getLogger(__name__)


#: Above this share of stale copies among its recent checks, a cache checks
#: with the store's one-round-trip call (:meth:`Store.load_if_changed`).
ONE_TRIP_ABOVE_STALE_SHARE = 0.2
#: The stale share is a moving average over about 1 / this many checks.
_STALE_SMOOTHING = 0.05


class _Entry(t.NamedTuple):
    record: SessionRecord
    local: bool = False


class CachedStore(Store):
    """A persistent store seen through this process's cache.

    :param inner: the persistent store (possibly wrapped for encryption).
    :param config: cache size, memory lifetime, write mode, pending bound.
    """

    def __init__(self, inner: Store, config: SessionConfig) -> None:
        self.inner = inner
        self.expires_by_itself = inner.expires_by_itself
        self.cache: ShardedCache[_Entry] = ShardedCache(
            shards=config.cache_shards,
            max_entries=config.cache_max_entries,
            idle_seconds=config.memory_lifetime.total_seconds(),
        )
        self.flusher = Flusher(inner, config.max_pending_writes, on_written=self._written)
        self._background = config.write_mode == "background"
        self.listener: InvalidationListener | None = None
        #: How often this cache's checks found its copy stale lately (a moving
        #: average, updated without a lock: a lost update only nudges it).
        self.stale_share = 0.0
        if config.coherence == "notify":
            if inner.supports_notifications:
                self.listener = InvalidationListener(inner, self._invalidate, self._invalidate_all)
            else:
                log.warning(
                    "%s cannot announce changes; coherence='notify' falls back to 'validate'",
                    type(inner).__name__,
                )

    def setup(self) -> None:
        self.inner.setup()
        if self.listener is not None:
            self.listener.ensure_running()

    def load(self, session_id: str) -> SessionRecord | None:
        entry = self.cache.get(session_id)
        listener = self.listener
        started = listener.epoch if listener is not None else 0
        if entry is None:
            record = self.inner.load(session_id)
        else:
            if entry.local or self.flusher.holds_unsaved(session_id):
                return entry.record  # our own writes, not in the store yet
            if listener is not None and listener.healthy:
                return entry.record  # kept coherent by invalidation messages
            found = self._check(session_id, entry.record.version)
            if found is UNCHANGED:
                return entry.record
            record = found
        if record is None:
            self.cache.pop(session_id)
            return None
        if listener is None:
            self.cache.put(session_id, _Entry(record))
        elif listener.may_cache(session_id, started):
            # Trusted until invalidated: never let a slow load replace a newer
            # copy that this process's own write put there meanwhile.
            self.cache.update(session_id, _newer, record)
        else:
            self.cache.pop(session_id)  # a change raced this load: do not keep it
        return record

    def _check(self, session_id: str, version: int) -> SessionRecord | Unchanged | None:
        """Whether the stored session is still at ``version``: by the store's
        one-round-trip call while copies are often stale, else by its
        version, then a load if that moved on."""
        if self.stale_share > ONE_TRIP_ABOVE_STALE_SHARE:
            found = self.inner.load_if_changed(session_id, version)
        else:
            stored = self.inner.version(session_id)
            if stored == version:
                found = UNCHANGED
            else:
                found = None if stored is None else self.inner.load(session_id)
        self.stale_share += _STALE_SMOOTHING * ((found is not UNCHANGED) - self.stale_share)
        return found

    def _invalidate(self, session_id: str) -> None:
        """Another process changed ``session_id``: drop this process's copy,
        unless it holds writes of ours not yet in the store."""
        entry = self.cache.peek(session_id)
        if entry is not None and not entry.local and not self.flusher.holds_unsaved(session_id):
            self.cache.pop(session_id)

    def _invalidate_all(self) -> None:
        """Messages may have been missed: drop every shared entry."""
        self.cache.remove_where(lambda entry: not entry.local, limit=1 << 62, keep=self.flusher.holds_unsaved)

    def version(self, session_id: str) -> int | None:
        return self.inner.version(session_id)

    def load_if_changed(self, session_id: str, version: int) -> SessionRecord | Unchanged | None:
        return self.inner.load_if_changed(session_id, version)

    def apply(self, diffs: t.Sequence[SessionDiff]) -> list[SessionRecord | None]:
        results: list[SessionRecord | None] = [None] * len(diffs)
        strict: list[tuple[int, SessionDiff]] = []
        queued: list[SessionDiff] = []
        for index, diff in enumerate(diffs):
            entry = self.cache.peek(diff.id)
            if diff.local_only:
                results[index] = self._apply_locally(diff, entry)
                continue
            if entry is not None and entry.local:
                # Consent given: the memory-only session is stored in full.
                diff = dataclasses.replace(diff, create=True, defaults=dict(entry.record.values), base=None)
            # Background mode queues updates, but a new session is written at
            # once: another worker must find it when the client's next request
            # lands there, or it would hand out a fresh session instead.
            if (self._background and not diff.create) or diff.is_touch:
                results[index] = self._merge_into_cache(diff)
                queued.append(diff)
            else:
                strict.append((index, diff))
        if queued:
            self.flusher.enqueue(queued)
        if strict:
            written = self.flusher.commit([diff for _, diff in strict])
            for (index, diff), record in zip(strict, written, strict=True):
                results[index] = record if record is not None else self._merge_into_cache(diff)
        return results

    def _apply_locally(self, diff: SessionDiff, entry: _Entry | None) -> SessionRecord | None:
        if entry is not None and not entry.local:
            self.inner.delete([diff.id])  # consent withdrawn: out of the store
        merged = apply_diff(entry.record if entry is not None else None, diff)
        if merged is None:
            self.cache.pop(diff.id)
        else:
            self.cache.put(diff.id, _Entry(merged, local=True))
        return merged

    def _merge_into_cache(self, diff: SessionDiff) -> SessionRecord | None:
        """Apply ``diff`` to the cached copy (own writes not yet in the store).

        An expiry touch moves the deadline but keeps the version, so the copy
        still validates against the store until the touch lands."""
        if diff.is_touch:
            entry = self.cache.update(diff.id, _touch_entry, diff)
            return None if entry is None else entry.record

        entry = self.cache.update(diff.id, _merge_entry, diff)
        return None if entry is None else entry.record

    def _written(self, diffs: t.Sequence[SessionDiff], results: list[SessionRecord | None]) -> None:
        """Take the records the store returned into the cache, unless the
        cached copy is newer: a request may have merged its write into it
        and not queued it yet (so it is not counted as unsaved)."""
        for diff, record in zip(diffs, results, strict=True):
            if self.flusher.holds_unsaved(diff.id):
                continue  # newer own writes are merged in the cached copy
            if record is None:
                self.cache.pop(diff.id)
            else:
                self.cache.update(diff.id, _newer, record)

    def forget(self, session_id: str) -> None:
        """Drop this process's copy of ``session_id``."""
        self.cache.pop(session_id)

    def delete(self, session_ids: t.Iterable[str]) -> None:
        ids = list(session_ids)
        self.flusher.discard(ids)
        for session_id in ids:
            self.cache.pop(session_id)
        self.inner.delete(ids)

    def count(self) -> int:
        return self.inner.count()

    def iter_ids(self, batch_size: int = 1000) -> t.Iterator[str]:
        return self.inner.iter_ids(batch_size)

    def purge_expired(self, now: float, limit: int = 1000) -> list[str]:
        self.cache.remove_where(lambda entry: entry.record.is_expired(now), limit)
        return self.inner.purge_expired(now, limit)

    def clear(self) -> None:
        self.cache.clear()
        self.inner.clear()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.stop()
        self.flusher.close()
        self.inner.close()


def _merge_entry(entry: _Entry | None, diff: SessionDiff) -> _Entry | None:
    merged = apply_diff(entry.record if entry is not None else None, diff)
    return None if merged is None else _Entry(merged)


def _touch_entry(entry: _Entry | None, diff: SessionDiff) -> _Entry | None:
    if entry is None:
        return None
    record = entry.record
    record = dataclasses.replace(record, expires=diff.expires, longterm=diff.longterm, memo=record.memo)
    return _Entry(record, entry.local)


def _newer(entry: _Entry | None, record: SessionRecord) -> _Entry:
    """``record`` unless the cache holds the same session at a later version
    (a memory-only copy, whose versions are its own, never counts as later:
    once stored, the stored record is the session)."""
    if (
        entry is not None
        and not entry.local
        and entry.record.id == record.id
        and entry.record.version > record.version
    ):
        return entry
    return _Entry(record)
