"""What Redis's replies and errors mean to the session store.

Private to :mod:`wsgi_session.stores.redis`: which errors are outages (the
outage policy answers them) and which mean a stored session is not one the
store can read or merge into (:class:`~wsgi_session.exceptions.BadStoredData`),
and the records that hashes and merge-script replies stand for.

Error replies fall in three kinds. *About the stored session*: ``WRONGTYPE``
(the key is not a hash) and the merge script's complaint about a malformed
hash; the visitor gets a new session and the key is left alone. *Redis
refusing to serve*, for now or until someone acts, with nothing wrong with
the session or the command: besides the outages of connection and cluster,
``BUSY`` (another client's script is running), ``NOPERM`` (an ACL),
``MISCONF`` (writes stopped after a failed save), ``NOREPLICAS``, and a
script lost again right after it was loaded; the outage policy answers, and
background writes are retried. *Anything else* (``ERR ...``: a command the
server finds malformed, a script that fails) is a bug, here or in the
server, and is raised as redis-py's error, to be seen.
"""

from __future__ import annotations

import typing as t

import redis.exceptions as rex

from ..exceptions import BadStoredData, StoreUnavailable
from ..record import apply_diff
from ._redis_layout import BAD_RECORD, pairs, record_from_fields

if t.TYPE_CHECKING:
    from ..record import SessionDiff, SessionRecord

#: "OOM command not allowed": writes, scripts included, fail until memory is
#: freed. Looked up by name because older redis-py type stubs lack it.
OUT_OF_MEMORY = t.cast("type[BaseException]", vars(rex)["OutOfMemoryError"])
#: Errors that mean "Redis cannot serve now", not "this request is wrong".
OUTAGES: tuple[type[BaseException], ...] = (
    rex.ConnectionError,  # also BusyLoadingError, MaxConnectionsError, Sentinel's MasterNotFoundError
    rex.TimeoutError,
    rex.ClusterError,  # ClusterDownError, MasterDownError
    rex.RedisClusterException,  # SlotNotCoveredError, "cannot be connected"
    rex.TryAgainError,
    rex.ReadOnlyError,  # a failover in progress
    OUT_OF_MEMORY,
    rex.NoPermissionError,  # NOPERM: the client's ACL lacks a command we send
    rex.NoScriptError,  # NOSCRIPT right after the script was loaded again
)
#: Error replies of refusals that redis-py has no class for (see the module's docstring).
REFUSALS = ("BUSY ", "MISCONF ", "NOREPLICAS ")


class _NotOurHash:
    """Raises a read's ``WRONGTYPE`` error reply (the key is not one of our
    hashes) as :class:`BadStoredData`; other errors pass through."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: t.Any
    ) -> t.Literal[False]:
        if exc is not None and blames_the_stored_session(exc):
            raise BadStoredData(f"stored session is not a hash: {exc}") from exc
        return False


NOT_A_HASH = _NotOurHash()


def record_from_hash(session_id: str, fields: t.Iterable[tuple[bytes, bytes]]) -> SessionRecord | None:
    """A session's hash fields as its record; ``None`` for no fields (no key)."""
    fields = list(fields)
    return record_from_fields(session_id, fields) if fields else None


def blames_the_stored_session(exc: BaseException) -> bool:
    """Whether an error reply is about the stored session itself: the key is
    not a hash (``WRONGTYPE``), or the merge script found the hash malformed."""
    if not isinstance(exc, rex.ResponseError) or is_outage(exc):
        return False
    message = str(exc)
    return "WRONGTYPE" in message or BAD_RECORD in message


def is_outage(exc: BaseException) -> bool:
    """Whether a redis-py error means Redis cannot serve now: unreachable,
    timing out, a cluster without quorum, a failover, out of memory, or an
    error reply that refuses service (``BUSY``, ``NOPERM``, ...: see the
    module's docstring)."""
    if isinstance(exc, OUTAGES):
        return True
    return isinstance(exc, rex.ResponseError) and str(exc).startswith(REFUSALS)


def reply_to_record(written: tuple[SessionDiff, t.Any]) -> SessionRecord | None:
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
    if blames_the_stored_session(reply):
        raise BadStoredData("stored session is malformed: cannot merge into it") from reply
    if is_outage(reply):  # for this write alone, maybe (Redis out of memory): retry it
        raise StoreUnavailable(f"Redis is unavailable: {reply}") from reply
    raise reply
