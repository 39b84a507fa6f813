"""Tests of :mod:`wsgi_session.bloom`: sizing, hashing, no false negatives,
the measured false-positive rate, threads, rebuilds, the rule for skipping a
store lookup, and seeding from a real Redis and PostgreSQL."""

from __future__ import annotations

import base64
import math
import random
import secrets
import sys
import threading
import typing as t
import uuid

import mmh3
import pytest
import sqlalchemy as sa
from bitarray import bitarray
from hypothesis import given, settings
from hypothesis import strategies as st

from wsgi_session.bloom import BloomFilter, KnownIds, optimal_size

if t.TYPE_CHECKING:
    import redis

MARGIN = 60.0
ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
session_ids = st.text(alphabet=ID_ALPHABET, min_size=16, max_size=128)


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def random_ids(count: int, seed: str) -> list[str]:
    """``count`` ids in the format of ``secrets.token_urlsafe(24)`` (32
    URL-safe characters from 24 random bytes), from a seeded generator so a
    statistical assertion gives the same answer on every run."""
    rng = random.Random(seed)
    return [base64.urlsafe_b64encode(rng.randbytes(24)).decode() for _ in range(count)]


def fresh_ids(count: int) -> list[str]:
    return [secrets.token_urlsafe(24) for _ in range(count)]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def known(clock: Clock) -> KnownIds:
    return KnownIds(100_000, 0.001, margin=MARGIN, clock=clock)


