"""The request path's statements, run on the DBAPI cursor directly.

Private to :class:`~wsgi_session.stores.SQLAlchemyStore`. A session load or
version check is one ``SELECT ... WHERE id = ?`` in autocommit, and a
request's own write usually one ``UPDATE`` or ``INSERT``. Through
SQLAlchemy's :class:`~sqlalchemy.engine.Connection` that costs, besides the
query itself, a connection object, an execution context and a result object:
measured on loopback, a version check took 101 µs through SQLAlchemy and
35 µs on the cursor (PostgreSQL), 118 and 82 µs (MariaDB), 56 and 11 µs
(SQLite); a lone ``UPDATE`` 271 and 234 µs (PostgreSQL, most of it the
commit's flush to disk). So each statement is compiled once for the engine's dialect and
run on a cursor of a connection checked out of the engine's pool: the pool
still does its part (``pool_pre_ping``, recycling, reset on return, pool
events), and a DBAPI error is raised as SQLAlchemy would raise it
(:meth:`sqlalchemy.exc.DBAPIError.instance`), after invalidating the
connection when the dialect says it was a disconnect.

What SQLAlchemy would do around the statement and this does not: engine
and connection events (``engine_connect`` listeners are not called for
these statements), logging, execution options, and its result types. So the
cursor is used only when nothing would notice. While any listener is
registered for the statement events (``before_cursor_execute`` and the
rest: tracing, metrics, query counters), ``handle_error`` or
``do_execute``, while SQL is logged (``echo``), on an engine with execution
options of its own (a ``schema_translate_map``), and with a driver other
than psycopg2, pymysql or SQLite's (the ones the tests run), the statement
goes through SQLAlchemy as before. A lost connection makes the pool retire every
connection made before it, as SQLAlchemy does.
"""

from __future__ import annotations

import contextlib
import logging
import typing as t

from sqlalchemy import exc as sa_exc

if t.TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.sql import Select
    from sqlalchemy.sql.dml import UpdateBase

#: The drivers whose types the store reads as they come (``bytes`` or
#: ``memoryview`` data, numbers, ``0``/``1`` or boolean flags); any other
#: driver's rows go through SQLAlchemy's result processing.
_DRIVERS = frozenset(("psycopg2", "pymysql", "pysqlite"))


class _Compiled(t.NamedTuple):
    sql: str
    #: The parameters' names in order where the driver takes a tuple
    #: (``?``, ``%s``); ``None`` where it takes the dict as it is.
    order: tuple[str, ...] | None


