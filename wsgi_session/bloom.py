"""A bloom filter of known session ids, and the rules for trusting it.

A bloom filter answers "have I seen this id?" with *no* (certain) or *maybe*
(wrong with probability ``p``) in about ten bits per id. The manager keeps one
of the ids its store holds, to skip two kinds of store round trip:

1. **New ids.** A random candidate the filter has never seen is not in the
   store: it is used without an ``exists()`` query, and a *maybe* just draws
   another candidate (:meth:`KnownIds.is_free`, :meth:`KnownIds.claim_new_id`).
2. **Unknown tokens.** A validly signed token whose id the filter has never
   seen need not be loaded (:meth:`KnownIds.can_skip_lookup`); only safe under
   the rule below, since another worker may have issued the id a moment ago.

**Sizing.** ``n`` ids at false-positive rate ``p`` take ``m = ceil(-n ln p /
(ln 2)^2)`` bits and ``k = round(m / n * ln 2)`` hashes (9.6 bits and 7
hashes per id at ``p = 0.01``). The ``k`` indexes come from *one* 128-bit
MurmurHash3 (double hashing): ``h1`` is its low 64 bits, ``h2`` its high 64
bits made odd, and index ``i`` is ``(h1 + i * h2) mod m``.

**Threads.** Adds take a lock; checks do not. In a live filter bits only go
from 0 to 1, so a check racing an add can only miss bits that add has not set
yet, answering "absent" for an id whose add has not completed: harmless, as
ids are added *before* a token for them is issued.

**Deletions: periodic rebuild, not a counting filter.** A counting filter can
remove ids but needs 4+ bits per cell, four times the memory, for little gain:
ids are random and never re-used, so a deleted id left in the filter costs at
most one store lookup if it is ever presented again. :meth:`KnownIds.rebuild`
streams the store's ids in batches into a *new* filter while adds go to both,
then swaps them atomically; that forgets renewed, destroyed and purged ids
and can resize the filter when the store outgrew ``n``.

**When skipping a lookup is safe.** A filter knows the ids it was seeded with
and those its own process added since, not ids other workers created after
the seeding. So "absent" is trusted only if the filter was seeded, at
``synced_at`` (the wall-clock time the last rebuild *started*), and either

* ``single_process``: every id is created here and added before it is issued;
* or the token was issued before ``synced_at - margin``. An id issued by any
  worker at ``T`` is in the store by ``T + commit latency``; when ``margin``
  exceeds commit latency plus clock skew between hosts (and the 1 s
  resolution of ``issued``), the id was stored when the rebuild's scan began,
  so the scan saw it. Younger tokens are always looked up (re-issuing a
  token only moves ``issued`` later: the safe direction).

Ids this process added in the ``margin`` before a rebuild started are copied
into the new filter: a session created just before a scan and committed just
after it is not forgotten. **Unsafe when** a write can stay unsaved longer
than ``margin`` (``"background"`` writes during a store outage): raise the
margin or do not skip lookups there.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import typing as t
from itertools import islice

import mmh3
from bitarray.util import zeros

if t.TYPE_CHECKING:
    from .config import SessionConfig

logger = logging.getLogger(__name__)

_MASK64 = (1 << 64) - 1


def optimal_size(expected_elements: int, false_positive_rate: float) -> tuple[int, int]:
    """``(bits, hashes)`` for ``expected_elements`` ids at ``false_positive_rate``."""
    if expected_elements < 1:
        raise ValueError("expected_elements must be at least 1")
    if not 0.0 < false_positive_rate < 1.0:
        raise ValueError("false_positive_rate must be between 0 and 1")
    bits = max(1, math.ceil(-expected_elements * math.log(false_positive_rate) / math.log(2) ** 2))
    return bits, max(1, round(bits / expected_elements * math.log(2)))


def _batches(items: t.Iterable[str], size: int) -> t.Iterator[list[str]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class BloomFilter:
    """A thread-safe bloom filter of strings, backed by a :class:`bitarray`.

    :param expected_elements: ``n``, how many ids it is sized for.
    :param false_positive_rate: ``p``, the chance of a false "maybe" at ``n``.
    :param seed: the MurmurHash3 seed (0 to 2**32 - 1).

    .. code-block:: python

        ids = BloomFilter(1_000_000, 0.01)
        ids.add("qX3...")
        assert "qX3..." in ids
    """

    def __init__(self, expected_elements: int, false_positive_rate: float, *, seed: int = 0) -> None:
        self.expected_elements = expected_elements
        self.false_positive_rate = false_positive_rate
        self.seed = seed
        #: ``m``, the number of bits, and ``k``, the number of indexes per id.
        self.bits, self.hashes = self._m, self._k = optimal_size(expected_elements, false_positive_rate)
        self._bits = zeros(self._m)
        self._count = 0
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        """Bytes of the bit array: the filter's memory, bar a fixed overhead."""
        return int(self._bits.nbytes)

    def __len__(self) -> int:
        """How many adds were made (an id added twice counts twice)."""
        return self._count

    @property
    def estimated_false_positive_rate(self) -> float:
        """``(1 - e^(-k * len / m))^k``: the chance now that an id never added
        is reported present. It passes ``p`` when ``len`` passes ``n``."""
        return float((1.0 - math.exp(-self._k * self._count / self._m)) ** self._k)

    def _indexes(self, item: str) -> list[int]:
        h = mmh3.hash128(item, self.seed, signed=False)
        # (h1 + i*h2) mod m, stepped on small ints (as in might_contain).
        m = self._m
        index, step = (h & _MASK64) % m, ((h >> 64) | 1) % m
        indexes = [index]
        for _ in range(self._k - 1):
            index += step
            if index >= m:
                index -= m
            indexes.append(index)
        return indexes

    def add(self, item: str) -> None:
        """Record ``item``. It is hashed outside the lock."""
        indexes = self._indexes(item)
        with self._lock:
            self._bits[indexes] = 1
            self._count += 1

    def add_many(self, items: t.Iterable[str], chunk_size: int = 1024) -> int:
        """Record every item; return how many. ``items`` is consumed and hashed
        ``chunk_size`` at a time outside the lock (it may be a generator doing
        I/O); each chunk's bits are then set under one lock acquisition."""
        added = 0
        for chunk in _batches(items, chunk_size):
            indexes = [index for item in chunk for index in self._indexes(item)]
            with self._lock:
                self._bits[indexes] = 1
                self._count += len(chunk)
            added += len(chunk)
        return added

    def might_contain(self, item: str) -> bool:
        """``False`` if ``item`` was certainly never added, ``True`` if it
        maybe was. Lock-free (see the module docstring)."""
        h = mmh3.hash128(item, self.seed, signed=False)
        m, bits = self._m, self._bits
        index, step = (h & _MASK64) % m, ((h >> 64) | 1) % m
        for _ in range(self._k):
            if not bits[index]:
                return False
            index += step
            if index >= m:
                index -= m
        return True

    __contains__ = might_contain


