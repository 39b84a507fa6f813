"""The round-trip references: store calls with no session code around them.

Each serves ``/rtt`` with one call to its store and ``/rtt2`` with two, and
answers as the bare app answers ``/plain``, so the reference minus bare is the
cost of the calls alone. Two of them are the *units* of the RTT columns:
one redis-py ``GET`` and one psycopg2 ``SELECT 1``. The other two are
not (``unit=False``); under gunicorn they show how much of a Redis round
trip's cost to a worker is the client's Python:

``socket GET``
    the same ``GET`` written to a blocking socket and its reply read back,
    nothing else: about the least a round trip can cost a Python worker;
``wsgi_session client GET``
    the same ``GET`` through the Redis store's own request path
    (:class:`wsgi_session.stores._resp.LeanPath`), which a strict read or
    increment uses.

Every client here keeps its connections per thread (or in a thread-safe
pool), as a gthread worker needs.
"""

from __future__ import annotations

import socket
import threading
import typing as t

from .apps import PLAIN_HEADERS
from .cleanup import delete_redis_keys
from .counting import Counters, counting_redis
from .settings import REDIS_URL, Namespace
from .subjects import Subject, Target, Unavailable

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

T = t.TypeVar("T")


def _round_trips(environ: WSGIEnvironment) -> range:
    """One round trip per request; two for ``/rtt2``."""
    return range(2 if environ.get("PATH_INFO") == "/rtt2" else 1)


def _calling(call: t.Callable[[], object]) -> WSGIApplication:
    """The app of a reference: ``call()`` once or twice, then the bare answer."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        for _ in _round_trips(environ):
            call()
        start_response("200 OK", list(PLAIN_HEADERS))  # the bare app's: only the calls differ
        return [b"ok"]

    return app


class _PerThread(t.Generic[T]):
    """One connection per thread, opened on the thread's first call and all
    closed together (a gthread worker's threads must not share one)."""

    def __init__(self, open_one: t.Callable[[], T], close_one: t.Callable[[T], object]) -> None:
        self._open_one = open_one
        self._close_one = close_one
        self._local = threading.local()
        self._opened: list[T] = []
        self._lock = threading.Lock()

    def get(self) -> T:
        """This thread's connection."""
        connection: T | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._open_one()
            with self._lock:
                self._opened.append(connection)
        return connection

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            for connection in self._opened:
                self._close_one(connection)
            self._opened.clear()


#: What every Redis reference stores and reads back.
_VALUE = b"x" * 16


def _rtt_key(namespace: Namespace, slug: str) -> str:
    """The key one Redis reference reads (its own: closing one reference
    must not take another's away). No expiry: the run's sweep removes it."""
    return namespace.redis_prefix("rtt") + slug


def _expect(reply: object, what: str) -> None:
    """Raise unless ``reply`` is the stored value: a reference that reads
    nothing, or an error, would time the wrong thing."""
    if reply != _VALUE:
        raise RuntimeError(f"{what}: unexpected reply {reply!r:.60}")


def _redis_get(namespace: Namespace) -> Target:
    """redis-py ``GET`` (on the same kind of client as the other subjects)."""
    counters = Counters()
    client = counting_redis(REDIS_URL, counters.redis)
    key = _rtt_key(namespace, "rtt-redis")
    client.set(key, _VALUE)

    def get() -> None:
        _expect(client.get(key), "redis-py GET")

    def close() -> None:
        client.delete(key)
        client.close()

    return Target(_calling(get), close=close, counters=counters)


def _lean_get(namespace: Namespace) -> Target:
    """``GET`` through the Redis store's request path."""
    from wsgi_session.stores._resp import LeanPath

    counters = Counters()
    client = counting_redis(REDIS_URL, counters.redis)
    lean = LeanPath.for_client(client)
    assert lean is not None  # a plain client on redis-py's pool
    key = _rtt_key(namespace, "rtt-lean")
    client.set(key, _VALUE)
    command = [[b"GET", key.encode()]]

    def get() -> None:
        _expect(lean.call(command)[0], "wsgi_session client GET")

    def close() -> None:
        lean.close()
        client.delete(key)
        client.close()

    return Target(_calling(get), close=close, counters=counters)


def _command(*words: bytes) -> bytes:
    """One command in RESP."""
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(word), word) for word in words)


