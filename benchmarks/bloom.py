"""What the bloom filter of known ids costs and saves, in measured numbers.

* ns per operation: ``BloomFilter.add`` / ``add_many`` / checks (present and
  absent ids), and the ``KnownIds`` calls the manager makes (``add``,
  ``is_free``, ``can_skip_lookup``); the median of ``--runs`` loops over
  ``--loop`` ids each, with the garbage collector off, as ``timeit`` does;
* memory per element at ``n = 1,000,000`` for ``p = 0.01`` and ``0.0001``;
* store round trips per new id with the filter (``claim_new_id`` over a
  seeded filter) against one ``exists()`` per new id without it;
* seeding ``--seed-ids`` ids into ``KnownIds.rebuild``: from Redis (written
  with a pipeline under a temporary prefix, then SCAN-streamed: directly and
  through ``RedisStore.iter_ids``) and from PostgreSQL (a temp table filled
  with COPY and keyset-paginated directly, and a ``SQLAlchemyStore`` table
  filled with COPY and read by its ``iter_ids``). Each seeding is timed once
  as is and once under ``tracemalloc`` for the peak extra memory (which
  includes the new filter itself). Everything written is removed afterwards.

Run it from the repository root::

    python benchmarks/bloom.py                      # everything
    python benchmarks/bloom.py --seed-ids 100000 --skip-postgres
"""

from __future__ import annotations

import argparse
import base64
import gc
import io
import os
import platform
import statistics
import sys
import time
import tracemalloc
import typing as t
import uuid
from importlib import metadata
from pathlib import Path

import mmh3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsgi_session.bloom import BloomFilter, KnownIds

if t.TYPE_CHECKING:
    import redis
    import sqlalchemy as sa


def make_ids(count: int) -> list[str]:
    """``count`` distinct ids shaped like ``secrets.token_urlsafe(24)``."""
    return [base64.urlsafe_b64encode(os.urandom(24)).decode() for _ in range(count)]


def median_ns(loop: t.Callable[[], int], runs: int) -> float:
    """Median over ``runs`` of the ns per operation of ``loop()``, which
    returns how many operations it made."""
    results = []
    for _ in range(runs):
        gc.disable()
        try:
            start = time.perf_counter_ns()
            count = loop()
            results.append((time.perf_counter_ns() - start) / count)
        finally:
            gc.enable()
    return statistics.median(results)


# -- per-operation costs --------------------------------------------------------------


def bench_operations(loop_size: int, runs: int) -> None:
    ids, others = make_ids(loop_size), make_ids(loop_size)
    print(f"\n## ns per operation ({loop_size:,} ids per loop, median of {runs}, p = 0.01)")

    def hash_only() -> int:
        for item in ids:
            mmh3.hash128(item, 0, signed=False)
        return len(ids)

    def add() -> int:
        bloom = BloomFilter(loop_size, 0.01)
        for item in ids:
            bloom.add(item)
        return len(ids)

    def add_many() -> int:
        return BloomFilter(loop_size, 0.01).add_many(ids)

    full = BloomFilter(loop_size, 0.01)
    full.add_many(ids)

    def check(items: list[str]) -> t.Callable[[], int]:
        def run() -> int:
            for item in items:
                item in full  # noqa: B015
            return len(items)

        return run

    known = KnownIds(loop_size, 0.01)
    known.rebuild(ids)
    now = time.time()

    def known_add() -> int:
        fresh = KnownIds(loop_size, 0.01)
        for item in ids:
            fresh.add(item)
        return len(ids)

    def is_free() -> int:
        for item in others:
            known.is_free(item)
        return len(others)

    def can_skip() -> int:
        for item in others:
            known.can_skip_lookup(item, 0.0, now, False)
        return len(others)

    rows = [
        ("mmh3.hash128 alone (the floor)", hash_only),
        ("BloomFilter.add", add),
        ("BloomFilter.add_many (per id)", add_many),
        ("check, id present (k probes)", check(ids)),
        ("check, id absent (early exit)", check(others)),
        ("KnownIds.add (lock + both filters)", known_add),
        ("KnownIds.is_free, absent id", is_free),
        ("KnownIds.can_skip_lookup, absent", can_skip),
    ]
    for label, loop in rows:
        print(f"{label:<40} {median_ns(loop, runs):>8.0f} ns")


