"""SQLAlchemyStore beyond the contract: schema, statements per call, races
under strict isolation, malformed rows, unreachable databases, the packed
value format."""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
import typing as t
import uuid

import hypothesis.strategies as st
import pytest
import sqlalchemy as sa
from core_testkit import run_in_threads
from hypothesis import given

from wsgi_session.exceptions import BadStoredData, StoreUnavailable
from wsgi_session.stores import SQLAlchemyStore
from wsgi_session.stores._codec import make_record, pack_values, unpack_values

from .conftest import free_port

if t.TYPE_CHECKING:
    from pathlib import Path

    from .conftest import Backend, SQLServers

    MakeDiff = t.Callable[..., t.Any]

SQL_KINDS = [
    pytest.param("sqlite"),
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mysql),
]
sql_kinds = pytest.mark.parametrize("backend", SQL_KINDS, indirect=True)


def sql_store(backend: Backend) -> SQLAlchemyStore:
    assert isinstance(backend.store, SQLAlchemyStore)
    return backend.store


@sql_kinds
def test_setup_creates_table_and_indexes_once(backend: Backend) -> None:
    store = t.cast("SQLAlchemyStore", backend.sibling())
    assert not sa.inspect(store.engine).has_table(store.table.name)
    store.load("anything")  # first use creates the table
    # Inspect through a new engine, as another process would: SQLite's
    # PRAGMA index_list can answer from a pooled connection's stale schema.
    fresh = sa.create_engine(store.engine.url)
    inspector = sa.inspect(fresh)
    assert {column["name"] for column in inspector.get_columns(store.table.name)} == {
        "id",
        "data",
        "version",
        "created",
        "expires",
        "absolute",
        "longterm",
    }
    indexed = {tuple(index["column_names"]) for index in inspector.get_indexes(store.table.name)}
    assert {("expires",), ("absolute",)} <= indexed
    fresh.dispose()
    store.setup()  # idempotent


@sql_kinds
def test_processes_racing_to_create_the_table(backend: Backend) -> None:
    first = t.cast("SQLAlchemyStore", backend.sibling())
    stores = [SQLAlchemyStore(first.engine, first.table.name) for _ in range(6)]
    barrier = threading.Barrier(len(stores))

    def set_up(store: SQLAlchemyStore) -> None:
        barrier.wait(10)
        store.setup()

    run_in_threads([functools.partial(set_up, store) for store in stores])  # no error in any
    assert first.count() == 0


