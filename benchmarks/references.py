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
import urllib.parse

from .apps import PLAIN_HEADERS
from .cleanup import delete_redis_keys
from .counting import Counters, counting_redis
from .settings import REDIS_URL, Namespace
from .subjects import Subject, Target

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


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


def _rtt_key(namespace: Namespace) -> str:
    return namespace.redis_prefix("rtt") + "key"


def _redis_get(namespace: Namespace) -> Target:
    """redis-py ``GET`` (on the same kind of client as the other subjects)."""
    counters = Counters()
    client = counting_redis(REDIS_URL, counters.redis)
    key = _rtt_key(namespace)
    client.set(key, b"x" * 16, ex=3600)

    def close() -> None:
        client.delete(key)
        client.close()

    return Target(_calling(lambda: client.get(key)), close=close, counters=counters)


def _lean_get(namespace: Namespace) -> Target:
    """``GET`` through the Redis store's request path."""
    from wsgi_session.stores._resp import LeanPath

    counters = Counters()
    client = counting_redis(REDIS_URL, counters.redis)
    lean = LeanPath.for_client(client)
    assert lean is not None  # a plain client on redis-py's pool
    key = _rtt_key(namespace)
    client.set(key, b"x" * 16, ex=3600)
    command = [[b"GET", key.encode()]]

    def close() -> None:
        lean.close()
        client.delete(key)
        client.close()

    return Target(_calling(lambda: lean.call(command)), close=close, counters=counters)


def _socket_get(namespace: Namespace) -> Target:
    """``GET`` on a blocking socket per thread: the request bytes written,
    the reply read, nothing parsed. The key's value fits one read."""
    url = urllib.parse.urlsplit(REDIS_URL)
    address = (url.hostname or "127.0.0.1", url.port or 6379)
    database = (url.path or "/0").strip("/") or "0"
    key = _rtt_key(namespace).encode()
    request = b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key)
    counters = Counters()
    per_thread = threading.local()
    opened: list[socket.socket] = []
    opened_lock = threading.Lock()
    setup = counting_redis(REDIS_URL, Counters().redis)
    setup.set(key, b"x" * 16, ex=3600)

    def connect() -> socket.socket:
        sock = socket.create_connection(address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        select = b"*2\r\n$6\r\nSELECT\r\n$%d\r\n%s\r\n" % (len(database), database.encode())
        sock.sendall(select)
        if sock.recv(64) != b"+OK\r\n":
            raise RuntimeError(f"SELECT {database} failed")
        with opened_lock:
            opened.append(sock)
        return sock

    def get() -> bytes:
        sock: socket.socket | None = getattr(per_thread, "sock", None)
        if sock is None:
            sock = per_thread.sock = connect()
        sock.sendall(request)
        reply = sock.recv(65536)
        counters.redis.add()
        if not reply.startswith(b"$16\r\n"):
            raise RuntimeError(f"unexpected reply {reply[:40]!r}")
        return reply

    def close() -> None:
        with opened_lock:
            for sock in opened:
                sock.close()
            opened.clear()
        setup.delete(key)
        setup.close()

    return Target(_calling(get), close=close, counters=counters)


def _postgres_select(namespace: Namespace) -> Target:
    """``SELECT 1`` on a psycopg2 connection in autocommit. A psycopg2
    connection serves one thread at a time, so each thread opens its own
    (the first request of a thread pays for it; warm-up covers that)."""
    import sqlalchemy as sa

    engine = sa.create_engine(namespace.postgres_url, poolclass=sa.pool.NullPool)
    per_thread = threading.local()
    opened: list[t.Any] = []
    opened_lock = threading.Lock()
    counters = Counters()

    def select() -> None:
        cursor = getattr(per_thread, "cursor", None)
        if cursor is None:
            raw = engine.raw_connection()
            dbapi = raw.dbapi_connection
            assert dbapi is not None
            dbapi.autocommit = True
            cursor = per_thread.cursor = dbapi.cursor()
            with opened_lock:
                opened.append(raw)
        cursor.execute("SELECT 1")
        cursor.fetchone()
        counters.sql_statements.add()

    def close() -> None:
        with opened_lock:
            for raw in opened:
                raw.close()
            opened.clear()
        engine.dispose()

    return Target(_calling(select), close=close, counters=counters)


def _forget_rtt_keys(namespace: Namespace) -> None:
    delete_redis_keys(namespace.redis_prefix("rtt") + "*")


def round_trip_references() -> list[Subject]:
    """The references, units first, all also run under gunicorn."""

    def redis(name: str, slug: str, build: t.Callable[[Namespace], Target], unit: bool) -> Subject:
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