# -- memory ------------------------------------------------------------------------------


def bench_memory(n: int) -> None:
    print(f"\n## memory per element at n = {n:,}")
    print(f"{'p':>8} {'bits':>12} {'k':>3} {'bits/elem':>10} {'bytes/elem':>11} {'measured bytes':>15}")
    for p in (0.01, 0.001, 0.0001):
        tracemalloc.start()
        bloom = BloomFilter(n, p)
        measured, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(
            f"{p:>8} {bloom.bits:>12,} {bloom.hashes:>3} {bloom.bits / n:>10.2f}"
            f" {bloom.size_bytes / n:>11.3f} {measured:>15,}"
        )
        del bloom


def bench_round_trips(n: int, new_ids: int) -> None:
    print(f"\n## store round trips per new id (filter seeded with {n:,} ids, p = 0.01)")
    known = KnownIds(n, 0.01)
    known.rebuild(make_ids(n))
    asked = 0

    def exists(candidate: str) -> bool:
        nonlocal asked
        asked += 1
        return False

    generated = 0

    def generate() -> str:
        nonlocal generated
        generated += 1
        return make_ids(1)[0]

    for _ in range(new_ids):
        known.claim_new_id(generate, exists)
    print(f"without the filter (axum-style exists() per id): {1.0:.4f} round trips per new id")
    print(f"with the filter (claim_new_id):                   {asked / new_ids:.4f} round trips per new id")
    print(f"candidates drawn per new id:                      {generated / new_ids:.4f}")
    print(
        f"estimated fpr at the end (n + new ids added):     {known.filter.estimated_false_positive_rate:.4f}"
    )


# -- seeding -----------------------------------------------------------------------------


def measure_seeding(label: str, source: t.Callable[[], t.Iterable[str]], n: int, batch: int) -> None:
    known = KnownIds(n, 0.01)
    gc.collect()
    start = time.perf_counter()
    streamed = known.rebuild(source(), batch_size=batch)
    elapsed = time.perf_counter() - start
    known = KnownIds(n, 0.01)
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    known.rebuild(source(), batch_size=batch)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"{label:<38} {streamed:>10,} ids {elapsed:>7.2f} s {streamed / elapsed:>10,.0f} ids/s"
        f"   peak extra {(peak - base) / 2**20:>6.2f} MiB (filter {known.filter.size_bytes / 2**20:.2f} MiB)"
    )


def bench_redis(url: str, ids: list[str], batch: int) -> None:
    import redis

    from wsgi_session.stores import RedisStore

    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        print(f"redis: skipped, {url} unreachable: {exc}")
        return
    prefix = f"bench:bloom:{uuid.uuid4().hex}:"
    try:
        start = time.perf_counter()
        for offset in range(0, len(ids), 10_000):
            with client.pipeline(transaction=False) as pipe:
                for item in ids[offset : offset + 10_000]:
                    pipe.set(prefix + item, b"x", ex=3600)  # expires even if cleanup fails
                pipe.execute()
        print(f"(redis: wrote {len(ids):,} keys in {time.perf_counter() - start:.1f}s)")

        def scan() -> t.Iterator[str]:
            start = len(prefix)
            for key in client.scan_iter(match=prefix + "*", count=batch):
                yield key[start:].decode()

        measure_seeding("redis, SCAN streamed directly", scan, len(ids), batch)
        store = RedisStore(client, prefix=prefix)
        measure_seeding("redis, RedisStore.iter_ids", lambda: store.iter_ids(batch), len(ids), batch)
    finally:
        _delete_prefix(client, prefix)
        client.close()


def _delete_prefix(client: redis.Redis[bytes], prefix: str) -> None:
    keys = list(client.scan_iter(match=prefix + "*", count=10_000))
    for offset in range(0, len(keys), 10_000):
        client.unlink(*keys[offset : offset + 10_000])


def _copy(conn: sa.Connection, sql: str, lines: t.Iterable[str]) -> None:
    buffer = io.StringIO("".join(lines))
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    cursor.copy_expert(sql, buffer)