@sql_kinds
def test_statements_per_call(backend: Backend, make_diff: MakeDiff) -> None:
    store = sql_store(backend)
    statements: list[str] = []

    def record(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        verb = statement.split(maxsplit=1)[0].upper()
        if verb != "BEGIN":  # SQLite's BEGIN IMMEDIATE: transaction control, as elsewhere
            statements.append(verb)

    # On every Engine: the store's autocommit statements use a pool of its own.
    sa.event.listen(sa.Engine, "before_cursor_execute", record)
    try:
        store.apply([make_diff("s1", {"k": b"v"}, create=True)])
        assert statements == ["INSERT"]  # a new session: insert-or-ignore, alone
        statements.clear()
        snapshot = store.load("s1")
        assert snapshot is not None
        assert statements == ["SELECT"]
        statements.clear()
        # A batch is one transaction: s1 has no snapshot, so it is read and
        # written; s2 is new, inserted.
        store.apply([make_diff("s1", {"k": b"w"}), make_diff("s2", {"k": b"v"}, create=True)])
        assert statements == ["SELECT", "UPDATE", "INSERT"]
        statements.clear()
        # With the snapshot the writer read (now stale: s1 changed since),
        # the guarded UPDATE finds nothing and the transaction merges.
        stale = dataclasses.replace(make_diff("s1", {"j": b"x"}), base=snapshot)
        store.apply([stale])
        assert statements == ["UPDATE", "SELECT", "UPDATE"]
        statements.clear()
        current = store.load("s1")
        assert current is not None
        assert current.values == {"k": b"w", "j": b"x"}
        # With an up-to-date snapshot a write is that one UPDATE.
        store.apply([dataclasses.replace(make_diff("s1", {"j": b"y"}), base=current)])
        assert statements == ["SELECT", "UPDATE"]
        statements.clear()
        store.version("s1")
        assert statements == ["SELECT"]
        store.apply([make_diff(f"p{n}", {"k": b"v"}, create=True) for n in range(20)])
        statements.clear()
        assert len(list(store.iter_ids(batch_size=10))) == 22
        assert statements == ["SELECT"] * 3
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", record)


@pytest.mark.parametrize(
    ("backend", "isolation"),
    [
        pytest.param("postgresql", "SERIALIZABLE", marks=pytest.mark.postgres),
        pytest.param("mariadb", "SERIALIZABLE", marks=pytest.mark.mysql),
        pytest.param("mariadb", "REPEATABLE READ", marks=pytest.mark.mysql),
    ],
    indirect=["backend"],
)
def test_writers_merge_whatever_the_engine_isolation(
    backend: Backend, isolation: str, sql_servers: SQLServers, make_diff: MakeDiff
) -> None:
    engine = sql_store(backend).engine.execution_options(isolation_level=isolation)
    store = SQLAlchemyStore(engine, sql_store(backend).table.name)
    store.apply([make_diff("shared", {}, create=True)])
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        barrier.wait()
        try:
            for count in range(10):
                store.apply([make_diff("shared", {f"w{number}": str(count).encode()})])
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    record = store.load("shared")
    assert record is not None
    assert dict(record.values) == {f"w{n}": b"9" for n in range(6)}
    assert record.version == 61


@pytest.mark.parametrize("backend", SQL_KINDS[1:], indirect=True)
@pytest.mark.parametrize("verb", ["INSERT", "UPDATE"])
def test_a_lost_race_is_merged_again(backend: Backend, make_diff: MakeDiff, verb: str) -> None:
    """Fault injection: another writer commits just before this writer's
    first INSERT (its insert-or-ignore of a new session then inserts nothing)
    or UPDATE (made after its SELECT, so the version no longer matches).
    (Not on SQLite, whose writers take the lock before reading, so the race
    cannot happen there.)"""
    store = sql_store(backend)
    if verb == "UPDATE":
        store.apply([make_diff("s1", {"a": b"1"}, create=True)])
    other = SQLAlchemyStore(store.engine, store.table.name)
    injected: list[str] = []

    def interfere(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if statement.startswith(verb) and not injected:
            injected.append(statement)
            other.apply([make_diff("s1", {"b": b"2"}, create=True)])  # another connection

    # On every Engine: the store's single statements use a pool of its own.
    sa.event.listen(sa.Engine, "before_cursor_execute", interfere)
    try:
        [record] = store.apply([make_diff("s1", {"c": b"3"}, create=True)])
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", interfere)
    assert injected
    assert record is not None
    assert sorted(record.values) == (["a", "b", "c"] if verb == "UPDATE" else ["b", "c"])
    assert record.version == (3 if verb == "UPDATE" else 2)
    assert store.load("s1") == record


@sql_kinds
def test_ids_are_case_sensitive_and_values_large(backend: Backend, make_diff: MakeDiff) -> None:
    store = backend.store
    big = bytes(range(256)) * 4096  # 1 MiB: more than a MySQL BLOB holds
    store.apply([make_diff("abc", {"k": big}, create=True), make_diff("ABC", {"k": b"small"}, create=True)])
    lower, upper = store.load("abc"), store.load("ABC")
    assert lower is not None and upper is not None  # noqa: PT018
    assert lower.values["k"] == big
    assert upper.values["k"] == b"small"


@sql_kinds
@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("data", b"\x02whatever", "unknown format"),
        ("data", b"\x01\x00\x00\x00\x05\x00\x00\x00\x01ab", "truncated"),
        ("data", b"\x01\x00\x00\x00\x01\x00\x00\x00\x00\xff", "truncated or corrupt"),
        ("version", 0, "versions start at 1"),
    ],
)
def test_undecodable_row_is_bad_stored_data(
    backend: Backend, make_diff: MakeDiff, column: str, value: object, message: str
) -> None:
    store = sql_store(backend)
    store.apply([make_diff("s1", {"k": b"v"}, create=True)])
    with store.engine.begin() as conn:
        conn.execute(sa.update(store.table).values({column: value}))
    with pytest.raises(BadStoredData, match=message):
        store.load("s1")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://postgres@127.0.0.1:{port}/test",
        "mysql+pymysql://root@127.0.0.1:{port}/test",
        "sqlite:///{missing}/sessions.db",
    ],
)
def test_unreachable_database_is_store_unavailable(url: str, tmp_path: Path, make_diff: MakeDiff) -> None:
    engine = sa.create_engine(url.format(port=free_port(), missing=tmp_path / "missing"))
    store = SQLAlchemyStore(engine)
    for call in (
        lambda: store.load("s1"),
        lambda: store.apply([make_diff("s1", {"k": b"v"}, create=True)]),
        store.setup,
    ):
        with pytest.raises(StoreUnavailable) as info:
            call()
        assert isinstance(info.value.__cause__, sa.exc.OperationalError)
    engine.dispose()


@given(st.dictionaries(st.text(), st.binary()))
def test_pack_values_round_trips(values: dict[str, bytes]) -> None:
    assert unpack_values(pack_values(values)) == values


@given(st.binary())
def test_unpack_values_fails_only_with_bad_stored_data(data: bytes) -> None:
    try:
        unpack_values(data)
    except BadStoredData:
        pass


def test_make_record_checks_every_field() -> None:
    good = {"version": 1, "created": 1.0, "expires": 2.0, "absolute": None, "longterm": False}
    assert make_record("s", {}, **good).deadline == 2.0
    for name, bad in [("version", "x"), ("created", float("inf")), ("expires", None), ("longterm", 2)]:
        with pytest.raises(BadStoredData, match=name.replace("longterm", "long-term")):
            make_record("s", {}, **{**good, name: bad})


# -- the autocommit pool ---------------------------------------------------------------------


