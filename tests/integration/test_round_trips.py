"""Round trips per request through the real middleware, counted on the wire.

The promise of issue 4, default (strict) mode: on PostgreSQL a returning
visitor's read-only request is one query and a counter increment two (no
``BEGIN``/``COMMIT``/``SET`` around them); on Redis a read is one round trip
and an increment two; the same on MariaDB. With ``coherence="notify"`` on
PostgreSQL, a read is served from the cache and a write is one query. PostgreSQL queries are counted by
the benchmark suite's wire-protocol proxy
(:class:`benchmarks.counting.PostgresQueryCounter`), which sees what psycopg2
sends behind SQLAlchemy's back too; MariaDB's by the server's own
``Questions`` counter (every statement, ``ROLLBACK`` included); Redis round
trips by a connection class that counts each send (a pipeline is one).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import typing as t
import uuid

import pytest
import sqlalchemy as sa
from services import MYSQL_URL, POSTGRES_URL, REDIS_URL, port_open, require

from benchmarks.cases import base_environ, call
from benchmarks.counting import Counter, PostgresQueryCounter, counting_redis
from benchmarks.settings import Namespace
from benchmarks.subjects import by_slug
from wsgi_session import SessionConfig, SessionMiddleware
from wsgi_session.stores import RedisStore, SQLAlchemyStore

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from wsgi_session.stores.base import Store

SECRET = "round-trips-" + "k" * 32


def counter_app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """``/inc`` adds one to ``n``; ``/read`` reads ``n`` and ``blob``."""
    session = environ["session"]
    if environ["PATH_INFO"] == "/inc":
        session["n"] = session.get("n", 0) + 1
    body = b"n=%d;%d" % (session.get("n", 0), len(session.get("blob", "")))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


class Client:
    """Calls the middleware in process, keeping the session cookie."""

    def __init__(self, app: SessionMiddleware) -> None:
        self.app = app
        self.cookie = ""

    def get(self, path: str) -> bytes:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "wsgi.url_scheme": "http"}
        if self.cookie:
            environ["HTTP_COOKIE"] = self.cookie
        headers: list[tuple[str, str]] = []

        def start_response(
            status: str, response_headers: list[tuple[str, str]], exc_info: t.Any = None
        ) -> t.Any:
            assert status.startswith("200"), status
            headers.extend(response_headers)

        body = b"".join(self.app(environ, start_response))
        for name, value in headers:
            if name == "Set-Cookie":
                self.cookie = value.split(";", 1)[0]
        return body


def per_request(count: t.Callable[[], int], client: Client, path: str, requests: int = 5) -> float:
    before = count()
    for _ in range(requests):
        client.get(path)
    return (count() - before) / requests


def measured(store: Store, count: t.Callable[[], int], **config: t.Any) -> dict[str, float]:
    """Round trips of a new visitor, then per increment and per read."""
    with SessionMiddleware(counter_app, SessionConfig(secret_keys=[SECRET], **config), store) as app:
        Client(app).get("/inc")  # warm-up: connections, table check, script load, LISTEN
        listener = app.manager.cached.listener if app.manager.cached is not None else None
        deadline = time.monotonic() + 10
        while listener is not None and not listener.healthy and time.monotonic() < deadline:
            time.sleep(0.01)
        assert listener is None or listener.healthy, "the invalidation listener did not subscribe"
        client = Client(app)
        before = count()
        client.get("/inc")
        counts: dict[str, float] = {"new visitor": count() - before}
        assert client.cookie
        counts["increment"] = per_request(count, client, "/inc")
        counts["read"] = per_request(count, client, "/read")
        assert client.get("/read").startswith(b"n=6;")  # every increment was kept
    return counts


def postgres_queries(**config: t.Any) -> dict[str, float]:
    """:func:`measured` on a fresh table, queries counted by the proxy."""
    url = sa.engine.make_url(POSTGRES_URL)
    require("PostgreSQL", port_open(url.port or 5432, url.host or "127.0.0.1"), POSTGRES_URL)
    table = f"sessions_rt_{uuid.uuid4().hex[:8]}"
    with PostgresQueryCounter.running(POSTGRES_URL) as proxy:
        engine = sa.create_engine(proxy.url_for(POSTGRES_URL))
        try:
            store = SQLAlchemyStore(engine, table)
            store.setup()
            return measured(store, lambda: proxy.queries.value, **config)
        finally:
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
            engine.dispose()


@pytest.mark.postgres
def test_postgresql_read_is_one_query_and_increment_two() -> None:
    assert postgres_queries() == {"new visitor": 1, "increment": 2, "read": 1}


@pytest.mark.postgres
def test_postgresql_notify_mode_reads_from_its_cache_and_writes_in_one_query() -> None:
    """``coherence="notify"``: reads are served from the process's cache
    (kept coherent by ``LISTEN``), and each write, with its ``NOTIFY``, is
    one statement in autocommit (it was four round trips: ``BEGIN``, the
    write, the ``NOTIFY``, ``COMMIT``)."""
    assert postgres_queries(coherence="notify") == {"new visitor": 1, "increment": 1, "read": 0}


def mariadb_questions(conn: sa.Connection) -> t.Callable[[], int]:
    """The statements a MariaDB server has received (its global
    ``Questions``), read on ``conn``, less the reading queries themselves.
    The tests run one at a time, so nothing else talks to the server."""
    reads = 0

    def count() -> int:
        nonlocal reads
        reads += 1
        return int(conn.exec_driver_sql("SHOW GLOBAL STATUS LIKE 'Questions'").one()[1]) - reads

    return count


@pytest.mark.mysql
def test_mariadb_read_is_one_query_and_increment_two() -> None:
    url = sa.engine.make_url(MYSQL_URL)
    require("MariaDB", port_open(url.port or 3306, url.host or "127.0.0.1"), MYSQL_URL)
    engine = sa.create_engine(MYSQL_URL)
    table = f"sessions_rt_{uuid.uuid4().hex[:8]}"
    status = engine.connect()
    try:
        store = SQLAlchemyStore(engine, table)
        store.setup()
        counts = measured(store, mariadb_questions(status))
        assert counts == {"new visitor": 1, "increment": 2, "read": 1}
    finally:
        status.close()
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS `{table}`"))
        engine.dispose()


@pytest.mark.redis
def test_redis_read_is_one_round_trip_and_increment_two() -> None:
    url = REDIS_URL.split("//", 1)[1].split("/", 1)[0]
    host, _, port = url.rpartition(":")
    require("Redis", port_open(int(port or 6379), host or "127.0.0.1"), REDIS_URL)
    sends = Counter()
    client = counting_redis(REDIS_URL, sends)
    prefix = f"rt-{uuid.uuid4().hex[:8]}:"
    try:
        counts = measured(RedisStore(client, prefix=prefix), lambda: sends.value)
        assert counts == {"new visitor": 1, "increment": 2, "read": 1}
    finally:
        for key in client.scan_iter(prefix + "*"):
            client.delete(key)
        client.close()


def alternating(stores: tuple[Store, Store], count: t.Callable[[], int]) -> dict[str, list[float]]:
    """Two workers (a middleware on each store, both on one database) serve
    one visitor in turn, so each request finds its worker's cached copy
    stale: round trips per increment, then per read, once each worker has
    seen that happen often."""
    config = SessionConfig(secret_keys=[SECRET])
    workers = [SessionMiddleware(counter_app, config, store) for store in stores]
    try:
        visitor = Client(workers[0])
        visitor.get("/inc")
        # Each worker learns that its copies are often stale: it needs 5 stale
        # checks in a row to pass a fifth (1 - 0.95**5), and gets 8 here.
        for turn in range(16):
            visitor.app = workers[1 - turn % 2]
            visitor.get("/inc")
        counts: dict[str, list[float]] = {"increment": [], "read": []}
        for name, path in (("increment", "/inc"), ("read", "/read")):
            for turn in range(6):
                visitor.app = workers[turn % 2]
                counts[name].append(per_request(count, visitor, path, 1))
        assert visitor.get("/read").startswith(b"n=23;")  # every increment was kept, on either worker
        return counts
    finally:
        for worker in workers:
            worker.close()


#: Before: a stale copy's check was a version check and then a load, so
#: each increment here made three round trips.
ONE_TRIP_CHECKS = {"increment": [2] * 6, "read": [1] * 6}


@pytest.mark.redis
def test_redis_a_copy_another_worker_made_stale_costs_no_extra_round_trip() -> None:
    require("Redis", port_open(6379, "127.0.0.1"), REDIS_URL)
    sends = Counter()
    client = counting_redis(REDIS_URL, sends)
    prefix = f"rt-{uuid.uuid4().hex[:8]}:"
    try:
        stores = (RedisStore(client, prefix=prefix), RedisStore(client, prefix=prefix))
        assert alternating(stores, lambda: sends.value) == ONE_TRIP_CHECKS
    finally:
        for key in client.scan_iter(prefix + "*"):
            client.delete(key)
        client.close()


@pytest.mark.postgres
def test_postgresql_a_copy_another_worker_made_stale_costs_no_extra_query() -> None:
    url = sa.engine.make_url(POSTGRES_URL)
    require("PostgreSQL", port_open(url.port or 5432, url.host or "127.0.0.1"), POSTGRES_URL)
    table = f"sessions_rt_{uuid.uuid4().hex[:8]}"
    with PostgresQueryCounter.running(POSTGRES_URL) as proxy:
        engines = [sa.create_engine(proxy.url_for(POSTGRES_URL)) for _ in range(2)]
        try:
            stores = (SQLAlchemyStore(engines[0], table), SQLAlchemyStore(engines[1], table))
            stores[0].setup()
            assert alternating(stores, lambda: proxy.queries.value) == ONE_TRIP_CHECKS
        finally:
            with engines[0].begin() as conn:
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
            for engine in engines:
                engine.dispose()


@pytest.mark.mysql
def test_mariadb_a_copy_another_worker_made_stale_costs_no_extra_query() -> None:
    url = sa.engine.make_url(MYSQL_URL)
    require("MariaDB", port_open(url.port or 3306, url.host or "127.0.0.1"), MYSQL_URL)
    engines = [sa.create_engine(MYSQL_URL) for _ in range(2)]
    table = f"sessions_rt_{uuid.uuid4().hex[:8]}"
    status = engines[0].connect()
    try:
        stores = (SQLAlchemyStore(engines[0], table), SQLAlchemyStore(engines[1], table))
        stores[0].setup()
        assert alternating(stores, mariadb_questions(status)) == ONE_TRIP_CHECKS
    finally:
        status.close()
        with engines[0].begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS `{table}`"))
        for engine in engines:
            engine.dispose()


@pytest.mark.redis
@pytest.mark.postgres
def test_the_round_trip_references_make_one_and_two() -> None:
    """The benchmarks' RTT references (``/rtt`` one call, ``/rtt2`` two),
    counted on the wire: what the load test compares a strict increment with."""
    require("Redis", port_open(6379, "127.0.0.1"), REDIS_URL)
    require("PostgreSQL", port_open(5432, "127.0.0.1"), POSTGRES_URL)
    # Redis: the counting client counts each command it sends; the bare
    # socket counts each reply it read. Redis's own counter sees them all.
    for slug in ("rtt-redis", "rtt-lean", "rtt-socket"):
        target = by_slug(slug).build(Namespace.new())
        try:
            call(target.app, base_environ("/rtt"))  # the thread's connection is opened here
            for path, expected in (("/rtt", 1), ("/rtt2", 2)):
                before, served = target.counters.snapshot()["redis"], _redis_commands_processed()
                assert call(target.app, base_environ(path))[0] == "200 OK"
                assert target.counters.snapshot()["redis"] - before == expected, (slug, path)
                # INFO itself is one command; others' traffic can only add.
                assert _redis_commands_processed() - served >= expected + 1, (slug, path)
        finally:
            target.close()
    # PostgreSQL: the proxy counts the queries that reach the server.
    with PostgresQueryCounter.running(POSTGRES_URL) as proxy:
        target = by_slug("rtt-postgresql").build(Namespace.new().via(proxy.url_for(POSTGRES_URL)))
        try:
            call(target.app, base_environ("/rtt"))  # the thread's connection is opened here
            for path, expected in (("/rtt", 1), ("/rtt2", 2)):
                before = proxy.queries.value
                assert call(target.app, base_environ(path))[0] == "200 OK"
                assert proxy.queries.value - before == expected, path
        finally:
            target.close()


def _redis_commands_processed() -> int:
    """Redis's count of the commands it has run (``INFO stats``)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return int(client.info("stats")["total_commands_processed"])
    finally:
        client.close()


@pytest.mark.parametrize(
    "slug",
    [
        *(pytest.param(slug, marks=pytest.mark.redis) for slug in ("rtt-redis", "rtt-lean", "rtt-socket")),
        pytest.param("rtt-postgresql", marks=pytest.mark.postgres),
    ],
)
def test_the_round_trip_references_serve_concurrent_threads(slug: str) -> None:
    """A gthread worker calls a reference from 4 threads at once: every
    call must succeed (a psycopg2 connection shared between threads did
    not, and its failed requests were cheap ones)."""
    if slug != "rtt-postgresql":
        require("Redis", port_open(6379, "127.0.0.1"), REDIS_URL)
    else:
        require("PostgreSQL", port_open(5432, "127.0.0.1"), POSTGRES_URL)
    target = by_slug(slug).build(Namespace.new())
    start = threading.Barrier(4)

    def requests() -> list[str]:
        start.wait()
        return [call(target.app, base_environ("/rtt2"))[0] for _ in range(200)]

    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            statuses = [status for batch in pool.map(lambda _: requests(), range(4)) for status in batch]
    finally:
        target.close()
    assert statuses == ["200 OK"] * 800
