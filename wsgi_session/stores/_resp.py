"""A lean path to Redis for the commands on a request's path.

A request with a Redis store makes one or two round trips: ``HGET`` (the
version check), ``HGETALL`` (a load) and ``EVALSHA`` (the merge script). On
loopback, redis-py spends most of such a round trip in its own machinery —
measured on the benchmark machine, a ``GET`` costs about 100 µs of CPU
through ``client.get`` and about 15 µs as the same bytes on a socket: pool
check-out and check-in with fork checks, per-argument encoding, retry
wrappers, event and metrics hooks, and a read path of ``recv``, ``poll``,
``recv``.

:class:`LeanPath` keeps one connection of the client's own pool per thread,
made by the pool, so the address, ``AUTH``, ``SELECT``, TLS, timeouts and
the connection class are the client's. It sends the packed commands with the
connection's own ``send_packed_command`` and reads the replies straight from
its socket, in RESP2 or RESP3, whichever the connection agreed (the
connection's parser is never used for these replies, so its buffer stays
empty). Error replies become redis-py's exception classes, by redis-py's own
table; connection errors and timeouts are raised as redis-py raises them. A
connection that turns out to be closed (Redis restarted, or dropped an idle
client) before anything came back is replaced and the commands are sent once
more on the new one; so are commands a server answered ``READONLY`` (a
Sentinel failover demoted it). Any other failure or interruption closes the
thread's connection, so no reply is ever read by the wrong call.

What redis-py would do around these commands and this path does not: the
client's ``retry`` policy, ``health_check_interval`` pings, credential
re-authentication, and redis-py's command instrumentation (OpenTelemetry
spans, metrics). Connections are made from the pool's class and settings but
outside its accounting, one per thread, closed when the thread ends.

It is used only where it is equivalent: a :class:`redis.Redis` (plain, or a
Sentinel master client) on a :class:`redis.ConnectionPool`. Cluster clients
take redis-py's path.
"""

from __future__ import annotations

import os
import socket
import threading
import typing as t
import weakref

import redis
import redis.exceptions as rex

try:
    from redis._parsers.base import BaseParser

    _parse_error: t.Callable[[str], rex.RedisError] = BaseParser.parse_error
except ImportError:  # pragma: no cover - a redis-py without the parsers package
    _parse_error = rex.ResponseError

#: Replies are read in chunks of this many bytes.
_CHUNK = 65536
_INCOMPLETE: t.Any = object()
_PUSH: t.Any = object()
#: Bumped in a forked child: connections made before the fork are not used.
_generation = [0]
os.register_at_fork(after_in_child=lambda: _generation.__setitem__(0, _generation[0] + 1))


class _Closed(Exception):
    """The connection was closed under us before any reply arrived."""


def pack(command: t.Sequence[bytes]) -> bytes:
    """``command`` as a RESP array of bulk strings."""
    return b"*%d\r\n" % len(command) + b"".join([b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in command])


def parse(data: bytes, position: int = 0) -> tuple[t.Any, int]:
    """One reply of ``data`` from ``position``: the value and where the next
    reply starts; the value is :data:`_INCOMPLETE` if ``data`` ends first.
    Bulk strings stay bytes, ``nil`` is ``None``, an error reply is the
    redis-py exception instance it means. RESP2, and the RESP3 types these
    commands can answer (null, boolean, a map as its flat key-value list)."""
    end = data.find(b"\r\n", position)
    if end < 0:
        return _INCOMPLETE, position
    kind, line, after = data[position], data[position + 1 : end], end + 2
    if kind == 36:  # $ bulk string
        size = int(line)
        if size < 0:
            return None, after
        if len(data) < after + size + 2:
            return _INCOMPLETE, position
        return data[after : after + size], after + size + 2
    if kind == 58:  # : integer
        return int(line), after
    if kind in (42, 37, 126):  # * array, % map (RESP3: its keys and values, flat), ~ set
        count = int(line) * (2 if kind == 37 else 1)
        if count < 0:
            return None, after
        items = []
        for _ in range(count):
            item, after = parse(data, after)
            if item is _INCOMPLETE:
                return _INCOMPLETE, position
            items.append(item)
        return items, after
    if kind == 43:  # + simple string
        return line, after
    if kind == 45:  # - error
        return _parse_error(line.decode("utf-8", "replace")), after
    if kind == 62:  # > push (RESP3: out-of-band, e.g. a server notice): not a reply
        items, after = parse(data[:position] + b"*" + data[position + 1 :], position)
        return (_INCOMPLETE, position) if items is _INCOMPLETE else (_PUSH, after)
    if kind == 95:  # _ null (RESP3)
        return None, after
    if kind == 35:  # # boolean (RESP3)
        return line == b"t", after
    raise rex.InvalidResponse(f"unexpected reply type {bytes([kind])!r}")


