"""Fixtures for the store tests, against real servers.

* ``backend`` / ``store``: every store over every backend — MemoryStore,
  Redis, SQLite (a file), PostgreSQL, MariaDB, a Redis Cluster and a Redis
  behind Sentinel started for the run. Each test gets its own Redis prefix;
  the SQL backends use one table per test run (emptied around each test,
  dropped at the end).
* :class:`RedisServer`: a private ``redis-server`` process on a free port.
* ``make_diff``: builds :class:`SessionDiff` objects relative to the wall clock.

**Service rule**: a service that cannot be reached skips its tests with the
reason, or fails them when the ``CI`` environment variable is set. Override
the addresses with ``WSGI_SESSION_REDIS_URL``, ``WSGI_SESSION_POSTGRES_URL``
and ``WSGI_SESSION_MYSQL_URL``.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
import typing as t
import uuid
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel
from services import MYSQL_URL, POSTGRES_URL, RedisServer, free_port, service_unavailable

from wsgi_session.record import MOVED_KEY, SessionDiff
from wsgi_session.stores import MemoryStore, RedisStore, SQLAlchemyStore
from wsgi_session.stores._codec import pack_values, unpack_values

if t.TYPE_CHECKING:
    from wsgi_session.stores.base import Store


# -- building diffs --------------------------------------------------------------


def new_diff(
    session_id: str,
    set: t.Mapping[str, bytes] | None = None,
    *,
    delete: t.Iterable[str] = (),
    clear: bool = False,
    ttl: float = 60.0,
    absolute: float | None = None,
    longterm: bool = False,
    create: bool = False,
    defaults: t.Mapping[str, bytes] | None = None,
) -> SessionDiff:
    """A diff whose idle deadline is ``ttl`` seconds from now; ``absolute``
    is also relative to now."""
    now = time.time()
    return SessionDiff(
        id=session_id,
        set=dict(set or {}),
        delete=frozenset(delete),
        clear=clear,
        expires=now + ttl,
        absolute=None if absolute is None else now + absolute,
        longterm=longterm,
        created=now,
        create=create,
        defaults=defaults,
    )


@pytest.fixture
def make_diff() -> t.Callable[..., SessionDiff]:
    """:func:`new_diff`: ``make_diff(id, {key: value}, create=True, ttl=60, ...)``."""
    return new_diff


# -- direct access to what a backend holds ------------------------------------------


class Raw(t.Protocol):
    """Reads and writes a backend's stored data without going through the store."""

    def values(self, session_id: str) -> dict[str, bytes]: ...
    def dump(self, session_id: str) -> bytes: ...
    def put_value(self, session_id: str, key: str, value: bytes) -> None: ...
    def corrupt(self, session_id: str) -> None: ...


@dataclasses.dataclass
class RedisRaw:
    client: t.Any
    prefix: str

    def _key(self, session_id: str) -> str:
        return self.prefix + session_id

    def values(self, session_id: str) -> dict[str, bytes]:
        fields = self.client.hgetall(self._key(session_id))
        moved = MOVED_KEY.encode()
        return {k.decode(): v for k, v in fields.items() if not k.startswith(b"\0") or k == moved}

    def dump(self, session_id: str) -> bytes:
        return b"".join(k + v for k, v in self.client.hgetall(self._key(session_id)).items())

    def put_value(self, session_id: str, key: str, value: bytes) -> None:
        self.client.hset(self._key(session_id), key, value)

    def corrupt(self, session_id: str) -> None:
        self.client.hdel(self._key(session_id), "\0c")


@dataclasses.dataclass
class SQLRaw:
    engine: sa.Engine
    table: sa.Table

    def _data(self, session_id: str) -> bytes:
        with self.engine.connect() as conn:
            query = sa.select(self.table.c.data).where(self.table.c.id == session_id)
            return bytes(conn.execute(query).scalar_one())

    def _write(self, session_id: str, data: bytes) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.update(self.table).where(self.table.c.id == session_id).values(data=data))

    def values(self, session_id: str) -> dict[str, bytes]:
        return unpack_values(self._data(session_id))

    def dump(self, session_id: str) -> bytes:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(self.table).where(self.table.c.id == session_id)).one()
        return b"".join(v if isinstance(v, bytes) else str(v).encode() for v in row)

    def put_value(self, session_id: str, key: str, value: bytes) -> None:
        self._write(session_id, pack_values({**self.values(session_id), key: value}))

    def corrupt(self, session_id: str) -> None:
        self._write(session_id, self._data(session_id)[:-3])


@dataclasses.dataclass
class MemoryRaw:
    """MemoryStore keeps exactly what it is given, so its records are the raw data."""

    store: MemoryStore

    def values(self, session_id: str) -> dict[str, bytes]:
        record = self.store.load(session_id)
        assert record is not None
        return dict(record.values)

    def dump(self, session_id: str) -> bytes:
        return b"".join(k.encode() + v for k, v in self.values(session_id).items())

    def put_value(self, session_id: str, key: str, value: bytes) -> None:
        self.store.apply([new_diff(session_id, {key: value})])

    def corrupt(self, session_id: str) -> None:
        pytest.skip("a MemoryStore holds records, not bytes: nothing can be corrupt")


@dataclasses.dataclass
class Backend:
    """A store under test, direct access to its data, and a way to make a
    second store on the same server that must not see the first one's data."""

    name: str
    store: Store
    raw: Raw
    sibling: t.Callable[[], Store]


