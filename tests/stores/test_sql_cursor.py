"""The SQL store's request-path statements on the DBAPI cursor
(:mod:`wsgi_session.stores._sql_cursor`): they behave as SQLAlchemy's path did
when a connection is lost or a statement fails, and anything listening to
the engine's statement events still sees every one. The store contract
tests run them on every SQL backend too."""

from __future__ import annotations

import dataclasses
import logging
import typing as t
import uuid

import pytest
import sqlalchemy as sa

from wsgi_session.exceptions import StoreUnavailable
from wsgi_session.record import SessionRecord
from wsgi_session.stores import SQLAlchemyStore
from wsgi_session.stores._sql_schema import (
    INSERT_KEYS,
    SNAPSHOT_UPDATE_KEYS,
    guarded_update_params,
    insert_row,
)

if t.TYPE_CHECKING:
    from .conftest import SQLServers

    MakeDiff = t.Callable[..., t.Any]

SERVERS = [
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mysql),
]
ALL_SQL = [pytest.param("sqlite"), *SERVERS]

_OWN_ID = {"postgresql": "SELECT pg_backend_pid()", "mariadb": "SELECT CONNECTION_ID()"}
_KILL = {"postgresql": "SELECT pg_terminate_backend({})", "mariadb": "KILL {}"}


@pytest.fixture
def table_store(sql_servers: SQLServers, request: pytest.FixtureRequest) -> t.Iterator[SQLAlchemyStore]:
    """A store on a table of its own, on a fresh engine of the backend."""
    name = request.param
    engine = sa.create_engine(sql_servers.urls[name])
    store = SQLAlchemyStore(engine, f"sessions_reads_{uuid.uuid4().hex[:8]}")
    store.setup()
    try:
        yield store
    finally:
        store.close()
        store.table.drop(engine, checkfirst=True)
        engine.dispose()


