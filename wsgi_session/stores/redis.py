"""Sessions in Redis: one hash per session, merged by a Lua script.

Works with a plain :class:`redis.Redis`, a :class:`redis.cluster.RedisCluster`
and a Sentinel master client (:meth:`redis.sentinel.Sentinel.master_for`),
which you build and configure (address, TLS, timeouts, retries)::

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    store = RedisStore(client, prefix="myapp:session:")

**Layout.** A session is the hash at ``prefix + id``, so all of it lives on
one Cluster slot. Each session key is a hash field holding the value's bytes
as given (already encrypted when encryption at rest is on); the metadata sits
in fields whose names start with NUL, which a session key never does:
``"\\0v"`` version, ``"\\0c"`` created, ``"\\0e"`` idle deadline, ``"\\0a"``
absolute deadline (empty for none), ``"\\0l"`` long-term flag (``0``/``1``).
Times are epoch seconds written with :func:`repr`, so they read back exactly.

**Writes.** Each diff runs as one Lua script, atomically on the server, with
exactly the semantics of :func:`wsgi_session.record.apply_diff`: only the
keys the diff touched change, so concurrent requests that wrote different
keys both survive. A batch of diffs is one pipeline: one round trip. The key
expires (``PEXPIREAT``) at the session's deadline, so Redis deletes expired
sessions by itself; this uses the *Redis server's* clock, so the middleware's
clock must be the wall clock (the default). A session whose deadline has
passed is gone for every caller, including writers that may not create it.

**Announcements** (``coherence="notify"``). Once
:meth:`RedisStore.enable_notifications` is called, every change is
published on the channel ``prefix + "changes"`` after it is written: by the
merge script itself for writes, so the message can never overtake the change,
even on a cluster.

**Unsafe**: two stores whose prefixes nest (``"s:"`` and ``"s:x:"``) see each
other's sessions in :meth:`RedisStore.count`, :meth:`RedisStore.iter_ids` and
:meth:`RedisStore.clear`. Give each application its own prefix or database.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
import typing as t

import redis.exceptions as rex

from ..exceptions import BadStoredData, StoreUnavailable
from ..record import apply_diff
from ._codec import each_or_partly, unavailable_on
from ._redis_layout import BAD_RECORD, MERGE_SCRIPT, VERSION, pairs, record_from_fields, script_args
from ._resp import LeanPath
from .base import Store

if t.TYPE_CHECKING:
    import threading

    from ..record import SessionDiff, SessionRecord

log = logging.getLogger(__name__)

#: Errors that mean "Redis cannot serve now", not "this request is wrong".
_OUTAGES: tuple[type[BaseException], ...] = (
    rex.ConnectionError,  # also BusyLoadingError, MaxConnectionsError, Sentinel's MasterNotFoundError
    rex.TimeoutError,
    rex.ClusterError,  # ClusterDownError, MasterDownError
    rex.RedisClusterException,  # SlotNotCoveredError, "cannot be connected"
    rex.TryAgainError,
    rex.ReadOnlyError,  # a failover in progress
    # "OOM command not allowed": writes fail until memory is freed. The name
    # is looked up because older redis-py type stubs lack it.
    t.cast("type[BaseException]", vars(rex)["OutOfMemoryError"]),
)
_DELETE_CHUNK = 500
_SUBSCRIBE_TIMEOUT = 5.0
#: How often :meth:`RedisStore.listen` looks at its ``stop`` event.
_POLL_SECONDS = 0.25


class RedisClient(t.Protocol):
    """What :class:`RedisStore` uses of a client. :class:`redis.Redis`,
    :class:`redis.cluster.RedisCluster` and Sentinel master clients all have
    it; it is spelled out so that the store does not depend on which redis-py
    type stubs are installed."""

    def get_encoder(self, /) -> t.Any: ...
    def register_script(self, script: str, /) -> t.Any: ...
    def script_load(self, script: str, /) -> t.Any: ...
    def hgetall(self, name: bytes, /) -> t.Any: ...
    def hget(self, name: bytes, key: bytes, /) -> t.Any: ...
    def publish(self, channel: bytes, message: bytes, /) -> t.Any: ...
    def pubsub(self, /) -> t.Any: ...
    def exists(self, name: bytes, /) -> t.Any: ...
    def pipeline(self, transaction: bool, /) -> t.Any: ...
    def execute_command(self, *args: t.Any) -> t.Any: ...
    def scan_iter(self, match: bytes | None = None, count: int | None = None) -> t.Iterator[t.Any]: ...


class RedisStore(Store):
    """Sessions in Redis, Redis Cluster or behind Redis Sentinel.

    :param client: a :class:`redis.Redis` (a Sentinel ``master_for`` client is
        one) or :class:`redis.cluster.RedisCluster` that you configured. It
        must return bytes: ``decode_responses=True`` raises
        :class:`ValueError`, since session values are binary.
    :param prefix: put before each session id to form its Redis key. Default
        ``"session:"``.

    Every call is one round trip: :meth:`load` is an ``HGETALL``,
    :meth:`version` an ``HGET``, and :meth:`apply` one pipeline of script
    calls for the whole batch. Redis errors that mean the server cannot be
    reached (connection, timeout, cluster down, failover in progress) are
    raised as :class:`~wsgi_session.exceptions.StoreUnavailable`.

    Those three calls, the ones on a request's path, bypass redis-py's
    command machinery on a plain or Sentinel client (:attr:`lean`; see
    :mod:`wsgi_session.stores._resp`): a third of the CPU per round trip.
    They use the client's connection settings but not its ``retry`` policy:
    a connection is checked for a close before a write after a second idle,
    reads that find it closed are sent again, a write never is, and any
    other connection error is an outage at once (answered by the outage
    policy; background writes are retried by the flusher). The other
    calls, and every call on a cluster, go through redis-py and its
    ``retry`` (redis-py's default takes a few seconds to give up: pass a
    shorter one to fail fast).
    """

    expires_by_itself = True
    supports_notifications = True

    def __init__(self, client: RedisClient, prefix: str = "session:") -> None:
        if client.get_encoder().decode_responses:
            raise ValueError(
                "RedisStore needs a client that returns bytes: create it without decode_responses=True"
            )
        self.client = client
        self.prefix = prefix
        self._prefix = prefix.encode()
        self._pattern = re.sub(rb"([*?\[\]\\])", rb"\\\1", self._prefix) + b"*"
        self._script = client.register_script(MERGE_SCRIPT)
        self._sha = self._script.sha.encode()
        #: The request path's commands bypass redis-py's machinery where that
        #: is equivalent (see :mod:`wsgi_session.stores._resp`); else ``None``.
        self.lean = LeanPath.for_client(client)
        #: Where changes are announced (``coherence="notify"``), and by whom.
        self.channel = self._prefix + b"changes"
        self._origin = b""
        self._guard = unavailable_on((rex.RedisError, rex.RedisClusterException), "Redis", _is_outage)

    def _key(self, session_id: str) -> bytes:
        return self._prefix + session_id.encode()

    def _errors(self) -> unavailable_on:
        return self._guard

    def setup(self) -> None:
        """Load the merge script into the server (every primary of a cluster),
        so the first write needs no extra round trip."""
        with self._errors():
            self.client.script_load(MERGE_SCRIPT)

    def load(self, session_id: str) -> SessionRecord | None:
        with self._errors():
            key = self._key(session_id)
            try:
                if self.lean is not None:
                    fields = list(pairs(self._lean_one(b"HGETALL", key)))
                else:
                    fields = list(self.client.hgetall(key).items())
            except rex.ResponseError as exc:  # WRONGTYPE: not one of our hashes
                raise BadStoredData(f"stored session is not a hash: {exc}") from exc
        return record_from_fields(session_id, fields) if fields else None

    def version(self, session_id: str) -> int | None:
        with self._errors():
            try:
                if self.lean is not None:
                    raw = self._lean_one(b"HGET", self._key(session_id), VERSION)
                else:
                    raw = self.client.hget(self._key(session_id), VERSION)
            except rex.ResponseError as exc:
                raise BadStoredData(f"stored session is not a hash: {exc}") from exc
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError as exc:
            raise BadStoredData("stored session has an invalid version", raw) from exc

    def apply(self, diffs: t.Sequence[SessionDiff]) -> list[SessionRecord | None]:
        if not diffs:
            return []
        announce = (self.channel, self._origin) if self._origin else None
        calls = [(self._key(diff.id), script_args(diff, announce)) for diff in diffs]
        with self._errors():
            replies = self._run(calls, range(len(calls)))
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, rex.NoScriptError)]
            if missing:  # the server restarted or its script cache was flushed
                log.info("loading the session merge script into Redis")
                self.client.script_load(MERGE_SCRIPT)
                for index, reply in zip(missing, self._run(calls, missing), strict=True):
                    replies[index] = reply
            if len(diffs) == 1:  # a request's own commit
                return [_reply_to_record((diffs[0], replies[0]))]
            return each_or_partly(list(zip(diffs, replies, strict=True)), _reply_to_record)

    def _run(self, calls: list[tuple[bytes, list[bytes]]], indexes: t.Iterable[int]) -> list[t.Any]:
        """Run the script for ``calls[i]``, ``i`` in ``indexes``, in one pipeline
        (a lone call skips the pipeline machinery: same round trip, less Python)."""
        indexes = list(indexes)
        if self.lean is not None:
            sha = self._sha
            return self.lean.call([(b"EVALSHA", sha, b"1", calls[i][0], *calls[i][1]) for i in indexes])
        if len(indexes) == 1:
            key, args = calls[indexes[0]]
            try:
                return [self.client.execute_command("EVALSHA", self._script.sha, 1, key, *args)]
            except rex.ResponseError as exc:  # NoScriptError included: the caller reloads
                return [exc]
        pipe = self.client.pipeline(False)
        for index in indexes:
            key, args = calls[index]
            # Not pipe.evalsha(): redis-py's cluster pipeline blocks that
            # method because it cannot load scripts; apply() does that.
            pipe.execute_command("EVALSHA", self._script.sha, 1, key, *args)
        replies: list[t.Any] = pipe.execute(raise_on_error=False)
        return replies

    def _lean_one(self, *command: bytes) -> t.Any:
        """One command on the lean path; an error reply is raised."""
        assert self.lean is not None
        reply = self.lean.call([command])[0]
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def close(self) -> None:
        """Disconnect the lean path's connections (the client is yours to close)."""
        if self.lean is not None:
            self.lean.close()

    def delete(self, session_ids: t.Iterable[str]) -> None:
        self._delete_keys(self._key(session_id) for session_id in session_ids)

    def _delete_keys(self, keys: t.Iterable[bytes]) -> None:
        """``DEL`` each key, in pipelines of a few hundred (one per key keeps
        a cluster pipeline free of cross-slot commands)."""
        keys = iter(keys)
        with self._errors():
            while chunk := list(itertools.islice(keys, _DELETE_CHUNK)):
                pipe = self.client.pipeline(False)
                for key in chunk:
                    pipe.delete(key)
                pipe.execute()
                self._announce(chunk)

    def _announce(self, keys: list[bytes]) -> None:
        """Tell other processes these keys changed, once the change is done
        (a separate round trip: in a cluster a pipeline gives no order
        between nodes)."""
        if self._origin:
            start = len(self._prefix)
            self.client.publish(self.channel, b" ".join([self._origin, *(k[start:] for k in keys)]))

    def enable_notifications(self, origin: str) -> None:
        """Announce changed ids on the pub/sub channel :attr:`channel`, as
        ``"<origin> <id> [<id> ...]"``: the merge script publishes after its
        write, in the same round trip; :meth:`delete` and :meth:`clear` once
        their keys are gone."""
        self._origin = origin.encode()

    def listen(
        self,
        on_message: t.Callable[[str, str], None],
        on_reset: t.Callable[[], None],
        stop: threading.Event,
    ) -> None:
        """Subscribe to :attr:`channel` and pass each announced id to
        ``on_message(origin, id)`` until ``stop`` is set. Raises
        :class:`~wsgi_session.exceptions.StoreUnavailable` when the
        subscription breaks."""
        with self._errors():
            pubsub = self.client.pubsub()
            try:
                pubsub.subscribe(self.channel)
                deadline = time.monotonic() + _SUBSCRIBE_TIMEOUT
                while (reply := pubsub.get_message(timeout=0.1)) is None or reply["type"] != "subscribe":
                    if time.monotonic() > deadline:
                        raise rex.TimeoutError("no answer to SUBSCRIBE")
                on_reset()
                while not stop.is_set():
                    message = pubsub.get_message(ignore_subscribe_messages=True, timeout=_POLL_SECONDS)
                    if message is not None and message["type"] == "message":
                        origin, *ids = message["data"].decode().split(" ")
                        for session_id in ids:
                            on_message(origin, session_id)
            finally:
                pubsub.close()

    def exists(self, session_id: str) -> bool:
        with self._errors():
            return bool(self.client.exists(self._key(session_id)))

    def count(self) -> int:
        """How many sessions have this prefix: a full ``SCAN`` (of every
        primary on a cluster), so meant for admin tools, not requests."""
        return len(set(self._scan(1000)))

    def iter_ids(self, batch_size: int = 1000) -> t.Iterator[str]:
        """Every stored id, by ``SCAN ... COUNT batch_size``. As with any
        ``SCAN``, an id may be yielded twice while Redis resizes its tables."""
        start = len(self._prefix)
        for key in self._scan(batch_size):
            yield key[start:].decode()

    def _scan(self, batch_size: int) -> t.Iterator[bytes]:
        with self._errors():
            yield from self.client.scan_iter(match=self._pattern, count=batch_size)

    def purge_expired(self, now: float, limit: int = 1000) -> list[str]:
        """Nothing to do: every key expires at its session's deadline and
        Redis deletes it by itself. Always returns ``[]``."""
        return []

    def clear(self) -> None:
        """Delete every key with this store's prefix (``SCAN`` + ``DEL``;
        other keys in the database are left alone)."""
        self._delete_keys(self._scan(_DELETE_CHUNK))


