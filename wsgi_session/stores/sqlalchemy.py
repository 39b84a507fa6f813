"""Sessions in a SQL database, through SQLAlchemy 2 Core.

Works with any database SQLAlchemy supports; tested on SQLite (a file),
PostgreSQL and MySQL/MariaDB. You build the :class:`~sqlalchemy.engine.Engine`
(URL, pool size, ``pool_pre_ping``) as for the rest of your application::

    engine = sqlalchemy.create_engine("postgresql+psycopg2://app@db/app", pool_pre_ping=True)
    store = SQLAlchemyStore(engine, table_name="sessions")

**Layout.** One row per session in ``table_name``, created on first use if
missing: ``id`` (the primary key; compared byte for byte, also on MySQL),
``data`` (every key and value packed into one binary value: a format byte,
then for each key its length, its value's length, the key and the value),
``version`` (the optimistic-concurrency counter), ``created``, ``expires``
and ``absolute`` (epoch seconds as double precision floats, which every
supported database returns exactly; ``absolute`` may be NULL) and
``longterm``. ``expires`` and ``absolute`` are indexed for the purge.

**Round trips.** Reads and most writes are one statement each, run in
autocommit (on PostgreSQL and MySQL through a second pool of the engine's
configuration whose connections stay in autocommit, see
:func:`~wsgi_session.stores._sql_schema.autocommit_engine`): no ``BEGIN``,
``COMMIT`` or isolation ``SET`` around them, so a read costs one query and a
counter increment two. A lone write (a request's own commit) is one
statement when the writer's snapshot is still what is stored (``UPDATE ...
WHERE version = :snapshot AND expires = :snapshot``, merged in Python with
:func:`wsgi_session.record.apply_diff`) or when it creates a session (the
dialect's insert-or-ignore). These statements run on the DBAPI cursor,
past SQLAlchemy's execution layer, unless something would notice (see
:mod:`._sql_cursor`); writes only on a database server and when the store
does not announce with ``NOTIFY``.

**Batches and writes that raced.** A batch of several diffs (requests that
committed together) is one transaction, all of it or nothing, and so is a
lone write that raced (the row changed since the snapshot, or there is no
snapshot). In it each diff is tried the same single-statement way first;
otherwise the row is read, the diff merged, and the row written back only
if nobody changed it meanwhile (``UPDATE ... WHERE version = :read``). When
another writer got there first, the row is read again, locked (``SELECT ...
FOR UPDATE``), and merged again, so concurrent requests that changed
different keys both survive. The store runs its writes at ``READ
COMMITTED`` (on PostgreSQL and MySQL, whatever the engine's
default) so a read sees the latest commit; on SQLite a write transaction
takes the database's write lock up front (``BEGIN IMMEDIATE``) and waits for
it up to the driver's ``timeout``, so the race cannot happen there. A batch
that the database aborts for a deadlock or a lock timeout is run again.
On PostgreSQL (psycopg2) changes can be announced with ``NOTIFY``, for
``coherence="notify"``, so that the announcement commits with the write: a
lone single-statement write announces in that same statement (``WITH written
AS (UPDATE ... RETURNING id) SELECT pg_notify(...) FROM written``: one query,
and a notification only if it wrote), anything else at the end of its
transaction.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import typing as t

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from ..exceptions import StoreUnavailable
from ..record import SessionRecord, apply_diff
from ._codec import unavailable_on
from ._sql_cursor import CursorPath
from ._sql_notify import Announcer, listen_postgres
from ._sql_schema import (
    INSERT_KEYS,
    MYSQL,
    SNAPSHOT_UPDATE_KEYS,
    OneStatement,
    autocommit_engine,
    guarded_update,
    guarded_update_params,
    insert_ignoring_duplicates,
    insert_row,
    is_conflict,
    is_outage,
    one_statement,
    record_from_row,
    session_table,
)
from .base import Store

if t.TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.sql.dml import Insert, Update, UpdateBase

    from ..record import SessionDiff

log = logging.getLogger(__name__)

#: How often one diff is merged again after losing a race before giving up.
_RACE_ATTEMPTS = 16
#: How often a batch is retried after a deadlock or serialization failure.
_BATCH_ATTEMPTS = 3
#: Most ids in one ``IN (...)`` list.
_CHUNK = 500


class SQLAlchemyStore(Store):
    """Sessions in a table of a SQL database.

    :param engine: a synchronous SQLAlchemy 2 :class:`~sqlalchemy.engine.Engine`.
        The store borrows connections from its pool and never disposes of
        it. On a database server the store also keeps a second pool like it
        for its autocommit statements (so up to twice the engine's pool size
        in connections); :meth:`close` disposes of that one.
    :param table_name: the table to use; created (with its indexes) if
        missing, on first use. Default ``"sessions"``.

    Errors that mean the database cannot be reached (``OperationalError``,
    ``InterfaceError``, a dropped connection, a pool timeout) are raised as
    :class:`~wsgi_session.exceptions.StoreUnavailable`; a row that cannot be
    decoded as :class:`~wsgi_session.exceptions.BadStoredData`.
    """

    def __init__(self, engine: Engine, table_name: str = "sessions") -> None:
        self.engine = engine
        self.table = session_table(table_name, sa.MetaData())
        dialect = engine.dialect.name
        self._read_committed = dialect == "postgresql" or dialect in MYSQL
        # Single statements need no transaction: see "Round trips" above.
        self._single, self._owns_single = autocommit_engine(engine)
        self._begin_immediate = dialect == "sqlite" and engine.dialect.driver == "pysqlite"
        self._insert_new = insert_ignoring_duplicates(self.table, dialect)
        # The request path's statements, built once (SQLAlchemy then compiles
        # each once): building them per call was most of a write's CPU.
        by_id = self.table.c.id == sa.bindparam("id")
        self._select_by_id = sa.select(self.table).where(by_id)
        self._select_by_id_for_update = self._select_by_id.with_for_update()
        self._select_version = sa.select(self.table.c.version).where(by_id)
        self._guarded_update = guarded_update(self.table)
        self._snapshot_update = guarded_update(self.table, deadline=True)
        writes: dict[UpdateBase, t.Sequence[str]] = {self._snapshot_update: SNAPSHOT_UPDATE_KEYS}
        if self._insert_new is not None:
            writes[self._insert_new] = INSERT_KEYS
        reads = (self._select_by_id, self._select_version)
        self._cursor = CursorPath(self._single, reads, writes, lean_writes=self._owns_single)
        self._ready = False
        self._setup_lock = threading.Lock()
        #: The PostgreSQL ``NOTIFY`` channel of ``coherence="notify"``.
        self.channel = f"{table_name}_changes"
        #: Set by :meth:`enable_notifications`.
        self._announcer: Announcer | None = None
        # Only PostgreSQL through psycopg2 can LISTEN here.
        self.supports_notifications = dialect == "postgresql" and engine.dialect.driver == "psycopg2"

    def _errors(self) -> t.ContextManager[None]:
        return unavailable_on((sa_exc.SQLAlchemyError,), "the session database", is_outage)

    def setup(self) -> None:
        """Create the table and its indexes if missing. Safe to call from
        several processes at once: losing the race to create is not an error."""
        with self._errors():
            try:
                self.table.metadata.create_all(self.engine, checkfirst=True)
            except sa_exc.DBAPIError:
                if not sa.inspect(self.engine).has_table(self.table.name):
                    raise
        self._ready = True

    def _ensure_ready(self) -> None:
        if not self._ready:
            with self._setup_lock:
                if not self._ready:
                    self.setup()

    def load(self, session_id: str) -> SessionRecord | None:
        self._ensure_ready()
        with self._errors():
            row = self._cursor.first(self._select_by_id, session_id)
        return None if row is None else record_from_row(row)

    def version(self, session_id: str) -> int | None:
        self._ensure_ready()
        with self._errors():
            row = self._cursor.first(self._select_version, session_id)
        return None if row is None else int(row[0])

    def apply(self, diffs: t.Sequence[SessionDiff]) -> list[SessionRecord | None]:
        if not diffs:
            return []
        self._ensure_ready()
        shortcut = True
        if len(diffs) == 1:
            # A lone diff (a request's own commit) is one statement when it can
            # be; a batch stays one transaction: all of it lands, or none.
            written = self._try_alone(diffs[0])
            if written is not None:
                return [written]
            shortcut = False  # already tried
        # Rows are written in id order, so two batches never wait on each
        # other's locks in a cycle (the sort is stable: one id's diffs keep
        # their order).
        order = sorted(range(len(diffs)), key=lambda index: diffs[index].id)
        results: list[SessionRecord | None] = [None] * len(diffs)
        attempt = 1
        with self._errors():
            while True:
                try:
                    with self._write_transaction() as conn:
                        for index in order:
                            results[index] = self._apply_one(conn, diffs[index], shortcut)
                        self._announce(conn, {diffs[i].id for i in order if results[i] is not None})
                    return results
                except sa_exc.DBAPIError as exc:
                    if attempt == _BATCH_ATTEMPTS or not is_conflict(exc):
                        raise
                    log.info("session batch hit a deadlock or lock timeout; retrying: %s", exc.orig)
                    attempt += 1

    def _try_alone(self, diff: SessionDiff) -> SessionRecord | None:
        """A lone diff in one autocommit statement, announcing what it wrote
        when the store announces; ``None`` when that cannot be done (or the
        row was locked): the transaction then merges it."""
        plan = self._one_statement(diff)
        if plan is None:
            return None
        write, params, record = plan
        with self._errors():
            try:
                if self._announcer is None:
                    return record if self._cursor.wrote(write, params) else None
                with self._single.connect() as conn:
                    return record if self._wrote(conn, write, params, announce=diff.id) else None
            except sa_exc.DBAPIError as exc:
                if not is_conflict(exc):
                    raise
                return None

    def _one_statement(self, diff: SessionDiff) -> OneStatement | None:
        """:func:`one_statement` with this store's statements."""
        return one_statement(diff, self._snapshot_update, self._insert_new)

    def _wrote(
        self, conn: Connection, write: Update | Insert, params: dict[str, t.Any], announce: str | None = None
    ) -> bool:
        """Run a one-row write; whether it wrote the row. ``announce``: the id
        to announce in the same statement, if the store announces."""
        if announce is not None and self._announcer is not None:
            return self._announcer.write(conn, write, params, announce)
        return bool(conn.execute(write, params).rowcount == 1)

    def _apply_one(self, conn: Connection, diff: SessionDiff, shortcut: bool = True) -> SessionRecord | None:
        """Merge one diff into its row, again and again while other writers
        win the race. A retry re-reads with ``FOR UPDATE`` (where the database
        has it): it sees the latest commit and holds the row until the write.
        ``shortcut``: try :meth:`_one_statement` first."""
        plan = self._one_statement(diff) if shortcut else None
        if plan is not None and self._wrote(conn, plan[0], plan[1]):
            return plan[2]
        for attempt in range(_RACE_ATTEMPTS):
            query = self._select_by_id_for_update if attempt else self._select_by_id
            row = conn.execute(query, {"id": diff.id}).first()
            current = None if row is None else record_from_row(row)
            merged = apply_diff(current, diff)
            if merged is None or merged is current:  # dropped, or a forwarding stub
                return merged
            if current is None:
                if self._insert(conn, merged):
                    return merged
            elif self._wrote(conn, self._guarded_update, guarded_update_params(merged, current)):
                return merged
            log.debug("another process wrote this session first; merging again")
        raise StoreUnavailable(f"a session was written concurrently {_RACE_ATTEMPTS} times in a row")

    def _insert(self, conn: Connection, record: SessionRecord) -> bool:
        """Insert a new row; ``False`` if a concurrent writer inserted it first."""
        row = insert_row(record)
        if self._insert_new is not None:
            return conn.execute(self._insert_new, row).rowcount == 1
        try:  # any other database: a savepoint absorbs the duplicate key
            with conn.begin_nested():
                conn.execute(sa.insert(self.table), row)
        except sa_exc.IntegrityError:
            return False
        return True

    @contextlib.contextmanager
    def _write_transaction(self) -> t.Iterator[Connection]:
        with self.engine.connect() as conn:
            if self._read_committed:
                conn.execution_options(isolation_level="READ COMMITTED")
            with conn.begin():
                dbapi = conn.connection.dbapi_connection
                if self._begin_immediate and not getattr(dbapi, "in_transaction", True):
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                yield conn

    def delete(self, session_ids: t.Iterable[str]) -> None:
        self._ensure_ready()
        ids = iter(session_ids)
        with self._errors(), self.engine.begin() as conn:
            while chunk := list(itertools.islice(ids, _CHUNK)):
                conn.execute(sa.delete(self.table).where(self.table.c.id.in_(chunk)))
                self._announce(conn, chunk)

    @property
    def autocommit_engine(self) -> Engine:
        """The engine of the store's single-statement reads and writes: on a
        database server a second pool built like :attr:`engine`'s, whose
        connections stay in autocommit; on SQLite :attr:`engine` itself in
        autocommit. Register statement events (tracing, metrics) here too:
        those on :attr:`engine` do not see these statements."""
        return self._single

    def close(self) -> None:
        """Dispose of the store's own autocommit pool (not of the engine's)."""
        if self._owns_single:
            self._single.dispose()

    def count(self) -> int:
        self._ensure_ready()
        with self._errors(), self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.table)).scalar_one())

    def iter_ids(self, batch_size: int = 1000) -> t.Iterator[str]:
        """Every stored id in id order, ``batch_size`` per query (keyset
        pagination: each query starts after the last id seen, so rows added
        or removed meanwhile never shift the pages)."""
        self._ensure_ready()
        query = sa.select(self.table.c.id).order_by(self.table.c.id).limit(batch_size)
        last: str | None = None
        while True:
            page = query if last is None else query.where(self.table.c.id > last)
            with self._errors(), self.engine.connect() as conn:
                ids: list[str] = list(conn.execute(page).scalars())
            yield from ids
            if len(ids) < batch_size:
                return
            last = ids[-1]

    def purge_expired(self, now: float, limit: int = 1000) -> list[str]:
        """Delete up to ``limit`` sessions whose idle or absolute deadline is
        at or before ``now``, in one short transaction; return their ids."""
        self._ensure_ready()
        table = self.table
        expired = sa.or_(table.c.expires <= now, table.c.absolute <= now)
        with self._errors(), self.engine.begin() as conn:
            ids: list[str] = list(conn.execute(sa.select(table.c.id).where(expired).limit(limit)).scalars())
            if not ids:
                return []
            # The deadline is checked again: a session touched since the
            # SELECT is no longer expired and stays.
            delete = sa.delete(table).where(table.c.id.in_(ids), expired)
            if self.engine.dialect.delete_returning:
                return list(conn.execute(delete.returning(table.c.id)).scalars())
            conn.execute(delete)
            return ids

    def clear(self) -> None:
        """Delete every row of this store's table (the table stays)."""
        self._ensure_ready()
        with self._errors(), self.engine.begin() as conn:
            if self._announcer is None:
                conn.execute(sa.delete(self.table))
            else:
                self._announce(conn, conn.execute(sa.delete(self.table).returning(self.table.c.id)).scalars())

    def enable_notifications(self, origin: str) -> None:
        """Announce changed ids with PostgreSQL ``NOTIFY`` on :attr:`channel`
        as ``"<origin> <id> [<id> ...]"``, in the statement or transaction
        that writes (so listeners hear of a change when it commits).
        PostgreSQL through psycopg2 only (:attr:`supports_notifications`)."""
        if not self.supports_notifications:
            super().enable_notifications(origin)
        self._announcer = Announcer(self.channel, origin, self.table)

    def _announce(self, conn: Connection, ids: t.Iterable[str]) -> None:
        if self._announcer is not None:
            self._announcer.announce(conn, ids)

    def listen(
        self,
        on_message: t.Callable[[str, str], None],
        on_reset: t.Callable[[], None],
        stop: threading.Event,
    ) -> None:
        """``LISTEN`` on :attr:`channel`, on a connection of its own (taken
        from the engine and detached from its pool), passing each announced
        id to ``on_message(origin, id)`` until ``stop`` is set. Raises
        :class:`~wsgi_session.exceptions.StoreUnavailable` when the
        connection fails."""
        errors = (sa_exc.SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error)
        with unavailable_on(errors, "the session database"):
            listen_postgres(self.engine, self.channel, on_message, on_reset, stop)