def _socket_get(namespace: Namespace) -> Target:
    """``GET`` on a blocking socket per thread: the request bytes written,
    the reply read and compared, nothing parsed. The server is the one of
    ``REDIS_URL`` as redis-py reads it (host, port, database, password);
    a unix socket or TLS is not supported here.

    :raises Unavailable: ``REDIS_URL`` is not plain TCP.
    """
    import redis

    settings = redis.ConnectionPool.from_url(REDIS_URL)
    if settings.connection_class is not redis.Connection:
        raise Unavailable(f"socket GET needs a plain TCP Redis URL, not {REDIS_URL}")
    options = settings.connection_kwargs
    address = (options.get("host", "localhost"), int(options.get("port", 6379)))
    handshake = [_command(b"SELECT", str(options.get("db", 0)).encode())]
    if options.get("password"):
        user = [options["username"].encode()] if options.get("username") else []
        handshake.insert(0, _command(b"AUTH", *user, options["password"].encode()))
    key = _rtt_key(namespace, "rtt-socket")
    request = _command(b"GET", key.encode())
    expected = b"$%d\r\n%s\r\n" % (len(_VALUE), _VALUE)
    counters = Counters()
    setup = counting_redis(REDIS_URL, Counters().redis)
    setup.set(key, _VALUE)

    def read(sock: socket.socket, size: int) -> bytes:
        """At least ``size`` bytes (one reply: nothing else is in flight)."""
        reply = b""
        while len(reply) < size:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            reply += chunk
        return reply

    def connect() -> socket.socket:
        """A socket logged in and on the URL's database."""
        sock = socket.create_connection(address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for command in handshake:
            sock.sendall(command)
            if read(sock, 5) != b"+OK\r\n":
                sock.close()
                raise RuntimeError(f"Redis refused {command[:30]!r}")
        return sock

    sockets = _PerThread(connect, socket.socket.close)

    def get() -> None:
        sock = sockets.get()
        sock.sendall(request)
        reply = read(sock, len(expected))
        counters.redis.add()
        if reply != expected:
            raise RuntimeError(f"socket GET: unexpected reply {reply[:40]!r}")

    def close() -> None:
        sockets.close()
        setup.delete(key)
        setup.close()

    return Target(_calling(get), close=close, counters=counters)


def _postgres_select(namespace: Namespace) -> Target:
    """``SELECT 1`` on a psycopg2 connection in autocommit. A psycopg2
    connection serves one thread at a time, so each thread opens its own
    (the first request of a thread pays for it; warm-up covers that)."""
    import sqlalchemy as sa

    engine = sa.create_engine(namespace.postgres_url, poolclass=sa.pool.NullPool)
    counters = Counters()

    def connect() -> tuple[t.Any, t.Any]:
        """A connection of the engine in autocommit, and its cursor."""
        raw = engine.raw_connection()
        dbapi = raw.dbapi_connection
        assert dbapi is not None
        dbapi.autocommit = True
        return raw, dbapi.cursor()

    connections = _PerThread(connect, lambda opened: opened[0].close())

    def select() -> None:
        cursor = connections.get()[1]
        cursor.execute("SELECT 1")
        cursor.fetchone()
        counters.sql_statements.add()

    def close() -> None:
        connections.close()
        engine.dispose()

    return Target(_calling(select), close=close, counters=counters)


def _forget_rtt_keys(namespace: Namespace) -> None:
    """Delete every Redis reference's key under ``namespace``."""
    delete_redis_keys(namespace.redis_prefix("rtt") + "*")


def round_trip_references() -> list[Subject]:
    """The references, units first, all also run under gunicorn."""

    def redis(name: str, slug: str, build: t.Callable[[Namespace], Target], unit: bool) -> Subject:
        """A Redis reference: its keys are cleaned up by prefix."""
        return Subject(
            name, slug, build, role="rtt", store="redis", unit=unit, gunicorn=True, cleanup=_forget_rtt_keys
        )

    return [
        redis("redis-py GET", "rtt-redis", _redis_get, unit=True),
        Subject(
            "psycopg2 SELECT 1",
            "rtt-postgresql",
            _postgres_select,
            role="rtt",
            store="postgresql",
            gunicorn=True,
        ),
        redis("wsgi_session client GET", "rtt-lean", _lean_get, unit=False),
        redis("socket GET", "rtt-socket", _socket_get, unit=False),
    ]