@pytest.mark.parametrize("table_store", ALL_SQL, indirect=True)
def test_statement_listeners_see_every_read(
    table_store: SQLAlchemyStore, make_diff: MakeDiff, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listener registered after the store was built (a tracer, a query
    counter), on the engine its single statements run on, still sees the
    reads: while anything listens they go through SQLAlchemy; once nothing
    does, they give the same answers without it (its ``connect`` is made to
    fail then, so only the cursor path can answer)."""
    store = table_store
    store.apply([make_diff("s1", {"k": b"v"}, create=True)])
    seen: list[str] = []

    def record(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        seen.append(statement)

    sa.event.listen(store.autocommit_engine, "before_cursor_execute", record)
    try:
        listened = (store.load("s1"), store.version("s1"), store.load("missing"), store.version("missing"))
    finally:
        sa.event.remove(store.autocommit_engine, "before_cursor_execute", record)
    assert len(seen) == 4
    assert all(statement.lstrip().upper().startswith("SELECT") for statement in seen)

    def no_connection(*args: t.Any, **kwargs: t.Any) -> t.NoReturn:
        raise AssertionError("the read went through SQLAlchemy")

    monkeypatch.setattr(store.autocommit_engine, "connect", no_connection)
    unheard = (store.load("s1"), store.version("s1"), store.load("missing"), store.version("missing"))
    assert len(seen) == 4
    assert unheard == listened
    record = unheard[0]
    assert record is not None
    assert (dict(record.values), record.version, unheard[1]) == ({"k": b"v"}, 1, 1)
    assert unheard[2:] == (None, None)


@pytest.mark.parametrize("table_store", SERVERS, indirect=True)
def test_connections_killed_by_the_server_fail_one_read_then_are_replaced(
    table_store: SQLAlchemyStore, sql_servers: SQLServers, make_diff: MakeDiff
) -> None:
    """The server ends the store's pooled connections (a restart, a
    failover, an administrator): the next read is StoreUnavailable, caused
    by an OperationalError marked ``connection_invalidated``, and the pool
    retires every connection it made before, so the read after it works on
    a new one (not on the next dead one)."""
    store = table_store
    backend = store.engine.dialect.name
    backend = "mariadb" if backend in ("mysql", "mariadb") else backend
    store.apply([make_diff("s1", {"k": b"v"}, create=True)])
    ids: list[int] = []

    def remember(dbapi_connection: t.Any, record: t.Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(_OWN_ID[backend])
        ids.append(cursor.fetchone()[0])
        cursor.close()

    pool = store.autocommit_engine.pool
    pool.dispose()  # connections made from now on are remembered
    sa.event.listen(pool, "connect", remember)
    held = [pool.connect() for _ in range(3)]  # three connections wait in the pool
    for connection in held:
        connection.close()
    assert store.version("s1") == 1
    assert len(ids) == 3
    admin = sa.create_engine(sql_servers.urls[backend], isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for connection_id in ids:
                conn.exec_driver_sql(_KILL[backend].format(connection_id))
        with pytest.raises(StoreUnavailable) as info:
            store.load("s1")
        cause = info.value.__cause__
        assert isinstance(cause, sa.exc.OperationalError | sa.exc.InterfaceError)
        assert cause.connection_invalidated
        record = store.load("s1")
        assert record is not None
        assert dict(record.values) == {"k": b"v"}
        assert [store.version("s1") for _ in range(3)] == [1, 1, 1]  # none meets a dead connection
        assert len(ids) > 3
    finally:
        admin.dispose()


@pytest.mark.parametrize("table_store", SERVERS, indirect=True)
def test_a_failed_statement_is_raised_as_sqlalchemy_raises_it(table_store: SQLAlchemyStore) -> None:
    """A statement the database refuses (here: its table was dropped) is not
    an outage: the read raises SQLAlchemy's ProgrammingError with the
    statement, and the connection stays in the pool, usable."""
    store = table_store
    store.table.drop(store.engine)
    with pytest.raises(sa.exc.ProgrammingError) as info:
        store.load("s1")
    assert "SELECT" in str(info.value.statement)
    assert not info.value.connection_invalidated
    store.setup()
    assert store.load("s1") is None
    assert store.autocommit_engine.pool.checkedin() >= 1


@pytest.mark.parametrize("table_store", SERVERS, indirect=True)
def test_a_lone_write_takes_the_cursor_and_listeners_still_see_it(
    table_store: SQLAlchemyStore, make_diff: MakeDiff, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request's own write (a new session's insert-or-ignore, an update of
    the snapshot it read) runs on the cursor in autocommit: it lands with
    the autocommit engine's ``connect`` made to fail. A write whose snapshot
    is stale matches no row (the rowcount the database reports, found rows
    on MariaDB too) and is merged in a transaction instead. While a listener
    is registered, the write goes through SQLAlchemy and the listener sees it."""
    store = table_store
    real_connect = store.autocommit_engine.connect

    def no_connection(*args: t.Any, **kwargs: t.Any) -> t.NoReturn:
        raise AssertionError("the write went through SQLAlchemy")

    monkeypatch.setattr(store.autocommit_engine, "connect", no_connection)
    with monkeypatch.context() as no_transaction:  # nor the transaction path, which would merge it too
        no_transaction.setattr(store.engine, "connect", no_connection)
        [created] = store.apply([make_diff("s1", {"n": b"0"}, create=True)])
        assert created is not None
        [second] = store.apply([dataclasses.replace(make_diff("s1", {"n": b"1"}), base=created)])
        assert second is not None
        assert second.version == 2
    [merged] = store.apply([dataclasses.replace(make_diff("s1", {"m": b"x"}), base=created)])  # stale
    assert merged is not None
    assert (dict(merged.values), merged.version) == ({"n": b"1", "m": b"x"}, 3)
    loaded = store.load("s1")
    assert loaded == merged
    monkeypatch.setattr(store.autocommit_engine, "connect", real_connect)
    seen: list[str] = []

    def record(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        seen.append(statement)

    sa.event.listen(store.autocommit_engine, "before_cursor_execute", record)
    try:
        [fourth] = store.apply([dataclasses.replace(make_diff("s1", {"n": b"2"}), base=loaded)])
    finally:
        sa.event.remove(store.autocommit_engine, "before_cursor_execute", record)
    assert fourth is not None
    assert fourth.version == 4
    assert [statement.split()[0].upper() for statement in seen] == ["UPDATE"]
    assert store.load("s1") == fourth


def test_the_cursor_statements_are_compiled_for_every_column_the_store_writes() -> None:
    """The keys a lone write's statement is compiled for are those of the
    parameters the store passes (a column missing from the list would be
    left out of the statement: the drivers ignore extra dict keys)."""
    record = SessionRecord(
        id="s1", values={}, created=1.0, expires=2.0, absolute=None, longterm=False, version=1
    )
    assert set(insert_row(record)) == set(INSERT_KEYS)
    assert set(guarded_update_params(record, record)) == set(SNAPSHOT_UPDATE_KEYS)


@pytest.mark.parametrize("table_store", ALL_SQL, indirect=True)
@pytest.mark.parametrize("watcher", ["SQL logging", "handle_error", "do_execute"])
def test_sql_logging_and_error_or_execute_hooks_keep_sqlalchemys_path(
    table_store: SQLAlchemyStore,
    make_diff: MakeDiff,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    watcher: str,
) -> None:
    """While SQL is logged (``echo``, the ``sqlalchemy.engine`` logger at
    INFO) or a ``handle_error`` / ``do_execute`` hook is registered, the reads
    go through SQLAlchemy (its ``connect`` is counted), so the log and the
    hooks miss nothing; without them, they take the cursor."""
    store = table_store
    store.apply([make_diff("s1", {"k": b"v"}, create=True)])
    engine = store.autocommit_engine
    connects: list[int] = []
    real_connect = engine.connect

    def counted(*args: t.Any, **kwargs: t.Any) -> t.Any:
        connects.append(1)
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(engine, "connect", counted)
    assert store.version("s1") == 1
    assert connects == []  # nothing watches: the cursor
    hook = lambda *args: None  # noqa: E731 - a do-nothing listener
    if watcher == "SQL logging":
        caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    else:
        sa.event.listen(engine, watcher, hook)
    try:
        assert store.version("s1") == 1
        record = store.load("s1")
    finally:
        if watcher != "SQL logging":
            sa.event.remove(engine, watcher, hook)
    assert record is not None
    assert connects == [1, 1]
    if watcher == "SQL logging":
        assert any("SELECT" in message for message in caplog.messages)
