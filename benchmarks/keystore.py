"""New visitors with and without the bloom filter, over real Redis and PostgreSQL.

The filter saves the ``exists()`` round trip that a custom ``id_generator``'s
ids need (the default 192-bit ids skip that check with or without a filter),
so the subjects use a custom generator. For each store, in one run, side by
side: requests per second of a new-visitor workload in process, and the
``exists()`` calls per new session, with ``bloom_filter`` on and off.

    python benchmarks/keystore.py [--requests 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
import typing as t

import redis
import sqlalchemy as sa

from wsgi_session import SessionConfig, SessionMiddleware
from wsgi_session.stores import RedisStore, SQLAlchemyStore

if t.TYPE_CHECKING:
    from wsgi_session.stores.base import Store

REDIS_URL = "redis://127.0.0.1:6379/15"
POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
ENVIRON = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_NAME": "bench", "SERVER_PORT": "80",
           "wsgi.url_scheme": "http"}  # fmt: skip


def new_visitor(environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
    environ["session"]["user"] = "visitor"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def custom_id() -> str:
    return "c" + secrets.token_hex(12)


def no_op(*args: t.Any) -> None:
    return None


def measure(store: Store, bloom: bool, requests: int) -> tuple[float, float]:
    """(requests per second, exists() calls per new session)."""
    config = SessionConfig(secret_keys=["keystore-benchmark-secret-0123456789ab"], id_generator=custom_id,
                           bloom_filter=bloom)  # fmt: skip
    middleware = SessionMiddleware(new_visitor, config, store=store)
    calls = 0
    exists = middleware.manager.store.exists

    def counting_exists(session_id: str) -> bool:
        nonlocal calls
        calls += 1
        return exists(session_id)

    middleware.manager.store.exists = counting_exists  # type: ignore[method-assign]
    middleware(dict(ENVIRON), no_op)  # starts the seeding thread
    deadline = time.monotonic() + 30
    while bloom and middleware.bloom_stats()["synced_at"] is None:  # type: ignore[index]
        if time.monotonic() > deadline:
            raise RuntimeError("the bloom filter was not seeded")
        time.sleep(0.01)
    calls = 0
    started = time.perf_counter()
    for _ in range(requests):
        middleware(dict(ENVIRON), no_op)
    elapsed = time.perf_counter() - started
    middleware.close()
    return requests / elapsed, calls / requests


def stores(namespace: str) -> dict[str, t.Callable[[], Store]]:
    engine = sa.create_engine(POSTGRES_URL)
    return {
        "redis": lambda: RedisStore(redis.Redis.from_url(REDIS_URL), prefix=namespace + ":"),
        "postgresql": lambda: SQLAlchemyStore(engine, table_name=namespace),
    }


def cleanup(namespace: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    for keys in iter(lambda: list(client.scan_iter(match=f"{namespace}:*", count=1000))[:1000], []):
        client.delete(*keys)
    engine = sa.create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP TABLE IF EXISTS {namespace}"))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    namespace = "bench_keystore_" + secrets.token_hex(4)
    print(f"new visitors, custom id_generator, {args.requests} requests x {args.runs} runs (median)")
    print(f"{'store':12} {'bloom':6} {'req/s':>10} {'exists()/new session':>22}")
    try:
        for name, make in stores(namespace).items():
            for bloom in (False, True):
                rates, calls = [], []
                for _ in range(args.runs):
                    rate, per = measure(make(), bloom, args.requests)
                    rates.append(rate)
                    calls.append(per)
                print(f"{name:12} {'on' if bloom else 'off':6} {statistics.median(rates):10,.0f} "
                      f"{statistics.median(calls):22.3f}")  # fmt: skip
    finally:
        cleanup(namespace)


if __name__ == "__main__":
    main()