class _Reader:
    """Reads replies from a socket, keeping only the bytes not parsed yet.

    A reply that is an array (``HGETALL``'s, a pipeline's script results) is
    parsed element by element as its bytes arrive, so a large one costs one
    pass, not one pass per read."""

    __slots__ = ("data", "position", "received", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = b""
        self.position = 0
        self.received = 0

    def _fill(self) -> None:
        chunk = self.sock.recv(_CHUNK)
        if not chunk:
            raise _Closed("connection closed by the server")
        self.received += len(chunk)
        self.data = self.data[self.position :] + chunk
        self.position = 0

    def reply(self) -> t.Any:
        """The next reply (push frames are skipped)."""
        while True:
            data, position = self.data, self.position
            end = data.find(b"\r\n", position)
            if end < 0:
                self._fill()
                continue
            if data[position] in (42, 37):  # * array, % map: element by element
                count = int(data[position + 1 : end]) * (2 if data[position] == 37 else 1)
                self.position = end + 2
                return None if count < 0 else self._elements(count)
            value, after = parse(data, position)
            if value is _INCOMPLETE:
                self._fill()
                continue
            self.position = after
            if value is not _PUSH:
                return value

    def _elements(self, count: int) -> list[t.Any]:
        items: list[t.Any] = []
        while len(items) < count:
            value, after = parse(self.data, self.position)
            if value is _INCOMPLETE:
                self._fill()
                continue
            items.append(value)
            self.position = after
        return items


def _receive(reader: _Reader, count: int) -> list[t.Any]:
    """Read ``count`` replies (blocking; the socket's timeout)."""
    replies = [reader.reply() for _ in range(count)]
    if reader.position != len(reader.data):
        raise rex.InvalidResponse("more reply bytes than commands sent")
    return replies


class _Held:
    """A thread's connection. When the thread ends, its thread-local storage
    goes and this with it; a finalizer then closes the connection."""

    __slots__ = ("__weakref__", "connection", "generation")

    def __init__(self, connection: t.Any) -> None:
        self.connection = connection
        self.generation = _generation[0]


class LeanPath:
    """Commands sent on a connection per thread, replies parsed here.

    :param pool: the client's connection pool; connections are made from its
        class and settings (outside its accounting: they are held per thread
        and closed with the thread, not checked in and out).
    """

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self._pool = pool
        self._local = threading.local()
        #: Every live connection by its holder's id, for :meth:`close`.
        self._live: dict[int, t.Any] = {}

    @classmethod
    def for_client(cls, client: t.Any) -> LeanPath | None:
        """A lean path for ``client``, or ``None`` where it would not be
        equivalent: a cluster, a pool that is not redis-py's, or client-side
        caching (``cache_config``), which these commands would bypass."""
        pool = getattr(client, "connection_pool", None)
        if not isinstance(client, redis.Redis) or not isinstance(pool, redis.ConnectionPool):
            return None
        if getattr(pool, "cache", None) is not None:
            return None
        return cls(pool)

    def call(self, commands: t.Sequence[t.Sequence[bytes]]) -> list[t.Any]:
        """Send ``commands`` in one write (a pipeline when several) and return
        their replies in order, error replies as exception instances.

        Sent once more, on a new connection, when the thread's connection
        had been closed and nothing came back from it, or when the server
        answered ``READONLY`` (a Sentinel failover demoted it; the new
        connection asks Sentinel for the master).

        :raises redis.exceptions.ConnectionError: Redis cannot be reached.
        :raises redis.exceptions.TimeoutError: no reply within the socket timeout.
        """
        packed = b"".join(pack(command) for command in commands)
        try:
            replies = self._round_trip(packed, len(commands), fresh=False)
        except _Closed:
            return self._round_trip(packed, len(commands), fresh=True)
        if any(isinstance(reply, rex.ReadOnlyError) for reply in replies):
            self._drop()  # a replica: nothing was written
            return self._round_trip(packed, len(commands), fresh=True)
        return replies

    def _round_trip(self, packed: bytes, count: int, fresh: bool) -> list[t.Any]:
        held: _Held | None = getattr(self._local, "held", None)
        if fresh or held is None or held.connection._sock is None or held.generation != _generation[0]:
            held = self._connect()
            fresh = True
        connection = held.connection
        reader = _Reader(connection._sock)
        try:
            connection.send_packed_command([packed], check_health=False)
            return _receive(reader, count)
        except (TimeoutError, rex.TimeoutError) as exc:
            self._drop()
            if isinstance(exc, rex.TimeoutError):
                raise
            raise rex.TimeoutError("timeout reading from Redis") from exc
        except (_Closed, OSError, rex.ConnectionError) as exc:
            self._drop()
            if not fresh and reader.received == 0:  # worked before, closed while idle: nothing ran
                raise _Closed from exc
            if isinstance(exc, rex.ConnectionError):
                raise
            raise rex.ConnectionError(f"error talking to Redis: {exc}") from exc
        except BaseException:
            self._drop()  # interrupted mid-reply: the rest must not be read as the next reply
            raise

    def _connect(self) -> _Held:
        pool = self._pool
        connection = pool.connection_class(**pool.connection_kwargs)
        connection.connect()  # as the pool does: a Sentinel connection asks for the master here
        held = self._local.held = _Held(connection)
        self._live[id(held)] = connection
        weakref.finalize(held, self._closed, id(held), connection)
        return held

    def _closed(self, key: int, connection: t.Any) -> None:
        self._live.pop(key, None)
        connection.disconnect()

    def _drop(self) -> None:
        """Close this thread's connection after an error (its stream may be
        mid-reply); the next call makes a new one."""
        held = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None:
            self._closed(id(held), held.connection)

    def close(self) -> None:
        """Disconnect every connection this path made (in every thread)."""
        for connection in list(self._live.values()):
            connection.disconnect()
        self._live.clear()