# -- servers --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[RedisCluster]:
    """A three-primary Redis Cluster on free loopback ports, for this run."""
    if shutil.which("redis-cli") is None:
        service_unavailable("redis-cli is not on PATH: cannot create a Redis Cluster")
    base = tmp_path_factory.mktemp("cluster")
    args = ("--cluster-enabled", "yes", "--cluster-node-timeout", "5000")
    servers: list[RedisServer] = []
    try:
        for _ in range(3):
            port = free_port(10000)
            conf = ("--cluster-config-file", f"nodes-{port}.conf")
            servers.append(RedisServer(base / str(port), *args, *conf, port=port).start())
        nodes = [f"127.0.0.1:{server.port}" for server in servers]
        command = ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"]
        created = subprocess.run(command, capture_output=True, timeout=60, check=False)
        if created.returncode:
            service_unavailable(f"redis-cli --cluster create failed: {created.stdout[-500:]!r}")
        _wait_for_cluster([server.port for server in servers])
        client = RedisCluster(host="127.0.0.1", port=servers[0].port, socket_timeout=5)
        yield client
        client.close()
    finally:
        for server in servers:
            server.stop()


def _wait_for_cluster(ports: list[int]) -> None:
    clients = [redis.Redis(port=port) for port in ports]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(client.cluster("info").get("cluster_state") == "ok" for client in clients):
            break
        time.sleep(0.1)
    for client in clients:
        client.close()
    if time.monotonic() >= deadline:
        service_unavailable("the test Redis Cluster did not reach cluster_state:ok")


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[redis.Redis]:
    """A Redis master found through a Sentinel, both started for this run."""
    base = tmp_path_factory.mktemp("sentinel")
    master = RedisServer(base / "master")
    conf = base / "sentinel.conf"
    conf.write_text(
        f"sentinel monitor wsgi-test 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds wsgi-test 5000\n"
    )
    sentinel_server = RedisServer(base / "sentinel", str(conf), "--sentinel")
    try:
        master.start()
        sentinel_server.start()
        sentinel = Sentinel([("127.0.0.1", sentinel_server.port)], socket_timeout=2)
        client = sentinel.master_for("wsgi-test", socket_timeout=2)
        client.ping()
        yield client
        client.close()
    finally:
        sentinel_server.stop()
        master.stop()


class SQLServers:
    """Engines by backend name, connected on first use, and the tables made
    through :meth:`store`, dropped by :meth:`close`."""

    def __init__(self, sqlite_path: Path) -> None:
        self.urls = {"sqlite": f"sqlite:///{sqlite_path}", "postgresql": POSTGRES_URL, "mariadb": MYSQL_URL}
        #: The table the contract tests share during this run.
        self.table = f"sessions_test_{uuid.uuid4().hex[:10]}"
        self._engines: dict[str, sa.Engine] = {}
        self._tables: set[tuple[str, str]] = set()

    def engine(self, name: str) -> sa.Engine:
        if name not in self._engines:
            engine = sa.create_engine(self.urls[name], pool_size=16, max_overflow=8)
            try:
                with engine.connect():
                    pass
            except sa.exc.SQLAlchemyError as exc:
                engine.dispose()
                service_unavailable(f"{name} at {engine.url!r} is unreachable: {exc.__class__.__name__}")
            self._engines[name] = engine
        return self._engines[name]

    def store(self, name: str, table: str | None = None) -> SQLAlchemyStore:
        """A store on backend ``name``; ``table`` defaults to :attr:`table`."""
        table = table or self.table
        engine = self.engine(name)
        self._tables.add((name, table))
        return SQLAlchemyStore(engine, table)

    def close(self) -> None:
        for name, table in self._tables:
            sa.Table(table, sa.MetaData()).drop(self._engines[name], checkfirst=True)
        for engine in self._engines.values():
            engine.dispose()


@pytest.fixture(scope="session")
def sql_servers(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[SQLServers]:
    servers = SQLServers(tmp_path_factory.mktemp("sqlite") / "sessions.db")
    yield servers
    servers.close()


# -- the parametrized backend ---------------------------------------------------------

BACKENDS = [
    pytest.param("memory"),
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("sqlite"),
    pytest.param("postgresql", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mysql),
    pytest.param("cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
    pytest.param("sentinel", marks=pytest.mark.redis),
]


#: The stores that persist beyond the process (behind a per-process cache and
#: a flusher in the middleware), for ``parametrize("backend", ..., indirect=True)``.
PERSISTENT_BACKENDS = [param for param in BACKENDS if param.values != ("memory",)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> t.Iterator[Backend]:
    """Each store over each backend, empty at the start of the test."""
    name: str = request.param
    cleanup: list[Store] = []
    if name == "memory":
        memory = MemoryStore()
        built = Backend(name, memory, MemoryRaw(memory), MemoryStore)
    elif name in ("redis", "cluster", "sentinel"):
        fixture = {"redis": "redis_client", "cluster": "redis_cluster", "sentinel": "redis_sentinel"}[name]
        client = request.getfixturevalue(fixture)

        def redis_store() -> RedisStore:
            store = RedisStore(client, prefix=f"wsgi-test:{uuid.uuid4().hex}:")
            cleanup.append(store)
            return store

        store = redis_store()
        built = Backend(name, store, RedisRaw(client, store.prefix), redis_store)
    else:
        servers: SQLServers = request.getfixturevalue("sql_servers")
        sql_store = servers.store(name)
        cleanup.append(sql_store)
        raw = SQLRaw(sql_store.engine, sql_store.table)
        built = Backend(
            name, sql_store, raw, lambda: servers.store(name, f"{servers.table}_{uuid.uuid4().hex[:6]}")
        )
    built.store.setup()
    built.store.clear()
    yield built
    for store in cleanup:
        store.clear()


@pytest.fixture
def store(backend: Backend) -> Store:
    """The store of :func:`backend`."""
    return backend.store
