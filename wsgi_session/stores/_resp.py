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
table; connection errors and timeouts are raised as redis-py raises them.
Nothing that may have run is sent twice: a connection idle for a second is
first checked for a close (Redis restarted, or dropped an idle client) and
replaced; reads (``HGET``, ``HGETALL``) that find their connection closed
are sent again on a new one; commands a server answered ``READONLY`` (a
Sentinel failover demoted it; they did nothing) are sent again, alone, on a
new connection. Any other failure or interruption closes the thread's
connection, so no reply is ever read by the wrong call.

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
import select
import socket
import threading
import time
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
#: A connection idle this long (seconds) is checked for a close or stray
#: bytes from the server before it is written to.
_IDLE_CHECK = 1.0
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
    commands can answer (null, boolean, a map as its flat key-value list);
    push frames, which only come at the top level, are :class:`_Reader`'s."""
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
    if kind in (42, 37, 126):  # * array, % map (RESP3: keys and values, flat), ~ set
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
        # Ask for as much as is buffered so far: a large reply takes fewer reads (and copies).
        chunk = self.sock.recv(max(_CHUNK, len(self.data) - self.position))
        if not chunk:
            raise _Closed("connection closed by the server")
        self.received += len(chunk)
        self.data = self.data[self.position :] + chunk
        self.position = 0

    def reply(self) -> t.Any:
        """The next reply (push frames, out-of-band server notices, are skipped)."""
        while True:
            data, position = self.data, self.position
            end = data.find(b"\r\n", position)
            if end < 0:
                self._fill()
                continue
            kind = data[position]
            if kind in (42, 37, 62):  # * array, % map, > push: element by element
                count = int(data[position + 1 : end]) * (2 if kind == 37 else 1)
                self.position = end + 2
                items = None if count < 0 else self._elements(count)
                if kind == 62:
                    continue
                return items
            value, after = parse(data, position)
            if value is _INCOMPLETE:
                self._fill()
                continue
            self.position = after
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
    try:
        return [reader.reply()] if count == 1 else [reader.reply() for _ in range(count)]
    except ValueError as exc:  # a length that is not a number: the stream is garbage
        raise rex.InvalidResponse(f"unreadable reply from Redis: {exc}") from exc


class _Held:
    """A thread's connection. When the thread ends, its thread-local storage
    goes and this with it; a finalizer then closes the connection."""

    __slots__ = ("__weakref__", "connection", "generation", "used")

    def __init__(self, connection: t.Any) -> None:
        self.connection = connection
        self.generation = _generation[0]
        self.used = time.monotonic()


def _close(live: dict[int, t.Any], key: int, connection: t.Any) -> None:
    """Forget and disconnect one connection (a finalizer: holds no store)."""
    live.pop(key, None)
    connection.disconnect()


def _has_news(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: the server closed
    it, or sent what no command asked for. Either way it is not used."""
    try:
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


_READS = (b"HGET", b"HGETALL")


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

    def call(self, commands: t.Sequence[t.Sequence[bytes]], read_only: bool = False) -> list[t.Any]:
        """Send ``commands`` in one write (a pipeline when several) and return
        their replies in order, error replies as exception instances.

        Nothing that may have run is sent twice. Reads (``HGET``,
        ``HGETALL``, or any commands the caller says are ``read_only``, such
        as a script that only reads) are sent again on a new connection when
        the thread's connection turns out to be closed; commands a server answered
        ``READONLY`` (a failover demoted it: they did nothing) are sent again,
        alone, on a new connection, which asks Sentinel for the master.

        :raises redis.exceptions.ConnectionError: Redis cannot be reached, or
            the connection broke before the replies came back.
        :raises redis.exceptions.TimeoutError: no reply within the socket timeout.
        """
        packed = pack(commands[0]) if len(commands) == 1 else b"".join([pack(c) for c in commands])
        try:
            replies = self._round_trip(packed, len(commands), fresh=False)
        except _Closed as closed:
            if not (read_only or all(command[0] in _READS for command in commands)):  # a write may have run
                raise rex.ConnectionError("the connection to Redis closed before the reply") from closed
            return self._round_trip(packed, len(commands), fresh=True)
        for reply in replies:
            if isinstance(reply, rex.ReadOnlyError):
                return self._resend_demoted(commands, replies)
        return replies

    def _resend_demoted(self, commands: t.Sequence[t.Sequence[bytes]], replies: list[t.Any]) -> list[t.Any]:
        """Send the commands answered ``READONLY`` again on a new connection."""
        self._drop()
        demoted = [index for index, reply in enumerate(replies) if isinstance(reply, rex.ReadOnlyError)]
        again = b"".join([pack(commands[index]) for index in demoted])
        for index, reply in zip(demoted, self._round_trip(again, len(demoted), fresh=True), strict=True):
            replies[index] = reply
        return replies

    def _round_trip(self, packed: bytes, count: int, fresh: bool) -> list[t.Any]:
        held: _Held | None = getattr(self._local, "held", None)
        now = time.monotonic()
        if (
            fresh
            or held is None
            or held.connection._sock is None
            or held.generation != _generation[0]
            or (now - held.used > _IDLE_CHECK and _has_news(held.connection._sock))
        ):
            held = self._connect()
            fresh = True
        connection = held.connection
        reader = _Reader(connection._sock)
        try:
            connection.send_packed_command([packed], check_health=False)
            replies = _receive(reader, count)
        except (TimeoutError, rex.TimeoutError) as exc:
            self._drop()
            if isinstance(exc, rex.TimeoutError):
                raise
            raise rex.TimeoutError("timeout reading from Redis") from exc
        except (_Closed, OSError, rex.ConnectionError, rex.InvalidResponse) as exc:
            self._drop()
            if not fresh and reader.received == 0:  # closed under us: the caller decides
                raise _Closed from exc
            if isinstance(exc, rex.ConnectionError):
                raise
            raise rex.ConnectionError(f"error talking to Redis: {exc}") from exc
        except BaseException:
            self._drop()  # interrupted mid-reply: the rest must not be read as the next reply
            raise
        if reader.position != len(reader.data):
            self._drop()  # bytes no command asked for (a notice): the replies stand, the stream does not
        else:
            held.used = now
        return replies

    def _connect(self) -> _Held:
        pool = self._pool
        connection = pool.connection_class(**pool.connection_kwargs)
        connection.connect()  # as the pool does: a Sentinel connection asks for the master here
        held = self._local.held = _Held(connection)
        self._live[id(held)] = connection
        weakref.finalize(held, _close, self._live, id(held), connection)
        return held

    def _drop(self) -> None:
        """Close this thread's connection after an error (its stream may be
        mid-reply); the next call makes a new one."""
        held = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None:
            _close(self._live, id(held), held.connection)

    def close(self) -> None:
        """Disconnect every connection this path made (in every thread)."""
        while True:
            try:
                _key, connection = self._live.popitem()
            except KeyError:  # empty (a finalizer may have taken the last one)
                return
            connection.disconnect()