@pytest.mark.postgres
def test_the_autocommit_pool_follows_the_engines_schema_and_is_closed_with_the_store(
    sql_servers: SQLServers, make_diff: MakeDiff
) -> None:
    """The engine's execution options (here a schema_translate_map) apply to
    the single statements too, its isolation level does not; close() empties
    the store's own pool and leaves the engine's alone."""
    engine = sql_servers.engine("postgresql")
    schema = f"ws_schema_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        mapped = engine.execution_options(schema_translate_map={None: schema}, isolation_level="SERIALIZABLE")
        store = SQLAlchemyStore(mapped, "sessions")
        assert store.autocommit_engine.get_execution_options()["schema_translate_map"] == {None: schema}
        assert "isolation_level" not in store.autocommit_engine.get_execution_options()
        store.apply([make_diff("s1", {"k": b"v"}, create=True)])  # alone: autocommit pool
        store.apply([make_diff("s1", {"j": b"w"})])  # no snapshot: a transaction on the engine
        record = store.load("s1")
        assert record is not None
        assert dict(record.values) == {"k": b"v", "j": b"w"}
        with engine.connect() as conn:
            assert conn.exec_driver_sql(f'SELECT count(*) FROM "{schema}".sessions').scalar() == 1
        own_pool = store.autocommit_engine.pool
        assert own_pool is not engine.pool
        assert own_pool.checkedin() >= 1
        store.close()
        assert own_pool.checkedin() == 0
        with engine.connect() as conn:  # the engine's pool is still the application's
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.mark.parametrize("backend", SQL_KINDS[1:], indirect=True)
def test_a_forked_child_opens_its_own_autocommit_connections(backend: Backend, make_diff: MakeDiff) -> None:
    """A child forked after the store was used (gunicorn --preload) must not
    talk on its parent's connections: the fork hook drops them unclosed, so
    the child's statements run on a server session of its own."""
    store = sql_store(backend)
    whoami = "SELECT pg_backend_pid()" if backend.name == "postgresql" else "SELECT CONNECTION_ID()"
    store.apply([make_diff("s1", {"k": b"v"}, create=True)])
    with store.autocommit_engine.connect() as conn:  # the connection the pool keeps
        parent_session = conn.exec_driver_sql(whoami).scalar()
    checked_out: list[str] = []

    def who(dbapi_connection: t.Any, record: t.Any, proxy: t.Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(whoami)
        checked_out.append(str(cursor.fetchone()[0]))
        cursor.close()

    sa.event.listen(store.autocommit_engine.pool, "checkout", who)  # kept by the child's new pool
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a read and a write on the autocommit pool, then who served them
        code = 1
        try:
            record = store.load("s1")
            if record is not None:
                diff = dataclasses.replace(make_diff("s1", {"child": b"1"}), base=record)
                if store.apply([diff])[0] is not None:
                    os.write(writer, " ".join(checked_out).encode())
                    code = 0
        finally:
            os._exit(code)
    os.close(writer)
    _, status = os.waitpid(pid, 0)
    child_sessions = os.read(reader, 256).decode().split()
    os.close(reader)
    sa.event.remove(store.autocommit_engine.pool, "checkout", who)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(child_sessions) == 2  # the read's connection and the write's
    assert str(parent_session) not in child_sessions
    record = store.load("s1")  # the parent's connection is intact
    assert record is not None
    assert dict(record.values) == {"k": b"v", "child": b"1"}


@pytest.mark.postgres
def test_writes_work_when_the_server_rounds_the_doubles_it_returns(
    sql_servers: SQLServers, make_diff: MakeDiff
) -> None:
    """PostgreSQL before 12 (or ``extra_float_digits=0``) returns doubles to
    15 digits, so a deadline read back is not the deadline written. The
    store's shortcut (its snapshot's deadline in the ``WHERE``) then misses
    and the write takes the transaction, which reads the row and matches it
    by version alone: every write still lands."""
    rounding = sa.create_engine(
        sql_servers.urls["postgresql"], connect_args={"options": "-c extra_float_digits=0"}
    )
    table = f"sessions_rounded_{uuid.uuid4().hex[:8]}"
    store = SQLAlchemyStore(rounding, table)
    try:
        # A deadline that needs 17 digits (one from the clock has only 15 about once in a hundred).
        deadline = float(int(time.time()) + 3600) + 0.123456789012
        first = dataclasses.replace(make_diff("s1", {"n": b"0"}, create=True), expires=deadline)
        created = store.apply([first])[0]
        assert created is not None
        loaded = store.load("s1")
        assert loaded is not None
        assert loaded.expires != created.expires  # rounded on the way back
        [after_load] = store.apply([dataclasses.replace(make_diff("s1", {"n": b"1"}), base=loaded)])
        [without_snapshot] = store.apply([make_diff("s1", {"n": b"2"})])
        assert after_load is not None
        assert without_snapshot is not None
        assert (after_load.version, without_snapshot.version) == (2, 3)
        stored = store.load("s1")
        assert stored is not None
        assert stored.values["n"] == b"2"
    finally:
        store.close()
        with rounding.begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{table}"')
        rounding.dispose()
