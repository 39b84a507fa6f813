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

**Unsafe**: two stores whose prefixes nest (``"s:"`` and ``"s:x:"``) see each
other's sessions in :meth:`RedisStore.count`, :meth:`RedisStore.iter_ids` and
:meth:`RedisStore.clear`. Give each application its own prefix or database.
"""

from __future__ import annotations

import logging
import re
import typing as t

import redis.exceptions as rex

from ..exceptions import BadStoredData
from ..record import MOVED_KEY, SessionRecord
from ._codec import make_record, unavailable_on
from .base import Store

if t.TYPE_CHECKING:
    from ..record import SessionDiff

log = logging.getLogger(__name__)

_VERSION, _CREATED, _EXPIRES, _ABSOLUTE, _LONGTERM = b"\0v", b"\0c", b"\0e", b"\0a", b"\0l"
_META = frozenset((_VERSION, _CREATED, _EXPIRES, _ABSOLUTE, _LONGTERM))
_BAD_RECORD = "WSGI_SESSION_BAD_RECORD"
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


def _lua(name: bytes) -> str:
    """``name`` as a Lua string literal (decimal escapes survive any byte)."""
    return "'" + "".join(f"\\{byte}" for byte in name) + "'"


# The merge, on the server: a line-by-line mirror of record.apply_diff (the
# contract test test_apply_matches_record_apply_diff keeps the two in step).
# ARGV: create, clear, expires, absolute ('' = none), longterm, created,
# number of defaults, number of deletes, then the defaults (field, value),
# the deleted fields and the set (field, value) pairs.
_APPLY_LUA = """
local key = KEYS[1]
local create, clear = ARGV[1] == '1', ARGV[2] == '1'
local expires, absolute, longterm, created = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local ndefaults, ndelete = tonumber(ARGV[7]), tonumber(ARGV[8])
local version = 1
local existed = redis.call('EXISTS', key) == 1
if existed then
  if redis.call('HEXISTS', key, {MOVED}) == 1 then
    return redis.call('HGETALL', key)
  end
  local meta = redis.call('HMGET', key, {V}, {C}, {A})
  local old = tonumber(meta[1])
  if not old or not meta[2] or not tonumber(meta[2])
      or (meta[3] and meta[3] ~= '' and not tonumber(meta[3])) then
    return redis.error_reply({BAD})
  end
  version, created = old + 1, meta[2]
  if meta[3] and meta[3] ~= '' then absolute = meta[3] end
  if clear then redis.call('DEL', key) end
elseif not create then
  return false
end
local i = 9
if not (existed and clear) then
  for _ = 1, ndefaults do
    redis.call('HSETNX', key, ARGV[i], ARGV[i + 1])
    i = i + 2
  end
  for n = i, i + ndelete - 1 do redis.call('HDEL', key, ARGV[n]) end
else
  i = i + 2 * ndefaults
