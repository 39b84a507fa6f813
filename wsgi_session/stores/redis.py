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

from ..exceptions import BadStoredData
from ._codec import each_or_partly, unavailable_on
from ._redis_layout import CHECK_SCRIPT, MERGE_SCRIPT, VERSION, pairs, script_args
from ._redis_replies import NOT_A_HASH, is_outage, record_from_hash, reply_to_record
from ._resp import LeanPath
from .base import UNCHANGED, Store, Unchanged

if t.TYPE_CHECKING:
    import threading

    from ..record import SessionDiff, SessionRecord

log = logging.getLogger(__name__)

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
    :meth:`version` an ``HGET``, :meth:`load_if_changed` a script that
    answers the hash only if its version moved on, and :meth:`apply` one
    pipeline of script calls for the whole batch. Redis errors that mean the server cannot be
    reached (connection, timeout, cluster down, failover in progress) are
    raised as :class:`~wsgi_session.exceptions.StoreUnavailable`.

    Those four calls, the ones on a request's path, bypass redis-py's
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
        self._check_script = client.register_script(CHECK_SCRIPT)
        self._check_sha = self._check_script.sha.encode()
        #: The request path's commands bypass redis-py's machinery where that
        #: is equivalent (see :mod:`wsgi_session.stores._resp`); else ``None``.
        self.lean = LeanPath.for_client(client)
        #: Where changes are announced (``coherence="notify"``), and by whom.
        self.channel = self._prefix + b"changes"
        self._origin = b""
        self._guard = unavailable_on((rex.RedisError, rex.RedisClusterException), "Redis", is_outage)

    def _key(self, session_id: str) -> bytes:
        return self._prefix + session_id.encode()

    def _errors(self) -> unavailable_on:
        return self._guard

    def setup(self) -> None:
        """Load the scripts into the server (every primary of a cluster), so
        the first validation and write need no extra round trip."""
        with self._errors():
            self.client.script_load(MERGE_SCRIPT)
            self.client.script_load(CHECK_SCRIPT)

    def load(self, session_id: str) -> SessionRecord | None:
        key = self._key(session_id)
        with self._errors(), NOT_A_HASH:
            if self.lean is not None:
                return record_from_hash(session_id, pairs(self._lean_one(b"HGETALL", key)))
            return record_from_hash(session_id, self.client.hgetall(key).items())

    def version(self, session_id: str) -> int | None:
        key = self._key(session_id)
        with self._errors(), NOT_A_HASH:
            raw = (
                self._lean_one(b"HGET", key, VERSION)
                if self.lean is not None
                else self.client.hget(key, VERSION)
            )
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError as exc:
            raise BadStoredData("stored session has an invalid version", raw) from exc

    def load_if_changed(self, session_id: str, version: int) -> SessionRecord | Unchanged | None:
        """One round trip: a script that answers the hash only if its version
        is not ``version``. It only reads, so Redis runs it even when out of
        memory, as it runs ``HGET``."""
        key, args = self._key(session_id), (str(version).encode(),)
        with self._errors(), NOT_A_HASH:
            if self.lean is None:
                reply = self._check_script(keys=[key], args=args)  # redis-py reloads a lost script
            else:
                reply = self._check(key, *args)
        return UNCHANGED if isinstance(reply, int) else record_from_hash(session_id, pairs(reply))

    def _check(self, *key_and_args: bytes) -> t.Any:
        """The check script's reply on the lean path (loaded into the server
        first if it lost it: restarted, or ``SCRIPT FLUSH``)."""
        command = (b"EVALSHA", self._check_sha, b"1", *key_and_args)
        try:
            return self._lean_one(*command, read_only=True)
        except rex.NoScriptError:
            log.info("loading the session check script into Redis")
            self.client.script_load(CHECK_SCRIPT)
            return self._lean_one(*command, read_only=True)

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
                return [reply_to_record((diffs[0], replies[0]))]
            return each_or_partly(list(zip(diffs, replies, strict=True)), reply_to_record)

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

    def _lean_one(self, *command: bytes, read_only: bool = False) -> t.Any:
        """One command on the lean path; an error reply is raised."""
        assert self.lean is not None
        reply = self.lean.call([command], read_only)[0]
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