class CursorPath:
    """Runs the store's request-path statements on ``engine``, an engine
    whose connections are in autocommit: one-row ``SELECT`` statements with
    a single ``:id`` parameter (:meth:`first`) and one-row writes
    (:meth:`wrote`; on the cursor only with ``lean_writes``).

    :param engine: the store's autocommit engine.
    :param reads: the statements :meth:`first` will be given.
    :param writes: the statements :meth:`wrote` will be given, each with
        the keys of its parameters (they make an ``UPDATE``'s ``SET``
        clause and an ``INSERT``'s columns).
    :param lean_writes: whether writes may take the cursor too: only where
        every connection of the pool is in autocommit for good (a SQLite
        connection is not: there a write goes through SQLAlchemy, which
        sets it for the statement).
    """

    def __init__(
        self,
        engine: Engine,
        reads: t.Iterable[Select[t.Any]],
        writes: t.Mapping[UpdateBase, t.Sequence[str]],
        lean_writes: bool,
    ) -> None:
        self.engine = engine
        self._dialect = engine.dialect
        self._dispatch = engine.dispatch
        self._dialect_dispatch = engine.dialect.dispatch
        options = {k: v for k, v in engine.get_execution_options().items() if k != "isolation_level"}
        #: ``False`` where the engine's execution options would change the
        #: statement, or the driver's types are not known here.
        self.lean = not options and engine.dialect.driver in _DRIVERS
        self.lean_writes = self.lean and lean_writes
        self._compiled = {id(statement): self._compile(statement, ("id",)) for statement in reads}
        for statement, keys in writes.items():
            self._compiled[id(statement)] = self._compile(statement, tuple(keys))

    def _compile(self, statement: Select[t.Any] | UpdateBase, keys: tuple[str, ...]) -> _Compiled:
        compiled = statement.compile(dialect=self._dialect, column_keys=list(keys))
        order = tuple(compiled.positiontup) if self._dialect.positional and compiled.positiontup else None
        names = set(order if order is not None else compiled.params)
        if not names <= set(keys):
            raise ValueError(f"the statement takes {sorted(names)!r}, not only {keys!r}")
        return _Compiled(compiled.string, order)

    def _listened(self) -> bool:
        """Whether anything would miss these statements: a statement event's
        listener, or SQL logging (``echo``, the ``sqlalchemy.engine`` logger)."""
        # Not ``engine_connect``: no Connection is made here, and SQLAlchemy
        # itself listens to it on an engine with an ``isolation_level`` option,
        # as the store's SQLite engine has (a SQLite ``SELECT`` needs no
        # autocommit: the driver opens a transaction only before a write, and
        # SQLite writes never take the cursor).
        events, dialect_events = self._dispatch, self._dialect_dispatch
        return bool(
            events.before_cursor_execute
            or events.after_cursor_execute
            or events.before_execute
            or events.after_execute
            or dialect_events.handle_error
            or dialect_events.do_execute
            or self.engine.logger.isEnabledFor(logging.INFO)
        )

    def first(self, statement: Select[t.Any], session_id: str) -> t.Sequence[t.Any] | None:
        """The first row ``statement`` selects for ``session_id``, or ``None``.

        :raises sqlalchemy.exc.DBAPIError: (a subclass, as SQLAlchemy picks
            it) when the database fails the statement or cannot be reached;
            ``connection_invalidated`` is set when the connection was lost.
        :raises sqlalchemy.exc.TimeoutError: no connection free in the pool in time.
        """
        if not self.lean or self._listened():
            with self.engine.connect() as conn:
                return conn.execute(statement, {"id": session_id}).first()
        row: t.Sequence[t.Any] | None = self._run(statement, {"id": session_id}, fetch=True)
        return row

    def wrote(self, statement: UpdateBase, params: dict[str, t.Any]) -> bool:
        """Run a one-row write; whether it wrote the row (rowcount 1).

        :raises sqlalchemy.exc.DBAPIError: as :meth:`first`.
        """
        if not self.lean_writes or self._listened():
            with self.engine.connect() as conn:
                return bool(conn.execute(statement, params).rowcount == 1)
        return bool(self._run(statement, params, fetch=False) == 1)

    def _run(self, statement: Select[t.Any] | UpdateBase, values: dict[str, t.Any], fetch: bool) -> t.Any:
        """The statement's first row (``fetch``) or its rowcount."""
        sql, order = self._compiled[id(statement)]
        params: t.Any = values if order is None else tuple([values[name] for name in order])
        dialect = self._dialect
        error = dialect.loaded_dbapi.Error
        pool = self.engine.pool  # looked up each time: dispose() (and a fork) replaces it
        try:
            fairy = pool.connect()
        except error as exc:  # could not connect: as Engine.connect() raises it
            raise self._wrapped(exc, None, None, dialect.is_disconnect(exc, None, None)) from exc
        cursor = None
        try:
            cursor = fairy.cursor()
            cursor.execute(sql, params)
            return cursor.fetchone() if fetch else cursor.rowcount
        except error as exc:
            lost = dialect.is_disconnect(exc, fairy.dbapi_connection, cursor)
            if lost:
                # As SQLAlchemy does: the server went away, so every connection
                # the pool made before now is stale, not only this one.
                pool._invalidate(fairy, exc)
            raise self._wrapped(exc, sql, params, lost) from exc
        except BaseException as exc:
            if not isinstance(exc, Exception):
                fairy.invalidate()  # interrupted mid-statement: the connection's state is unknown
            raise
        finally:
            if cursor is not None:
                with contextlib.suppress(Exception):  # a broken connection's cursor
                    cursor.close()
            fairy.close()

    def _wrapped(self, exc: Exception, sql: str | None, params: t.Any, lost: bool) -> BaseException:
        return sa_exc.DBAPIError.instance(
            sql,
            params,
            exc,
            self._dialect.loaded_dbapi.Error,
            hide_parameters=self.engine.hide_parameters,
            connection_invalidated=lost,
            dialect=self._dialect,
        )