class BloomStats(t.TypedDict):
    """What :meth:`KnownIds.stats` reports."""

    size_bytes: int
    elements: int
    expected_elements: int
    bits: int
    hashes: int
    estimated_false_positive_rate: float
    lookups_saved: int
    maybe_present: int
    rebuilds: int
    seeded_elements: int
    synced_at: float | None
    rebuilding: bool


class KnownIds:
    """The ids a store holds, as a bloom filter rebuilt from the store to
    forget deleted ids, and the two decisions the manager makes with it.

    :param expected_elements: ``n`` of each filter (:meth:`rebuild` may resize).
    :param false_positive_rate: ``p`` of each filter.
    :param margin: seconds covering commit latency plus clock skew between
        hosts (see the module docstring). Default 60.
    :param clock: epoch seconds; the clock that stamps tokens' ``issued``.
    :param seed: the MurmurHash3 seed.

    .. code-block:: python

        known = KnownIds.from_config(config)
        known.rebuild(store.iter_ids(1000))   # when serving starts
        session_id = known.claim_new_id(generate, store.exists)
    """

    def __init__(
        self,
        expected_elements: int = 1_000_000,
        false_positive_rate: float = 0.01,
        *,
        margin: float = 60.0,
        clock: t.Callable[[], float] = time.time,
        seed: int = 0,
    ) -> None:
        if margin < 0:
            raise ValueError("margin must not be negative")
        self.expected_elements = expected_elements
        self.false_positive_rate = false_positive_rate
        self.margin = float(margin)
        self.seed = seed
        self._clock = clock
        self._filter = BloomFilter(expected_elements, false_positive_rate, seed=seed)
        self._pending: BloomFilter | None = None
        self._lock = threading.Lock()  # adds, the swap, the recent-id buckets, counters
        self._rebuild_lock = threading.Lock()  # one rebuild at a time
        self._recent: list[str] = []  # ids added lately, see _age_buckets
        self._older: list[str] = []
        self._bucket_started = clock()
        self._synced_at: float | None = None
        self._lookups_saved = self._maybe_present = self._rebuilds = self._seeded = 0

    @classmethod
    def from_config(cls, config: SessionConfig, **kwargs: t.Any) -> KnownIds:
        """Sized from ``bloom_expected_elements`` and ``bloom_false_positive_rate``;
        ``kwargs`` (``margin``, ``clock``, ``seed``) go to the constructor."""
        return cls(config.bloom_expected_elements, config.bloom_false_positive_rate, **kwargs)

    @property
    def filter(self) -> BloomFilter:
        """The filter answering checks now."""
        return self._filter

    @property
    def synced_at(self) -> float | None:
        """When the last completed rebuild started; ``None`` if never seeded."""
        return self._synced_at

    # -- keeping it current --------------------------------------------------

    def _age_buckets(self, now: float) -> None:
        # Two buckets spanning at most ``margin`` seconds each: together they
        # hold every id added in the last ``margin`` seconds (for rebuild).
        age = now - self._bucket_started
        if age >= self.margin:
            self._older = self._recent if age < 2 * self.margin else []
            self._recent = []
            self._bucket_started = now

    def add(self, session_id: str) -> None:
        """Record a new id. Call it *before* the id is issued to a client."""
        now = self._clock()
        with self._lock:
            self._age_buckets(now)
            self._recent.append(session_id)
            self._filter.add(session_id)
            if self._pending is not None:
                self._pending.add(session_id)

    def might_contain(self, session_id: str) -> bool:
        """The current filter's answer (lock-free)."""
        return session_id in self._filter

    __contains__ = might_contain

    def rebuild(
        self, ids: t.Iterable[str], *, expected_elements: int | None = None, batch_size: int = 1000
    ) -> int:
        """Replace the filter with one seeded from ``ids``, the store's ids
        (``store.iter_ids(batch_size)``); return how many were streamed.

        ``ids`` is consumed ``batch_size`` at a time with no lock held. Ids
        added meanwhile go to both filters, ids added in the ``margin`` before
        the start are copied over, then one assignment swaps the filters and
        :attr:`synced_at` becomes the start time. If ``ids`` raises, the old
        filter stays and the error propagates. One rebuild runs at a time.
        ``expected_elements`` resizes (e.g. ``int(store.count() * 1.5)``).
        """
        with self._rebuild_lock:
            n = expected_elements or self.expected_elements
            fresh = BloomFilter(n, self.false_positive_rate, seed=self.seed)
            with self._lock:
                started = self._clock()
                self._age_buckets(started)
                carried = [*self._older, *self._recent]
                self._pending = fresh
            began = time.perf_counter()
            try:
                fresh.add_many(carried)
                seeded = fresh.add_many(ids, chunk_size=batch_size)
            except BaseException:
                with self._lock:
                    self._pending = None
                logger.warning("bloom filter rebuild failed; the old filter stays", exc_info=True)
                raise
            with self._lock:
                self._filter, self._pending, self._synced_at = fresh, None, started
                self._rebuilds += 1
                self._seeded = seeded
        elapsed = time.perf_counter() - began
        logger.info("bloom filter rebuilt in %.2fs: %d ids + %d recent", elapsed, seeded, len(carried))
        return seeded

    def should_rebuild(self, now: float, max_age: float) -> bool:
        """Whether a rebuild is due: never seeded, more adds than the filter's
        ``n`` (false positives climbing), or the last sync older than ``max_age``."""
        current, synced_at = self._filter, self._synced_at
        full = len(current) >= current.expected_elements
        return synced_at is None or full or now - synced_at >= max_age

    # -- the two decisions ---------------------------------------------------

    def _tally(self, saved: bool) -> None:
        with self._lock:
            self._lookups_saved += saved
            self._maybe_present += not saved

    def is_free(self, candidate: str) -> bool:
        """Use 1: ``True`` if the filter proves ``candidate`` was never issued,
        so a new session may take it without an ``exists()`` round trip.
        ``False`` means "maybe present" (draw another candidate) or, before
        the first :meth:`rebuild`, "cannot tell" (ask the store)."""
        if self._synced_at is None:
            return False
        free = not self._filter.might_contain(candidate)
        self._tally(saved=free)
        return free

    def claim_new_id(
        self, generate: t.Callable[[], str], exists: t.Callable[[str], bool], *, attempts: int = 8
    ) -> str:
        """A fresh id from ``generate()``, added to the filter before it is
        returned. What :meth:`is_free` accepts costs no round trip, a "maybe"
        draws again; unseeded, or after ``attempts`` "maybe" in a row (a full
        filter), ``exists()`` decides: :exc:`RuntimeError` if all say taken."""
        for attempt in range(2 * attempts):
            candidate = generate()
            if self._synced_at is not None and attempt < attempts:
                if self.is_free(candidate):
                    break
                if attempt == attempts - 1:
                    logger.warning("bloom filter said 'maybe' to %d new ids in a row", attempts)
            elif not exists(candidate):
                break
        else:
            raise RuntimeError("the id generator keeps producing ids that are taken")
        self.add(candidate)
        return candidate

    def can_skip_lookup(self, session_id: str, issued_at: float, now: float, single_process: bool) -> bool:
        """Use 2: ``True`` if a validly signed token for ``session_id`` issued
        at ``issued_at`` (epoch seconds) may be answered "no such session"
        without loading it. The rule (module docstring): seeded, ``now`` not
        before the sync, the filter says absent, and ``single_process`` or
        ``issued_at < synced_at - margin``."""
        synced_at = self._synced_at
        if synced_at is None or now < synced_at:
            return False
        if not single_process and not issued_at < synced_at - self.margin:
            return False
        absent = not self._filter.might_contain(session_id)
        self._tally(saved=absent)
        return absent

    # -- observability -------------------------------------------------------

    def stats(self) -> BloomStats:
        """Numbers for a status page: size, fill, and what the filter saved."""
        current = self._filter
        return BloomStats(
            size_bytes=current.size_bytes,
            elements=len(current),
            expected_elements=current.expected_elements,
            bits=current.bits,
            hashes=current.hashes,
            estimated_false_positive_rate=current.estimated_false_positive_rate,
            lookups_saved=self._lookups_saved,
            maybe_present=self._maybe_present,
            rebuilds=self._rebuilds,
            seeded_elements=self._seeded,
            synced_at=self._synced_at,
            rebuilding=self._pending is not None,
        )