@pytest.fixture
def fast_switching() -> t.Iterator[None]:
    """Make the interpreter switch threads as often as it can, so races show."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


# -- sizing and hashing ----------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "p"),
    [(1, 0.5), (100, 0.01), (1_000, 0.2), (10_000, 0.05), (1_000_000, 0.01), (1_000_000, 0.0001), (7, 1e-9)],
)
def test_sizing_follows_the_closed_form(n: int, p: float) -> None:
    m = math.ceil(-n * math.log(p) / math.log(2) ** 2)
    k = max(1, round(m / n * math.log(2)))
    assert optimal_size(n, p) == (m, k)
    bloom = BloomFilter(n, p)
    assert (bloom.bits, bloom.hashes) == (m, k)
    assert bloom.size_bytes == math.ceil(m / 8)


def test_sizing_known_values() -> None:
    # The textbook numbers: a million ids at 1 % take 9,585,059 bits and 7 hashes.
    assert optimal_size(1_000_000, 0.01) == (9_585_059, 7)
    assert optimal_size(1_000_000, 0.0001) == (19_170_117, 13)


@pytest.mark.parametrize(("n", "p"), [(0, 0.01), (-5, 0.01), (10, 0.0), (10, 1.0), (10, -0.1), (10, 2.0)])
def test_bad_sizes_are_rejected(n: int, p: float) -> None:
    with pytest.raises(ValueError):
        BloomFilter(n, p)


@pytest.mark.parametrize("seed", [0, 42])
def test_indexes_come_from_one_128_bit_hash_by_double_hashing(seed: int) -> None:
    bloom = BloomFilter(1_000, 0.01, seed=seed)
    item = "a-session-id-0123456789"
    h = mmh3.hash128(item, seed, signed=False)
    h1, h2 = h & (2**64 - 1), (h >> 64) | 1
    expected = bitarray(bloom.bits)
    expected.setall(0)
    for i in range(bloom.hashes):
        expected[(h1 + i * h2) % bloom.bits] = 1
    bloom.add(item)
    assert bloom._bits == expected
    assert len(bloom) == 1


def test_estimated_rate_follows_the_fill() -> None:
    bloom = BloomFilter(10_000, 0.01)
    assert bloom.estimated_false_positive_rate == 0.0
    bloom.add_many(random_ids(10_000, "estimate"))
    k, m = bloom.hashes, bloom.bits
    assert bloom.estimated_false_positive_rate == pytest.approx((1 - math.exp(-k * 10_000 / m)) ** k)
    assert bloom.estimated_false_positive_rate == pytest.approx(0.01, rel=0.05)


# -- correctness ------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(session_ids | st.text(), max_size=300), n=st.integers(1, 500), p=st.floats(1e-6, 0.9))
def test_no_false_negatives(ids: list[str], n: int, p: float) -> None:
    bloom = BloomFilter(n, p)
    half = len(ids) // 2
    for item in ids[:half]:
        bloom.add(item)
    assert bloom.add_many(ids[half:]) == len(ids) - half
    assert all(item in bloom for item in ids)
    assert all(bloom.might_contain(item) for item in ids)
    assert len(bloom) == len(ids)


@pytest.mark.parametrize("p", [0.01, 0.001, 0.05])
def test_measured_false_positive_rate(p: float) -> None:
    n = 100_000
    bloom = BloomFilter(n, p)
    members = random_ids(n, f"members-{p}")
    bloom.add_many(members)
    others = set(random_ids(n, f"others-{p}")) - set(members)
    false_positives = sum(item in bloom for item in others)
    measured = false_positives / len(others)
    assert abs(measured - p) <= 0.25 * p, f"measured {measured:.5f} for p={p}"
    assert all(item in bloom for item in members)


def test_concurrent_adds_from_8_threads(fast_switching: None) -> None:
    bloom = BloomFilter(80_000, 0.01)
    chunks = [fresh_ids(5_000) for _ in range(8)]
    barrier = threading.Barrier(8)

    def work(chunk: list[str], index: int) -> None:
        barrier.wait()
        if index % 2:
            bloom.add_many(chunk, chunk_size=64)
        else:
            for item in chunk:
                bloom.add(item)

    threads = [threading.Thread(target=work, args=(chunk, i)) for i, chunk in enumerate(chunks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(bloom) == 40_000
    assert all(item in bloom for chunk in chunks for item in chunk)


def test_lock_free_checks_never_miss_a_completed_add(fast_switching: None) -> None:
    bloom = BloomFilter(50_000, 0.01)
    ids = fresh_ids(20_000)
    done: list[int] = []  # how many adds have completed, published by the writer
    misses: list[str] = []
    stop = threading.Event()

    def write() -> None:
        for i, item in enumerate(ids):
            bloom.add(item)
            done.append(i)
        stop.set()

    def read() -> None:
        while not stop.is_set():
            completed = len(done)
            for item in ids[max(0, completed - 50) : completed]:
                if item not in bloom:
                    misses.append(item)

    threads = [threading.Thread(target=write), threading.Thread(target=read), threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert misses == []


# -- KnownIds: rebuilds -----------------------------------------------------------


def test_rebuild_drops_ids_no_longer_in_the_source(known: KnownIds, clock: Clock) -> None:
    kept, dropped = random_ids(500, "kept"), random_ids(500, "dropped")
    for item in kept + dropped:
        known.add(item)
    clock.now += 3 * MARGIN  # long past: no longer "recent"
    assert known.rebuild(iter(kept)) == 500
    assert all(item in known for item in kept)
    assert sum(item in known for item in dropped) <= 5  # p = 0.001: about 0.5 expected
    stats = known.stats()
    assert stats["rebuilds"] == 1
    assert stats["seeded_elements"] == 500
    assert stats["elements"] == 500
    assert stats["synced_at"] == clock.now


def test_rebuild_keeps_adds_made_while_it_streams(known: KnownIds, clock: Clock) -> None:
    old = random_ids(100, "old")
    for item in old:
        known.add(item)
    clock.now += 3 * MARGIN
    source, during = random_ids(2_000, "source"), random_ids(300, "during")
    halfway, added = threading.Event(), threading.Event()
    seen_mid_rebuild: dict[str, t.Any] = {}

    def stream() -> t.Iterator[str]:
        yield from source[:1_000]
        halfway.set()
        assert added.wait(10)
        yield from source[1_000:]

    def add_concurrently() -> None:
        assert halfway.wait(10)
        seen_mid_rebuild["stats"] = known.stats()
        seen_mid_rebuild["old_present"] = all(item in known for item in old)
        for item in during:
            known.add(item)
        added.set()

    thread = threading.Thread(target=add_concurrently)
    thread.start()
    known.rebuild(stream(), batch_size=100)
    thread.join()
    assert seen_mid_rebuild["stats"]["rebuilding"] is True
    assert seen_mid_rebuild["old_present"]  # the old filter answers until the swap
    assert all(item in known for item in source + during)
    assert sum(item in known for item in old) <= 2
    assert known.synced_at == clock.now
    assert known.stats()["rebuilding"] is False


def test_synced_at_is_when_the_rebuild_started(known: KnownIds, clock: Clock) -> None:
    start = clock.now

    def slow_stream() -> t.Iterator[str]:
        for item in random_ids(50, "slow"):
            clock.now += 10  # the scan takes a while
            yield item

    known.rebuild(slow_stream())
    assert known.synced_at == start
    assert clock.now == start + 500


def test_recent_adds_survive_a_rebuild_that_missed_them(known: KnownIds, clock: Clock) -> None:
    # A session created just before the scan began and committed after it
    # passed: the store's ids do not include it, yet it must stay known.
    in_flight = "in-flight-session-id-0001"
    known.rebuild(iter(()))
    known.add(in_flight)
    clock.now += MARGIN / 2
    known.rebuild(iter(()))
    assert in_flight in known
    assert not known.can_skip_lookup(in_flight, issued_at=clock.now, now=clock.now, single_process=True)
    clock.now += 2 * MARGIN + 1
    known.rebuild(iter(()))
    assert in_flight not in known


def test_failed_rebuild_keeps_the_old_filter(known: KnownIds, clock: Clock) -> None:
    first = random_ids(100, "first")
    known.rebuild(iter(first))
    synced = known.synced_at
    clock.now += 3 * MARGIN

    def broken() -> t.Iterator[str]:
        yield "some-id-from-the-store"
        raise ConnectionError("store went away")

    with pytest.raises(ConnectionError):
        known.rebuild(broken())
    assert known.synced_at == synced
    assert known.stats()["rebuilds"] == 1
    assert known.stats()["rebuilding"] is False
    assert all(item in known for item in first)


def test_rebuild_can_resize(known: KnownIds) -> None:
    before = known.filter.bits
    known.rebuild(iter(random_ids(10, "resize")), expected_elements=1_000_000)
    assert known.filter.bits == optimal_size(1_000_000, 0.001)[0] > before
    assert known.stats()["expected_elements"] == 1_000_000


def test_should_rebuild(clock: Clock) -> None:
    known = KnownIds(100, 0.01, clock=clock)
    assert known.should_rebuild(clock.now, max_age=3600)
    known.rebuild(iter(random_ids(10, "a")))
    assert not known.should_rebuild(clock.now + 10, max_age=3600)
    assert known.should_rebuild(clock.now + 3600, max_age=3600)
    for item in random_ids(90, "b"):
        known.add(item)
    assert known.should_rebuild(clock.now, max_age=3600)


# -- KnownIds: use 1, new ids -------------------------------------------------------


def test_is_free_needs_a_seeded_filter(known: KnownIds) -> None:
    assert not known.is_free("never-seen-anywhere-0001")  # cannot tell yet
    known.rebuild(iter(["taken-id-000000000001"]))
    assert known.is_free("never-seen-anywhere-0001")
    assert not known.is_free("taken-id-000000000001")
    stats = known.stats()
    assert (stats["lookups_saved"], stats["maybe_present"]) == (1, 1)


def test_claim_new_id_skips_the_store_once_seeded(known: KnownIds) -> None:
    taken = "taken-id-000000000001"
    known.rebuild(iter([taken]))
    candidates = iter([taken, "fresh-id-000000000002"])

    def exists(candidate: str) -> bool:
        raise AssertionError("the store was asked")

    claimed = known.claim_new_id(lambda: next(candidates), exists)
    assert claimed == "fresh-id-000000000002"
    assert claimed in known


def test_claim_new_id_asks_the_store_before_seeding(known: KnownIds) -> None:
    candidates = iter(["taken-id-000000000001", "fresh-id-000000000002"])
    asked: list[str] = []

    def exists(candidate: str) -> bool:
        asked.append(candidate)
        return candidate.startswith("taken")

    assert known.claim_new_id(lambda: next(candidates), exists) == "fresh-id-000000000002"
    assert asked == ["taken-id-000000000001", "fresh-id-000000000002"]
    assert "fresh-id-000000000002" in known


def test_claim_new_id_falls_back_to_the_store_when_saturated(clock: Clock) -> None:
    known = KnownIds(1, 0.5, clock=clock)  # 2 bits, 1 hash
    known.rebuild(iter(random_ids(100, "saturate")))  # every bit set: everything is "maybe"
    asked: list[str] = []
    counter = iter(range(100))

    def exists(candidate: str) -> bool:
        asked.append(candidate)
        return False

    claimed = known.claim_new_id(lambda: f"candidate-{next(counter):012d}", exists, attempts=8)
    assert asked == [claimed] == ["candidate-000000000008"]
    assert known.stats()["maybe_present"] == 8


def test_claim_new_id_gives_up_on_a_broken_generator(known: KnownIds) -> None:
    with pytest.raises(RuntimeError):
        known.claim_new_id(lambda: "always-the-same-id-01", lambda c: True, attempts=3)


# -- KnownIds: use 2, skipping the lookup -------------------------------------------


def test_tokens_issued_after_the_sync_minus_margin_never_skip(known: KnownIds, clock: Clock) -> None:
    known.rebuild(iter(()))
    synced = clock.now
    clock.now += 3600
    for issued in (synced - MARGIN, synced - MARGIN + 0.5, synced - 1, synced, synced + 1800, clock.now):
        assert not known.can_skip_lookup("unknown-id-0000000001", issued, clock.now, single_process=False)
    assert known.stats()["lookups_saved"] == 0


def test_tokens_issued_before_and_absent_skip(known: KnownIds, clock: Clock) -> None:
    known.rebuild(iter(()))
    synced = clock.now
    assert known.can_skip_lookup("unknown-id-0000000001", synced - MARGIN - 1, synced, single_process=False)
    assert known.can_skip_lookup("unknown-id-0000000001", synced - 10 * MARGIN, synced + 5, False)
    assert known.stats()["lookups_saved"] == 2


def test_present_ids_never_skip(known: KnownIds, clock: Clock) -> None:
    present = random_ids(200, "present")
    known.rebuild(iter(present[:100]))
    for item in present[100:]:
        known.add(item)
    for item in present:
        for single in (False, True):
            assert not known.can_skip_lookup(item, 0.0, clock.now, single_process=single)
    assert known.stats()["maybe_present"] == 400
    assert known.stats()["lookups_saved"] == 0


def test_single_process_skips_whenever_absent(known: KnownIds, clock: Clock) -> None:
    assert not known.can_skip_lookup("unknown-id-0000000001", clock.now, clock.now, single_process=True)
    known.rebuild(iter(()))
    assert known.can_skip_lookup("unknown-id-0000000001", clock.now, clock.now, single_process=True)
    assert known.can_skip_lookup("unknown-id-0000000001", clock.now + 99, clock.now, single_process=True)


def test_never_skips_when_the_clock_is_behind_the_sync(known: KnownIds, clock: Clock) -> None:
    known.rebuild(iter(()))
    for single in (False, True):
        assert not known.can_skip_lookup("unknown-id-0000000001", 0.0, clock.now - 1, single_process=single)


class SharedStore:
    """The ids of a store shared by several workers, each with its commit time."""

    def __init__(self) -> None:
        self.committed: dict[str, float] = {}

    def ids_at(self, moment: float) -> t.Iterator[str]:
        return (item for item, at in self.committed.items() if at <= moment)


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.floats(0, 600), st.floats(0, 30), st.floats(0, 300)),  # issue, latency, check delay
        min_size=1,
        max_size=20,
    ),
    rebuild_at=st.floats(0, 600),
    skew_a=st.floats(-10, 10),
    skew_b=st.floats(-10, 10),
)
def test_two_workers_never_lose_a_session(
    events: list[tuple[float, float, float]], rebuild_at: float, skew_a: float, skew_b: float
) -> None:
    """Worker A issues ids (token ``issued`` from A's clock, truncated to a
    second as in tokens), each committed ``latency`` later; worker B's filter
    is seeded from the store as it was when B's rebuild began. Whenever B sees
    a token (after its commit) whose session is stored, B must look it up.
    Commit latency (< 30 s) plus skew (< 20 s) plus 1 s stays under the margin."""
    base = 1_800_000_000.0
    store = SharedStore()
    clock_b = Clock(base + rebuild_at + skew_b)
    worker_b = KnownIds(10_000, 0.01, margin=MARGIN, clock=clock_b)
    tokens = []
    for index, (issue, latency, delay) in enumerate(events):
        session_id = f"session-{index:06d}-{uuid.uuid4().hex}"
        store.committed[session_id] = base + issue + latency  # true time
        tokens.append((session_id, int(base + issue + skew_a), base + issue + latency + delay))
    worker_b.rebuild(store.ids_at(base + rebuild_at))
    assert worker_b.synced_at == base + rebuild_at + skew_b
    for session_id, issued, seen_at in tokens:
        now_b = seen_at + skew_b
        assert not worker_b.can_skip_lookup(session_id, issued, now_b, single_process=False)


# -- observability -------------------------------------------------------------------


class _Config:
    bloom_expected_elements = 10_000
    bloom_false_positive_rate = 0.02


def test_stats(clock: Clock) -> None:
    known = KnownIds.from_config(t.cast("t.Any", _Config()), clock=clock)
    assert known.stats()["synced_at"] is None
    known.rebuild(iter(random_ids(1_000, "stats")))
    stats = known.stats()
    bits, hashes = optimal_size(10_000, 0.02)
    assert stats == {
        "size_bytes": math.ceil(bits / 8),
        "elements": 1_000,
        "expected_elements": 10_000,
        "bits": bits,
        "hashes": hashes,
        "estimated_false_positive_rate": pytest.approx((1 - math.exp(-hashes * 1_000 / bits)) ** hashes),
        "lookups_saved": 0,
        "maybe_present": 0,
        "rebuilds": 1,
        "seeded_elements": 1_000,
        "synced_at": clock.now,
        "rebuilding": False,
    }


def test_from_a_real_config() -> None:
    from wsgi_session import SessionConfig

    config = SessionConfig(
        secret_keys=["a secret of at least 32 bytes ........"], bloom_expected_elements=5_000
    )
    known = KnownIds.from_config(config)
    assert known.filter.expected_elements == 5_000
    assert known.filter.false_positive_rate == config.bloom_false_positive_rate


# -- seeding from real stores -----------------------------------------------------------

SEED_COUNT = 20_000


def test_seed_from_redis_scan(redis_client: redis.Redis[bytes], redis_prefix: str) -> None:
    ids = fresh_ids(SEED_COUNT)
    with redis_client.pipeline(transaction=False) as pipe:
        for index, item in enumerate(ids):
            if index % 2:
                pipe.set(redis_prefix + item, b"x")
            else:
                pipe.hset(redis_prefix + item, mapping={"v": b"1"})
        pipe.execute()
    batches: list[int] = []

    def scan() -> t.Iterator[str]:
        start = len(redis_prefix)
        cursor = 0
        while True:
            cursor, keys = redis_client.scan(cursor, match=redis_prefix + "*", count=1_000)
            batches.append(len(keys))
            yield from (key[start:].decode() for key in keys)
            if cursor == 0:
                return

    known = KnownIds(100_000, 0.001)
    streamed = known.rebuild(scan(), batch_size=1_000)
    assert streamed >= SEED_COUNT  # SCAN may return a key twice, never miss one
    assert len(batches) > 5  # streamed in many round trips, not one
    assert all(item in known for item in ids)
    assert sum(item in known for item in fresh_ids(10_000)) < 50


def test_seed_from_redis_store_iter_ids(redis_client: redis.Redis[bytes], redis_prefix: str) -> None:
    from wsgi_session.stores import RedisStore

    ids = fresh_ids(SEED_COUNT)
    with redis_client.pipeline(transaction=False) as pipe:
        for item in ids:
            pipe.hset(redis_prefix + item, mapping={"v": b"1"})
        pipe.execute()
    known = KnownIds(100_000, 0.001)
    assert known.rebuild(RedisStore(redis_client, prefix=redis_prefix).iter_ids(500)) >= SEED_COUNT
    assert all(item in known for item in ids)


def test_seed_from_postgresql_keyset(pg_engine: sa.Engine) -> None:
    ids = fresh_ids(SEED_COUNT)
    pages: list[int] = []
    with pg_engine.connect() as conn:
        conn.execute(sa.text('CREATE TEMP TABLE bloom_ids (id varchar(128) COLLATE "C" PRIMARY KEY)'))
        conn.execute(sa.insert(sa.table("bloom_ids", sa.column("id"))), [{"id": item} for item in ids])
        page_query = sa.text("SELECT id FROM bloom_ids WHERE id > :last ORDER BY id LIMIT :size")

        def keyset(size: int) -> t.Iterator[str]:
            last = ""
            while True:
                page = list(conn.execute(page_query, {"last": last, "size": size}).scalars())
                pages.append(len(page))
                yield from page
                if len(page) < size:
                    return
                last = page[-1]

        known = KnownIds(100_000, 0.001)
        assert known.rebuild(keyset(1_000), batch_size=1_000) == SEED_COUNT
        conn.rollback()  # nothing is left behind
    assert len(pages) == SEED_COUNT // 1_000 + 1
    assert all(item in known for item in ids)
    assert sum(item in known for item in fresh_ids(10_000)) < 50


def test_seed_from_postgresql_store_iter_ids(pg_engine: sa.Engine) -> None:
    from wsgi_session.stores import SQLAlchemyStore

    store = SQLAlchemyStore(pg_engine, table_name=f"bloom_test_{uuid.uuid4().hex[:12]}")
    store.setup()
    try:
        ids = fresh_ids(SEED_COUNT)
        rows = [
            {
                "id": item,
                "data": b"",
                "version": 1,
                "created": 0.0,
                "expires": 1e12,
                "absolute": None,
                "longterm": False,
            }
            for item in ids
        ]
        with pg_engine.begin() as conn:
            conn.execute(store.table.insert(), rows)
        known = KnownIds(100_000, 0.001)
        assert known.rebuild(store.iter_ids(1_000)) == SEED_COUNT
        assert all(item in known for item in ids)
    finally:
        store.table.drop(pg_engine)
