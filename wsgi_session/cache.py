"""A thread-safe dict split into independently locked shards, bounded in size.

Every request of every thread goes through this map, so one global lock would
make threads queue behind each other. Keys are spread over ``shards`` plain
dicts (a power of two, picked by the key's hash), each guarded by its own lock,
so threads touching different sessions rarely meet.

Each shard keeps its entries in least-recently-used order. That gives two
kinds of eviction at the cost of a pointer move per lookup:

* a size bound: when a shard holds more than its share of ``max_entries``,
  the least recently used entries leave (a flood of new visitors cannot grow
  memory without limit);
* an idle bound: :meth:`ShardedCache.evict_idle` drops entries not used for
  ``idle_seconds``; it walks each shard from the oldest entry and stops at the
  first fresh one, so it costs only what it evicts.

Values are kept as they are (no wrapper per entry) and last-use times, when
an idle bound is set, in a separate ``str -> float`` dict, which the garbage
collector does not track: a cache of 100,000 sessions adds no objects for the
collector to walk beyond the values themselves.

Locks are held only for dict operations. Callers never do I/O, encoding or
decoding while holding one; :meth:`ShardedCache.update` runs a caller's merge
function under the lock, and that function must be pure CPU work.

Without an idle bound, :meth:`ShardedCache.get` takes no lock at all (the
``with`` block was over half of the call's cost in a micro-benchmark: 0.29
against 0.12 µs; the memory store's read is one ``get``). It is two
operations on the shard's dict, a lookup and a move to the end, each of
which the GIL makes atomic; between them a writer may replace the entry
(the read then returned the value just before the write) or remove it (the
move finds no key: the read happened just before the removal). Writers
still serialize on the lock, and the one walk that runs Python code between
its steps, :meth:`ShardedCache.remove_where`, walks a copy of the keys.
With an idle bound the read also stamps the key's last use, which must not
outlive a concurrent removal, so it keeps the lock; so does every read on a
free-threaded CPython running without its GIL.
"""

from __future__ import annotations

import sys
import threading
import time
import typing as t
from collections import OrderedDict

V = t.TypeVar("V")

#: False on a free-threaded CPython running without its GIL, where a read
#: takes the shard lock like everything else.
_GIL_ENABLED: bool = getattr(sys, "_is_gil_enabled", lambda: True)()


class _Shard(t.Generic[V]):
    __slots__ = ("entries", "lock", "used")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: key -> value, least recently used first.
        self.entries: OrderedDict[str, V] = OrderedDict()
        #: key -> last use (monotonic seconds); only with an idle bound.
        self.used: dict[str, float] = {}


