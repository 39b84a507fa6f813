"""The Redis hash layout of a session and the script that merges into it.

Private to :mod:`wsgi_session.stores.redis` (see its docstring for the
layout): the field names, the Lua merge script, its arguments, and the
decoding of a hash back into a :class:`~wsgi_session.record.SessionRecord`.
"""

from __future__ import annotations

import typing as t

from ..exceptions import BadStoredData
from ..record import MOVED_KEY, SessionRecord
from ._codec import make_record

if t.TYPE_CHECKING:
    from ..record import SessionDiff

#: The metadata fields; a session key never starts with NUL.
VERSION, CREATED, EXPIRES, ABSOLUTE, LONGTERM = b"\0v", b"\0c", b"\0e", b"\0a", b"\0l"
META = frozenset((VERSION, CREATED, EXPIRES, ABSOLUTE, LONGTERM))
#: The error the script answers for a hash it cannot merge into.
BAD_RECORD = "WSGI_SESSION_BAD_RECORD"


def _lua(name: bytes) -> str:
    """``name`` as a Lua string literal (decimal escapes survive any byte)."""
    return "'" + "".join(f"\\{byte}" for byte in name) + "'"


# The merge, on the server: a line-by-line mirror of record.apply_diff (the
# contract test test_apply_matches_record_apply_diff keeps the two in step).
# ARGV: create, clear, expires, absolute ('' = none), longterm, created,
# number of defaults, number of deletes, the channel to announce the change
# on ('' = none) and the message, the version the writer's copy has ('' =
# none), how many writes the diff stands for (the version moves on by as
# much), then the defaults (field, value), the deleted fields and the set
# (field, value) pairs. When the stored version equals the writer's, the
# writer can merge its copy itself, and when the diff created the hash the
# writer has all of it: then the script answers just the new version instead
# of the whole hash.
MERGE_SCRIPT = """
local key = KEYS[1]
local create, clear = ARGV[1] == '1', ARGV[2] == '1'
local expires, absolute, longterm, created = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local ndefaults, ndelete = tonumber(ARGV[7]), tonumber(ARGV[8])
local span = tonumber(ARGV[12])
local version = span
local same = false
-- The common write: the hash is still the writer's copy (same version, its
-- metadata intact, not a renewed session's forwarding stub, which a copy
-- one write ahead of the store can meet at its own version), so it needs
-- no reply: write the changes in one HSET.
if ARGV[11] ~= '' and not clear and ndefaults == 0 and #ARGV < 4000 then
  local meta = redis.call('HMGET', key, {V}, {C}, {A}, {MOVED})
  if meta[1] == ARGV[11] and meta[2] and tonumber(meta[2])
      and meta[3] and (meta[3] == '' or tonumber(meta[3])) and not meta[4] then
    version = tonumber(meta[1]) + span
    if ndelete > 0 then redis.call('HDEL', key, unpack(ARGV, 13, 12 + ndelete)) end
    redis.call('HSET', key, {V}, version, {E}, expires, {L}, longterm, unpack(ARGV, 13 + ndelete))
    local deadline = tonumber(expires)
    if absolute ~= '' and tonumber(absolute) < deadline then deadline = tonumber(absolute) end
    redis.call('PEXPIREAT', key, string.format('%.0f', math.ceil(deadline * 1000)))
    if ARGV[9] ~= '' then redis.call('PUBLISH', ARGV[9], ARGV[10]) end
    return version
  end
end
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
  version, created = old + span, meta[2]
  same = ARGV[11] ~= '' and tonumber(ARGV[11]) == old
  if meta[3] and meta[3] ~= '' then absolute = meta[3] end
  if clear then redis.call('DEL', key) end
elseif not create then
  return false
end
local i = 13
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
local result = version
if existed and not same then result = redis.call('HGETALL', key) end
redis.call('PEXPIREAT', key, string.format('%.0f', math.ceil(deadline * 1000)))
if ARGV[9] ~= '' then redis.call('PUBLISH', ARGV[9], ARGV[10]) end
return result
"""
MERGE_SCRIPT = MERGE_SCRIPT.format(
    MOVED=_lua(MOVED_KEY.encode()),
    V=_lua(VERSION),
    C=_lua(CREATED),
    E=_lua(EXPIRES),
    A=_lua(ABSOLUTE),
    L=_lua(LONGTERM),
    BAD=_lua(BAD_RECORD.encode()),
)


# The validation of a cached copy, one round trip whether it is current or
# not. ARGV[1] is the copy's version as stored (a decimal integer). Answers 1
# when the stored version is the same, else the whole hash (``HGETALL``:
# empty when the key is gone, and a hash without its version field is
# shipped too, for record_from_fields to refuse).
CHECK_SCRIPT = f"""
if redis.call('HGET', KEYS[1], {_lua(VERSION)}) == ARGV[1] then return 1 end
return redis.call('HGETALL', KEYS[1])
"""


def script_args(diff: SessionDiff, announce: tuple[bytes, bytes] | None) -> list[bytes]:
    """The merge script's ``ARGV`` for ``diff`` (see the script's header);
    ``announce`` is the channel and origin to publish the change with."""
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
        b"" if announce is None else announce[0],
        b"" if announce is None else announce[1] + b" " + diff.id.encode(),
        _base_version(diff),
        str(diff.span).encode(),
    ]
    for key, value in defaults.items():
        args += (_field(key), value)
    args.extend(_field(key) for key in diff.delete)
    for key, value in diff.set.items():
        args += (_field(key), value)
    return args


def _base_version(diff: SessionDiff) -> bytes:
    """The version of the writer's copy, if it can merge the diff into it
    (its absolute deadline is the diff's, as the script's fast path assumes)."""
    base = diff.base
    if (
        base is None
        or base.id != diff.id
        or diff.create
        or MOVED_KEY in base.values
        or base.absolute != diff.absolute
    ):
        return b""
    return str(base.version).encode()


def _field(key: str) -> bytes:
    field = key.encode()
    if field in META:
        raise ValueError(f"session key {key!r} is reserved")
    return field


def _time(seconds: float) -> bytes:
    return repr(float(seconds)).encode()


def pairs(flat: list[bytes]) -> t.Iterator[tuple[bytes, bytes]]:
    """``[f1, v1, f2, v2, ...]`` (a script's ``HGETALL``) as pairs."""
    items = iter(flat)
    return zip(items, items, strict=True)


def record_from_fields(session_id: str, fields: t.Iterable[tuple[bytes, bytes]]) -> SessionRecord:
    """A session's hash fields as a record: the metadata fields become the
    record's attributes, every other field a value. A field missing or
    unreadable raises :class:`~wsgi_session.exceptions.BadStoredData`."""
    meta: dict[bytes, bytes] = {}
    values: dict[str, bytes] = {}
    try:
        for field, value in fields:
            if field in META:
                meta[field] = value
            else:
                values[field.decode()] = value
    except UnicodeDecodeError as exc:
        raise BadStoredData("stored session has a field name that is not UTF-8") from exc
    if len(meta) != len(META):
        raise BadStoredData("stored session lacks metadata fields", repr(sorted(META - meta.keys())))
    return make_record(
        session_id,
        values,
        version=meta[VERSION],
        created=meta[CREATED],
        expires=meta[EXPIRES],
        absolute=meta[ABSOLUTE],
        longterm=meta[LONGTERM],
    )
