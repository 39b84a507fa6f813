"""Fixtures for the bloom filter tests: real Redis and PostgreSQL servers.

**Service rule**: a service that cannot be reached skips its tests with the
reason, or fails them when the ``CI`` environment variable is set. Override the
addresses with ``WSGI_SESSION_REDIS_URL`` and ``WSGI_SESSION_POSTGRES_URL``.
"""

from __future__ import annotations

import os
import typing as t
import uuid

import pytest
import redis
import sqlalchemy as sa

REDIS_URL = os.environ.get("WSGI_SESSION_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "WSGI_SESSION_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)


def service_unavailable(reason: str) -> t.NoReturn:
    """Skip the test because a service is missing, or fail it under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so every service must be available)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def redis_client() -> t.Iterator[redis.Redis[bytes]]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_unavailable(f"Redis at {REDIS_URL} is unreachable: {exc}")
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis[bytes]) -> t.Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"test:bloom:{uuid.uuid4().hex}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=prefix + "*", count=1000))
    for start in range(0, len(keys), 1000):
        redis_client.unlink(*keys[start : start + 1000])


@pytest.fixture(scope="module")
def pg_engine() -> t.Iterator[sa.Engine]:
    engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        service_unavailable(f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc}")
    yield engine
    engine.dispose()