class ShardedCache(t.Generic[V]):
    """A bounded, lock-sharded ``str -> V`` map with LRU and idle eviction.

    :param shards: how many locks to spread the keys over; a power of two.
    :param max_entries: the most entries kept in all; each shard holds at most
        its equal share (rounded up).
    :param idle_seconds: how long an unused entry may stay, enforced by
        :meth:`evict_idle`; ``None`` keeps entries until they are evicted for
        size or removed.
    :param clock: a monotonic clock, replaceable in tests.
    :param on_evict: called with each key evicted for size, outside the lock.
    """

    def __init__(
        self,
        shards: int = 16,
        max_entries: int = 100_000,
        idle_seconds: float | None = None,
        clock: t.Callable[[], float] = time.monotonic,
        on_evict: t.Callable[[str], None] | None = None,
    ) -> None:
        if shards < 1 or shards & (shards - 1):
            raise ValueError("shards must be a power of two")
        self._shards: tuple[_Shard[V], ...] = tuple(_Shard() for _ in range(shards))
        self._mask = shards - 1
        self._per_shard = max(1, -(-max_entries // shards))
        self._idle = idle_seconds
        self._clock = clock
        self._on_evict = on_evict
        #: Whether :meth:`get` may skip the shard lock (see the module docstring).
        self._lock_free_reads = idle_seconds is None and _GIL_ENABLED
        #: entries dropped because a shard was full (read by the middleware's stats).
        self.evicted_for_size = 0

    def _shard(self, key: str) -> _Shard[V]:
        return self._shards[hash(key) & self._mask]

    def get(self, key: str) -> V | None:
        """The value for ``key`` (marking it used), or ``None``."""
        shard = self._shards[hash(key) & self._mask]
        if self._lock_free_reads:
            entries = shard.entries
            value = entries.get(key)
            if value is not None:
                try:
                    entries.move_to_end(key)
                except KeyError:  # removed since: the read happened just before
                    pass
            return value
        with shard.lock:
            value = shard.entries.get(key)
            if value is None:
                return None
            shard.entries.move_to_end(key)
            if self._idle is not None:
                shard.used[key] = self._clock()
            return value

    def peek(self, key: str) -> V | None:
        """The value for ``key`` without marking it used."""
        shard = self._shard(key)
        with shard.lock:
            return shard.entries.get(key)

    def put(self, key: str, value: V) -> None:
        """Store ``value`` under ``key`` as the most recently used entry."""
        shard = self._shard(key)
        with shard.lock:
            entries = shard.entries
            known = key in entries
            entries[key] = value
            if known:
                entries.move_to_end(key)
            if self._idle is not None:
                shard.used[key] = self._clock()
            evicted = self._trim(shard) if len(entries) > self._per_shard else None
        if evicted:
            self._report(evicted)

    def update(self, key: str, merge: t.Callable[..., V | None], *args: t.Any) -> V | None:
        """Atomically replace the value with ``merge(current, *args)``.

        ``merge`` runs under the shard lock and must not block. A ``None``
        result removes the key. Returns the new value.
        """
        shard = self._shards[hash(key) & self._mask]
        with shard.lock:
            entries = shard.entries
            current = entries.get(key)
            value = merge(current, *args)
            if value is None:
                if current is not None:
                    del entries[key]
                    shard.used.pop(key, None)
                return None
            entries[key] = value
            if current is not None:
                entries.move_to_end(key)
            if self._idle is not None:
                shard.used[key] = self._clock()
            evicted = self._trim(shard) if len(entries) > self._per_shard else None
        if evicted:
            self._report(evicted)
        return value

    def pop(self, key: str) -> V | None:
        """Remove ``key`` and return its value, or ``None``."""
        shard = self._shard(key)
        with shard.lock:
            shard.used.pop(key, None)
            return shard.entries.pop(key, None)

    def evict_idle(self) -> int:
        """Drop entries unused for ``idle_seconds``; returns how many."""
        if self._idle is None:
            return 0
        cutoff = self._clock() - self._idle
        dropped = 0
        for shard in self._shards:
            with shard.lock:
                entries, used = shard.entries, shard.used
                while entries:
                    key = next(iter(entries))
                    if used.get(key, cutoff) > cutoff:
                        break
                    del entries[key]
                    used.pop(key, None)
                    dropped += 1
        return dropped

    def remove_where(
        self,
        predicate: t.Callable[[V], bool],
        limit: int,
        keep: t.Callable[[str], bool] | None = None,
    ) -> list[str]:
        """Remove up to ``limit`` entries whose value matches ``predicate``
        (and whose key ``keep`` does not claim), one shard lock at a time;
        returns their keys."""
        removed: list[str] = []
        for shard in self._shards:
            with shard.lock:
                # A copy of the keys: a lock-free get() may reorder the entries
                # while the predicate runs. (Only the keys: copying the items
                # builds a tuple per entry, and on CPython 3.11 a collection
                # those allocations start can run Python code and let a reader
                # in mid-copy.) Nothing removes a key while the lock is held.
                entries = shard.entries
                doomed = [
                    key
                    for key in list(entries)
                    if predicate(entries[key]) and (keep is None or not keep(key))
                ]
                for key in doomed[: limit - len(removed)]:
                    del entries[key]
                    shard.used.pop(key, None)
                    removed.append(key)
            if len(removed) >= limit:
                break
        return removed

    def keys(self) -> list[str]:
        """A snapshot of the keys, shard by shard."""
        out: list[str] = []
        for shard in self._shards:
            with shard.lock:
                out.extend(shard.entries)
        return out

    def clear(self) -> None:
        """Remove every entry."""
        for shard in self._shards:
            with shard.lock:
                shard.entries.clear()
                shard.used.clear()

    def __len__(self) -> int:
        return sum(len(shard.entries) for shard in self._shards)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        shard = self._shard(key)
        with shard.lock:
            return key in shard.entries

    def _trim(self, shard: _Shard[V]) -> list[str]:
        evicted: list[str] = []
        entries = shard.entries
        while len(entries) > self._per_shard:
            key, _ = entries.popitem(last=False)
            shard.used.pop(key, None)
            evicted.append(key)
        return evicted

    def _report(self, evicted: list[str]) -> None:
        self.evicted_for_size += len(evicted)
        if self._on_evict is not None:
            for key in evicted:
                self._on_evict(key)
