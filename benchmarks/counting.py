"""Counting store round trips for real, not estimating them.

* **Redis**: every round trip of redis-py is one ``send_packed_command`` on a
  connection (a pipeline packs all its commands into one send). A client
  built by :func:`counting_redis` uses a connection class that counts them.
* **SQL statements**: the DBAPI cursor of a connection made with
  :func:`counting_connect_args` counts the statements it executes.
* **PostgreSQL round trips**: psycopg2 also sends queries of its own that no
  SQLAlchemy event sees — ``BEGIN`` before the first statement of a
  transaction, ``ROLLBACK`` when a connection goes back to the pool,
  ``SET default_transaction_isolation`` when an isolation level is reset.
  :class:`PostgresQueryCounter` is a loopback TCP proxy that reads the wire
  protocol and counts every query message (psycopg2 uses the simple query
  protocol: one message, one round trip). It adds a hop, so it is only used
  in a separate, untimed counting pass.

Counters are cumulative; the harness takes a :meth:`Counters.snapshot`
before and after a batch and divides the difference by its requests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import typing as t

if t.TYPE_CHECKING:
    import redis

#: Startup-phase request codes that are followed by another startup message.
_SSL_REQUEST, _GSSENC_REQUEST = 80877103, 80877104


class Counter:
    """A thread-safe running count."""

    __slots__ = ("_lock", "value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, amount: int = 1) -> None:
        with self._lock:
            self.value += amount


@dataclasses.dataclass
class Counters:
    """The counters of one subject (all zero when it has no store).

    :param redis: Redis round trips.
    :param sql_statements: SQL statements executed.
    """

    redis: Counter = dataclasses.field(default_factory=Counter)
    sql_statements: Counter = dataclasses.field(default_factory=Counter)

    def snapshot(self) -> dict[str, int]:
        """The current values, by name."""
        return {"redis": self.redis.value, "sql_statements": self.sql_statements.value}


def counting_redis(url: str, counter: Counter) -> redis.Redis:
    """A :class:`redis.Redis` for ``url`` that adds 1 to ``counter`` per round trip."""
    import redis

    class CountingConnection(redis.Connection):
        def send_packed_command(self, command: t.Any, check_health: bool = True) -> None:
            counter.add()
            super().send_packed_command(command, check_health)

    pool = redis.ConnectionPool.from_url(url, connection_class=CountingConnection)
    return redis.Redis(connection_pool=pool)


def counting_connect_args(url: str, counter: Counter) -> dict[str, t.Any]:
    """``connect_args`` for ``sqlalchemy.create_engine(url, ...)`` whose
    connections add 1 to ``counter`` per statement a cursor executes
    (PostgreSQL through psycopg2, or SQLite).

    Counted at the DBAPI, below SQLAlchemy, because a listener on the
    engine's statement events would change what is measured: the store runs
    its request-path reads on the cursor only while nothing listens
    (:mod:`wsgi_session.stores._sql_cursor`)."""
    if url.startswith("postgresql"):
        import psycopg2.extensions

        class CountingCursor(psycopg2.extensions.cursor):
            def execute(self, query: t.Any, vars: t.Any = None) -> None:
                counter.add()
                super().execute(query, vars)

            def executemany(self, query: t.Any, vars_list: t.Any) -> None:
                counter.add()
                super().executemany(query, vars_list)

        return {"cursor_factory": CountingCursor}
    if url.startswith("sqlite"):
        import sqlite3

        class CountingSQLiteCursor(sqlite3.Cursor):
            def execute(self, sql: str, parameters: t.Any = (), /) -> CountingSQLiteCursor:
                counter.add()
                return super().execute(sql, parameters)

            def executemany(self, sql: str, parameters: t.Any, /) -> CountingSQLiteCursor:
                counter.add()
                return super().executemany(sql, parameters)

        class CountingSQLiteConnection(sqlite3.Connection):
            def cursor(self, factory: t.Any = CountingSQLiteCursor) -> t.Any:
                return super().cursor(factory)

        return {"factory": CountingSQLiteConnection}
    raise ValueError(f"no statement counting for {url!r}")


class PostgresQueryCounter:
    """A loopback proxy in front of PostgreSQL that counts query messages.

    :param host: the PostgreSQL server's address.
    :param port: its port.

    Use :meth:`running` and connect to :attr:`url`; :attr:`queries` counts
    every simple-query (``Q``) message any client sent through it.
    """

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.queries = Counter()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, name="pg-counter", daemon=True)]

    @classmethod
    @contextlib.contextmanager
    def running(cls, url: str) -> t.Iterator[PostgresQueryCounter]:
        """A counter in front of the server of SQLAlchemy ``url``, stopped afterwards."""
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        proxy = cls(parsed.host or "127.0.0.1", parsed.port or 5432)
        proxy._threads[0].start()
        try:
            yield proxy
        finally:
            proxy.close()

    def url_for(self, url: str) -> str:
        """``url`` pointed at this proxy (without TLS, so the protocol can be read)."""
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        proxied = parsed.set(host="127.0.0.1", port=self.port, query={**parsed.query, "sslmode": "disable"})
        return proxied.render_as_string(hide_password=False)

    def close(self) -> None:
        """Stop accepting, close every connection, wait for the threads."""
        self._stop.set()
        self._listener.close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(2.0)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._sockets.append(sock)
            for target in (self._from_client, self._from_server):
                thread = threading.Thread(target=target, args=(client, server), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _from_server(self, client: socket.socket, server: socket.socket) -> None:
        _pump(server, client, None)

    def _from_client(self, client: socket.socket, server: socket.socket) -> None:
        _pump(client, server, _QueryParser(self.queries))


class _QueryParser:
    """Follows the frontend side of the PostgreSQL protocol, counting ``Q``."""

    def __init__(self, queries: Counter) -> None:
        self.queries = queries
        self.buffer = b""
        self.startup = True  # startup messages carry no type byte

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.startup:
                if len(self.buffer) < 8:
                    return
                length = int.from_bytes(self.buffer[:4], "big")
                code = int.from_bytes(self.buffer[4:8], "big")
                if len(self.buffer) < length:
                    return
                self.startup = code in (_SSL_REQUEST, _GSSENC_REQUEST)
                self.buffer = self.buffer[length:]
            else:
                if len(self.buffer) < 5:
                    return
                length = int.from_bytes(self.buffer[1:5], "big")
                if len(self.buffer) < 1 + length:
                    return
                if self.buffer[:1] == b"Q":
                    self.queries.add()
                self.buffer = self.buffer[1 + length :]


def _pump(source: socket.socket, sink: socket.socket, parser: _QueryParser | None) -> None:
    """Forward ``source`` to ``sink`` until either closes."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            # Count before forwarding: once the query is sent, its reply can
            # reach the client, and the client read the count, before this
            # thread runs again (a compiled client's read was counted 0.8).
            if parser is not None:
                parser.feed(data)
            sink.sendall(data)
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