end
i = i + ndelete
while i < #ARGV do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('HSET', key, {V}, version, {C}, created, {E}, expires, {A}, absolute, {L}, longterm)
local deadline = tonumber(expires)
if absolute ~= '' and tonumber(absolute) < deadline then deadline = tonumber(absolute) end
local result = redis.call('HGETALL', key)
redis.call('PEXPIREAT', key, string.format('%.0f', math.ceil(deadline * 1000)))
return result
"""
_APPLY_LUA = _APPLY_LUA.format(
    MOVED=_lua(MOVED_KEY.encode()),
    V=_lua(_VERSION),
    C=_lua(_CREATED),
    E=_lua(_EXPIRES),
    A=_lua(_ABSOLUTE),
    L=_lua(_LONGTERM),
    BAD=_lua(_BAD_RECORD.encode()),
)


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
    def exists(self, name: bytes, /) -> t.Any: ...
    def pipeline(self, transaction: bool, /) -> t.Any: ...
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
    raised as :class:`~wsgi_session.exceptions.StoreUnavailable`, after the
    retries configured on the client (redis-py's default ``retry`` takes a
    few seconds to give up: pass a shorter one to fail fast).
    """

    expires_by_itself = True

    def __init__(self, client: RedisClient, prefix: str = "session:") -> None:
        if client.get_encoder().decode_responses:
            raise ValueError(
                "RedisStore needs a client that returns bytes: create it without decode_responses=True"
            )
        self.client = client
        self.prefix = prefix
        self._prefix = prefix.encode()
        self._pattern = re.sub(rb"([*?\[\]\\])", rb"\\\1", self._prefix) + b"*"
        self._script = client.register_script(_APPLY_LUA)

    def _key(self, session_id: str) -> bytes:
        return self._prefix + session_id.encode()

    def _errors(self) -> t.ContextManager[None]:
        return unavailable_on((rex.RedisError, rex.RedisClusterException), "Redis", _is_outage)

    def setup(self) -> None:
        """Load the merge script into the server (every primary of a cluster),
        so the first write needs no extra round trip."""
        with self._errors():
            self.client.script_load(_APPLY_LUA)

    def load(self, session_id: str) -> SessionRecord | None:
        with self._errors():
            try:
                fields = self.client.hgetall(self._key(session_id))
            except rex.ResponseError as exc:  # WRONGTYPE: not one of our hashes
                raise BadStoredData(f"stored session is not a hash: {exc}") from exc
        return _to_record(session_id, fields.items()) if fields else None

    def version(self, session_id: str) -> int | None:
        with self._errors():
            try:
                raw = self.client.hget(self._key(session_id), _VERSION)
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
        calls = [(self._key(diff.id), _script_args(diff)) for diff in diffs]
        with self._errors():
            replies = self._run(calls, range(len(calls)))
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, rex.NoScriptError)]
            if missing:  # the server restarted or its script cache was flushed
                log.info("loading the session merge script into Redis")
                self.client.script_load(_APPLY_LUA)
                for index, reply in zip(missing, self._run(calls, missing), strict=True):
                    replies[index] = reply
            return [_reply_to_record(diff.id, reply) for diff, reply in zip(diffs, replies, strict=True)]

    def _run(self, calls: list[tuple[bytes, list[bytes]]], indexes: t.Iterable[int]) -> list[t.Any]:
        """Run the script for ``calls[i]``, ``i`` in ``indexes``, in one pipeline."""
        pipe = self.client.pipeline(False)
        for index in indexes:
            key, args = calls[index]
            # Not pipe.evalsha(): redis-py's cluster pipeline blocks that
            # method because it cannot load scripts; apply() does that.
            pipe.execute_command("EVALSHA", self._script.sha, 1, key, *args)
        replies: list[t.Any] = pipe.execute(raise_on_error=False)
        return replies

    def delete(self, session_ids: t.Iterable[str]) -> None:
        self._delete_keys(self._key(session_id) for session_id in session_ids)

    def _delete_keys(self, keys: t.Iterable[bytes]) -> None:
        """``DEL`` each key, in pipelines of a few hundred (one per key keeps
        a cluster pipeline free of cross-slot commands)."""
        with self._errors():
            pipe = self.client.pipeline(False)
            queued = 0
            for key in keys:
                pipe.delete(key)
                queued += 1
                if queued == _DELETE_CHUNK:
                    pipe.execute()
                    queued = 0
            if queued:
                pipe.execute()

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


def _script_args(diff: SessionDiff) -> list[bytes]:
    """The merge script's ``ARGV`` for ``diff`` (see the script's header)."""
    defaults = diff.defaults or {}
    args = [
        b"1" if diff.create else b"0",
        b"1" if diff.clear else b"0",
        _time(diff.expires),
        b"" if diff.absolute is None else _time(diff.absolute),
        b"1" if diff.longterm else b"0",
        _time(diff.created),
        str(len(defaults)).encode(),
        str(len(diff.delete)).encode(),
    ]
    for key, value in defaults.items():
        args += (_field(key), value)
    args.extend(_field(key) for key in diff.delete)
    for key, value in diff.set.items():
        args += (_field(key), value)
    return args


def _field(key: str) -> bytes:
    field = key.encode()
    if field in _META:
        raise ValueError(f"session key {key!r} is reserved")
    return field


def _time(seconds: float) -> bytes:
    return repr(float(seconds)).encode()


def _pairs(flat: list[bytes]) -> t.Iterator[tuple[bytes, bytes]]:
    """``[f1, v1, f2, v2, ...]`` (a script's ``HGETALL``) as pairs."""
    items = iter(flat)
    return zip(items, items, strict=True)


def _to_record(session_id: str, fields: t.Iterable[tuple[bytes, bytes]]) -> SessionRecord:
    meta: dict[bytes, bytes] = {}
    values: dict[str, bytes] = {}
    try:
        for field, value in fields:
            if field in _META:
                meta[field] = value
            else:
                values[field.decode()] = value
    except UnicodeDecodeError as exc:
        raise BadStoredData("stored session has a field name that is not UTF-8") from exc
    if len(meta) != len(_META):
        raise BadStoredData("stored session lacks metadata fields", repr(sorted(_META - meta.keys())))
    return make_record(
        session_id,
        values,
        version=meta[_VERSION],
        created=meta[_CREATED],
        expires=meta[_EXPIRES],
        absolute=meta[_ABSOLUTE],
        longterm=meta[_LONGTERM],
    )


def _reply_to_record(session_id: str, reply: t.Any) -> SessionRecord | None:
    """The record a merge script returned (``None`` for a dropped diff); a
    reply that is an error is raised as what it means to the middleware."""
    if reply is None:
        return None
    if not isinstance(reply, BaseException):
        return _to_record(session_id, _pairs(reply))
    if isinstance(reply, rex.ResponseError) and not _is_outage(reply):
        message = str(reply)
        if _BAD_RECORD in message or "WRONGTYPE" in message:
            raise BadStoredData("stored session is malformed: cannot merge into it") from reply
    raise reply  # an outage becomes StoreUnavailable in the caller's context