def _is_outage(exc: BaseException) -> bool:
    """Whether a redis-py error means Redis cannot serve now: unreachable,
    timing out, a cluster without quorum, a failover, or out of memory."""
    return isinstance(exc, _OUTAGES)


def _reply_to_record(written: tuple[SessionDiff, t.Any]) -> SessionRecord | None:
    """The record a merge script returned (``None`` for a dropped diff); a
    reply that is an error is raised as what it means to the middleware.

    A bare version number means the writer knows the result without the
    hash being shipped back: the diff's span (1 for one request's diff), the
    diff created the session (the record is the diff alone); a later one,
    the store held exactly the writer's copy (``diff.base``, whose version is
    at least 1), and the result is that copy with the diff merged in."""
    diff, reply = written
    if reply is None:
        return None
    if isinstance(reply, int):
        created = reply == diff.span
        merged = apply_diff(None if created else diff.base, diff) if created or diff.base else None
        if merged is not None and merged.version == reply:
            return merged
        raise BadStoredData("the merge script's version does not follow the writer's copy")
    if not isinstance(reply, BaseException):
        return record_from_fields(diff.id, pairs(reply))
    if isinstance(reply, rex.ResponseError) and not _is_outage(reply):
        message = str(reply)
        if BAD_RECORD in message or "WRONGTYPE" in message:
            raise BadStoredData("stored session is malformed: cannot merge into it") from reply
    if _is_outage(reply):  # for this write alone, maybe (Redis out of memory): retry it
        raise StoreUnavailable(f"Redis is unavailable: {reply}") from reply
    raise reply
