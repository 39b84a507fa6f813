"""Removing everything a run created: Redis keys, SQL tables, SQLite files.

Every name a run creates starts with its namespace's token (Beaker's lock
keys with ``beaker_lock:`` and then the token; child namespaces extend the
token), so :func:`sweep` can remove all of it at the end, whatever happened
during the run.
"""

from __future__ import annotations

import sys

from .settings import POSTGRES_URL, PREFIX, REDIS_URL, SQLITE_DIR, Namespace


def delete_redis_keys(pattern: str) -> int:
    """``SCAN`` + ``DEL`` every key matching ``pattern``; how many went."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) == 500:
                deleted += client.delete(*batch)
                batch = []
        if batch:
            deleted += client.delete(*batch)
        return deleted
    finally:
        client.close()


def drop_postgres_tables(prefix: str) -> list[str]:
    """Drop every table of the benchmark database whose name starts with ``prefix``."""
    import sqlalchemy as sa

    engine = sa.create_engine(POSTGRES_URL, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            names = list(
                conn.execute(
                    sa.text("SELECT tablename FROM pg_tables WHERE tablename LIKE :pattern"),
                    {"pattern": prefix.replace("_", r"\_") + "%"},
                ).scalars()
            )
            for name in names:
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name}"'))
        return names
    finally:
        engine.dispose()


def remove_sqlite_files(prefix: str) -> list[str]:
    """Remove the SQLite files (and journals) whose names start with ``prefix``."""
    removed = []
    for path in SQLITE_DIR.glob(f"{prefix}*.sqlite3*"):
        path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


def sweep(namespace: Namespace) -> None:
    """Remove everything under ``namespace``; report what was left over."""
    token = namespace.token
    assert token.startswith(PREFIX), token
    steps = (
        ("Redis keys", lambda: delete_redis_keys(f"{token}*") + delete_redis_keys(f"beaker_lock:{token}*")),
        ("PostgreSQL tables", lambda: len(drop_postgres_tables(token))),
        ("SQLite files", lambda: len(remove_sqlite_files(token))),
    )
    for what, step in steps:
        try:
            step()
        except Exception as exc:
            print(f"warning: removing the run's {what} failed: {exc!r}", file=sys.stderr)
