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
client) is replaced, and the commands are sent once more on the new one.

It is used only where it is equivalent: a :class:`redis.Redis` (plain, or a
Sentinel master client) on a :class:`redis.ConnectionPool`. Cluster clients
take redis-py's path.
"""

from __future__ import annotations

import os
import socket
import threading
import typing as t

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
    if kind == 95:  # _ null (RESP3)
        return None, after
    if kind == 35:  # # boolean (RESP3)
        return line == b"t", after
    raise rex.InvalidResponse(f"unexpected reply type {bytes([kind])!r}")


def _receive(sock: socket.socket, count: int) -> list[t.Any]:
    """Read ``count`` replies from ``sock`` (blocking; the socket's timeout)."""
    data = sock.recv(_CHUNK)
    position = 0
    replies: list[t.Any] = []
    while True:
        value, after = parse(data, position)
        if value is _INCOMPLETE:
            chunk = sock.recv(_CHUNK)
            if not chunk:
                raise _Closed("connection closed by the server")
            data = data[position:] + chunk
            position = 0
            continue
        replies.append(value)
        position = after
        if len(replies) == count:
            break
    if position != len(data):
        raise rex.InvalidResponse("more reply bytes than commands sent")
    return replies


class LeanPath:
    """Commands sent on a connection per thread, replies parsed here.

    :param pool: the client's connection pool (it makes the connections).
    """

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self._pool = pool
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[t.Any] = []

    @classmethod
    def for_client(cls, client: t.Any) -> LeanPath | None:
        """A lean path for ``client``, or ``None`` where it would not be
        equivalent (a cluster, a pool that is not redis-py's)."""
        pool = getattr(client, "connection_pool", None)
        if not isinstance(client, redis.Redis) or not isinstance(pool, redis.ConnectionPool):
            return None
        return cls(pool)

    def call(self, commands: t.Sequence[t.Sequence[bytes]]) -> list[t.Any]:
        """Send ``commands`` in one write (a pipeline when several) and return
        their replies in order, error replies as exception instances.

        :raises redis.exceptions.ConnectionError: Redis cannot be reached.
        :raises redis.exceptions.TimeoutError: no reply within the socket timeout.
        """
        packed = b"".join(pack(command) for command in commands)
        try:
            return self._round_trip(packed, len(commands), fresh=False)
        except _Closed:  # a connection that had gone stale: it delivered nothing
            return self._round_trip(packed, len(commands), fresh=True)

    def _round_trip(self, packed: bytes, count: int, fresh: bool) -> list[t.Any]:
        local = self._local
        connection: t.Any = getattr(local, "connection", None)
        if fresh or connection is None or connection._sock is None or local.generation != _generation[0]:
            connection = local.connection = t.cast("t.Any", self._pool.make_connection())
            local.generation = _generation[0]
            with self._lock:
                self._connections.append(connection)
            fresh = True
        try:
            if fresh:
                connection.connect()  # as the pool does: a Sentinel connection asks for the master here
            connection.send_packed_command([packed], check_health=False)
            return _receive(connection._sock, count)
        except (TimeoutError, rex.TimeoutError) as exc:
            self._drop(connection)
            if isinstance(exc, rex.TimeoutError):
                raise
            raise rex.TimeoutError("timeout reading from Redis") from exc
        except (_Closed, OSError, rex.ConnectionError) as exc:
            self._drop(connection)
            if not fresh:  # it worked before: closed while idle, most likely
                raise _Closed from exc
            if isinstance(exc, rex.ConnectionError):
                raise
            raise rex.ConnectionError(f"error talking to Redis: {exc}") from exc
        except rex.InvalidResponse:
            self._drop(connection)
            raise

    def _drop(self, connection: t.Any) -> None:
        """Forget this thread's connection after an error (its stream may be
        mid-reply)."""
        connection.disconnect()
        self._local.connection = None
        with self._lock:
            if connection in self._connections:
                self._connections.remove(connection)

    def close(self) -> None:
        """Disconnect every connection this path made (in every thread)."""
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.disconnect()
