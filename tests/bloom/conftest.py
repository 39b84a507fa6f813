"""Fixtures for the bloom filter tests: real Redis and PostgreSQL servers.

**Service rule**: a service that cannot be reached skips its tests with the
reason, or fails them when the ``CI`` environment variable is set. Override the
addresses with ``WSGI_SESSION_REDIS_URL`` and ``WSGI_SESSION_POSTGRES_URL``.
"""

from __future__ import annotations

import typing as t
import uuid

import pytest
import redis
import sqlalchemy as sa
from services import POSTGRES_URL, service_unavailable


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
