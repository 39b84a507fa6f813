"""The table of :class:`~wsgi_session.stores.SQLAlchemyStore`, its rows and
the one-statement writes of a lone diff, and what differs between databases:
column types, insert-or-ignore, the autocommit pool, and which errors mean
"unreachable" or "lost a race". Private to the SQL store (PostgreSQL's
``NOTIFY`` and ``LISTEN`` are in :mod:`._sql_notify`, statements run on the
DBAPI cursor in :mod:`._sql_cursor`)."""

from __future__ import annotations

import os
import typing as t
import weakref

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql

from ..record import MOVED_KEY, apply_diff
from ._codec import make_record, pack_values, unpack_values

if t.TYPE_CHECKING:
    from sqlalchemy.sql.dml import Insert, Update

    from ..record import SessionDiff, SessionRecord

MYSQL = ("mysql", "mariadb")

_ID_TYPE = (
    sa.String(128)
    .with_variant(mysql.VARCHAR(128, charset="utf8mb4", collation="utf8mb4_bin"), *MYSQL)
    .with_variant(sa.String(128, collation="C"), "postgresql")
)
_DATA_TYPE = sa.LargeBinary().with_variant(mysql.LONGBLOB(), *MYSQL)


def session_table(name: str, metadata: sa.MetaData) -> sa.Table:
    """The table :class:`SQLAlchemyStore` keeps sessions in, defined in
    ``metadata`` (for Alembic migrations: add it to your own metadata)."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", _ID_TYPE, primary_key=True),
        sa.Column("data", _DATA_TYPE, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("expires", sa.Double, nullable=False),
        sa.Column("absolute", sa.Double, nullable=True),
        sa.Column("longterm", sa.Boolean, nullable=False),
        sa.Index(f"ix_{name}_expires", "expires"),
        sa.Index(f"ix_{name}_absolute", "absolute"),
    )


def record_from_row(row: t.Sequence[t.Any]) -> SessionRecord:
    """A row of the table (all its columns, in order: a SQLAlchemy row or the
    DBAPI's tuple, whose types are the driver's: ``bytes`` or ``memoryview``
    data, ``0``/``1`` flags) as a record; raises
    :class:`~wsgi_session.exceptions.BadStoredData` if its data cannot be
    unpacked or its columns are not what the store writes."""
    session_id, data, version, created, expires, absolute, longterm = row
    return make_record(
        session_id,
        unpack_values(bytes(data)),
        version=version,
        created=created,
        expires=expires,
        absolute=absolute,
        longterm=longterm,
    )


#: The keys of :func:`insert_row`'s and :func:`guarded_update_params`' dicts.
INSERT_KEYS = ("id", "created", "data", "version", "expires", "absolute", "longterm")
SNAPSHOT_UPDATE_KEYS = (
    "match_id",
    "match_version",
    "match_expires",
    "data",
    "version",
    "expires",
    "absolute",
    "longterm",
)


def insert_row(record: SessionRecord) -> dict[str, t.Any]:
    """The columns an insert writes."""
    return {"id": record.id, "created": record.created, **row_values(record)}


def guarded_update(table: sa.Table, *, deadline: bool = False) -> Update:
    """``UPDATE`` of a row only if it is still at the version the writer
    read (rowcount 1 when it was); with ``deadline``, also at the idle
    deadline of the writer's snapshot. The deadline tells apart a version
    number that a process's cached copy and the stored row reached by
    different writes: a background write dropped at a renewed session's
    forwarding stub leaves the copy one version ahead, at the stub's
    version, and only the stub's short deadline differs. (A row read in the
    same transaction needs no deadline: its version is enough, and a driver
    that returns doubles rounded could never match it.) Executed with
    :func:`guarded_update_params`, whose keys make the ``SET`` clause. Built
    once per store, so SQLAlchemy builds and compiles it once, not on every
    write."""
    guards = [table.c.id == sa.bindparam("match_id"), table.c.version == sa.bindparam("match_version")]
    if deadline:
        guards.append(table.c.expires == sa.bindparam("match_expires"))
    return sa.update(table).where(*guards)


def guarded_update_params(record: SessionRecord, expected: SessionRecord) -> dict[str, t.Any]:
    """The parameters writing ``record`` over its row if the row is still
    ``expected`` (its version, and for a guard with a deadline its idle
    deadline)."""
    return {
        "match_id": record.id,
        "match_version": expected.version,
        "match_expires": expected.expires,
        **row_values(record),
    }


#: A write in one statement: the statement, its parameters, the record it leaves.
OneStatement: t.TypeAlias = "tuple[Update | Insert, dict[str, t.Any], SessionRecord]"


def one_statement(
    diff: SessionDiff, snapshot_update: Update, insert_new: Insert | None
) -> OneStatement | None:
    """The single statement that writes ``diff`` where one is enough, its
    parameters and the record it leaves; ``None`` when the diff must be
    merged into the row read in a transaction.

    Two cases: the writer's snapshot (``diff.base``) is still what is stored
    — ``snapshot_update`` (a :func:`guarded_update` with the deadline)
    writes the merge, no ``SELECT`` — or the diff creates a session that
    does not exist yet (``insert_new``, the dialect's insert-or-ignore)."""
    base = diff.base
    if base is not None:
        if base.id != diff.id or diff.create or MOVED_KEY in base.values:
            return None
        merged = apply_diff(base, diff)
        if merged is None or merged is base:
            return None
        return snapshot_update, guarded_update_params(merged, base), merged
    if diff.create and insert_new is not None:
        record = apply_diff(None, diff)
        if record is not None:
            return insert_new, insert_row(record), record
    return None


def row_values(record: SessionRecord) -> dict[str, t.Any]:
    """The columns an update writes (all but ``id`` and ``created``)."""
    return {
        "data": pack_values(record.values),
        "version": record.version,
        "expires": record.expires,
        "absolute": record.absolute,
        "longterm": record.longterm,
    }


def insert_ignoring_duplicates(table: sa.Table, dialect: str) -> Insert | None:
    """An ``INSERT`` that inserts nothing (rowcount 0) when the id exists,
    or ``None`` where the dialect has no such statement."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing(index_elements=[table.c.id])
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing(index_elements=[table.c.id])
    if dialect in MYSQL:
        return sa.insert(table).prefix_with("IGNORE")
    return None


#: The autocommit engines made by :func:`autocommit_engine`, so a forked child
#: drops the connections it inherited instead of sharing them with its parent.
_OWN_POOLS: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


def _drop_inherited_connections() -> None:
    for engine in list(_OWN_POOLS):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_drop_inherited_connections)


def autocommit_engine(engine: sa.Engine) -> tuple[sa.Engine, bool]:
    """An engine for statements that need no transaction, and whether it is
    a new one (whose pool the caller must dispose of).

    Switching a pooled connection to autocommit and back costs a round trip
    on PostgreSQL (psycopg2 sends ``SET default_transaction_isolation`` when
    the connection is reset), so a single-statement read would cost two. For
    a database server the answer is a second pool, configured as the
    engine's (same URL, ``connect_args`` and connection events, same size),
    whose connections are in autocommit for good: one statement, one round
    trip. SQLite keeps one pool (a second one could open a second in-memory
    database, and it has no round trips to save).

    Not carried over: event listeners registered on the engine itself
    (``before_cursor_execute`` and the like); pool and connection events are.
    """
    if engine.dialect.name == "sqlite":
        return engine.execution_options(isolation_level="AUTOCOMMIT"), False
    twin = sa.create_engine(
        engine.url,
        pool=engine.pool.recreate(),
        module=engine.dialect.loaded_dbapi,
        isolation_level="AUTOCOMMIT",
        # Nothing to roll back in autocommit; pymysql would still send a
        # ROLLBACK each time a connection goes back to the pool.
        skip_autocommit_rollback=True,
    )
    _OWN_POOLS.add(twin)
    # The engine's execution options (a schema_translate_map, say) apply to
    # these statements too; its isolation level does not.
    options = {k: v for k, v in engine.get_execution_options().items() if k != "isolation_level"}
    return (twin.execution_options(**options) if options else twin), True


def is_outage(exc: BaseException) -> bool:
    """Whether a SQLAlchemy error means the database cannot serve now."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc,
        sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.DisconnectionError | sa_exc.TimeoutError,
    )


def is_conflict(exc: sa_exc.DBAPIError) -> bool:
    """Whether the database aborted a transaction only because of other
    transactions (a deadlock, a serialization failure, a lock wait timeout)."""
    orig = exc.orig
    state = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)  # psycopg2, psycopg 3
    code = next(iter(getattr(orig, "args", ())), None)  # MySQL: lock wait timeout, deadlock
    return state in ("40001", "40P01") or code in (1205, 1213) or "database is locked" in str(orig)