def _vacuum(conn: sa.Connection, table: str) -> None:
    """VACUUM ANALYZE a freshly loaded table, so the timed scan meets it as a
    live table would be (hint bits set, visibility map, statistics)."""
    conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(f"VACUUM ANALYZE {table}")
    conn.commit()  # ends SQLAlchemy's (empty) transaction, so the level can change back
    conn.execution_options(isolation_level="READ COMMITTED")


def bench_postgres(url: str, ids: list[str], batch: int) -> None:
    import sqlalchemy as sa

    from wsgi_session.stores import SQLAlchemyStore

    engine = sa.create_engine(url, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        print(f"postgresql: skipped, {url} unreachable: {exc}")
        return
    try:
        with engine.connect() as conn:
            start = time.perf_counter()
            conn.execute(sa.text('CREATE TEMP TABLE bloom_bench (id varchar(128) COLLATE "C" PRIMARY KEY)'))
            _copy(conn, "COPY bloom_bench (id) FROM STDIN", (f"{item}\n" for item in ids))
            conn.commit()
            _vacuum(conn, "bloom_bench")
            print(f"(postgresql: COPY {len(ids):,} ids to a temp table: {time.perf_counter() - start:.1f}s)")
            page = sa.text("SELECT id FROM bloom_bench WHERE id > :last ORDER BY id LIMIT :size")

            def keyset() -> t.Iterator[str]:
                last = ""
                while True:
                    rows = list(conn.execute(page, {"last": last, "size": batch}).scalars())
                    yield from rows
                    if len(rows) < batch:
                        return
                    last = rows[-1]

            measure_seeding("postgresql, temp table keyset", keyset, len(ids), batch)
            conn.rollback()

        store = SQLAlchemyStore(engine, table_name=f"bloom_bench_{uuid.uuid4().hex[:12]}")
        store.setup()
        try:
            start = time.perf_counter()
            with engine.begin() as conn:
                columns = "id, data, version, created, expires, absolute, longterm"
                lines = (f"{item}\t\\\\x\t1\t0\t1e12\t\\N\tf\n" for item in ids)
                _copy(conn, f"COPY {store.table.name} ({columns}) FROM STDIN", lines)
            with engine.connect() as conn:
                _vacuum(conn, store.table.name)
            print(
                f"(postgresql: COPY {len(ids):,} rows to a store table: {time.perf_counter() - start:.1f}s)"
            )
            measure_seeding(
                "postgresql, SQLAlchemyStore.iter_ids", lambda: store.iter_ids(batch), len(ids), batch
            )
        finally:
            store.table.drop(engine)
    finally:
        engine.dispose()


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Cost and savings of the bloom filter of known ids.")
    parser.add_argument("--runs", type=int, default=5, help="runs per timing loop; the median is shown (5)")
    parser.add_argument("--loop", type=int, default=100_000, help="ids per timing loop (100000)")
    parser.add_argument("--elements", type=int, default=1_000_000, help="n for memory and round trips")
    parser.add_argument("--new-ids", type=int, default=100_000, help="new ids claimed for round trips")
    parser.add_argument("--seed-ids", type=int, default=1_000_000, help="ids seeded from each store")
    parser.add_argument("--batch-size", type=int, default=1_000, help="ids per store round trip (1000)")
    parser.add_argument(
        "--redis-url", default=os.environ.get("WSGI_SESSION_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "WSGI_SESSION_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--skip-redis", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("mmh3", "bitarray"))
    print(f"# bloom filter benchmark: Python {platform.python_version()}, {versions}, {os.cpu_count()} CPUs")
    bench_operations(args.loop, args.runs)
    bench_memory(args.elements)
    bench_round_trips(args.elements, args.new_ids)
    if args.skip_redis and args.skip_postgres:
        return
    print(f"\n## seeding {args.seed_ids:,} ids, {args.batch_size} per round trip")
    ids = make_ids(args.seed_ids)
    if not args.skip_redis:
        bench_redis(args.redis_url, ids, args.batch_size)
    if not args.skip_postgres:
        bench_postgres(args.postgres_url, ids, args.batch_size)


if __name__ == "__main__":
    main()
