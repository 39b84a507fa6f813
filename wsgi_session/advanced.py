"""Store-level operations for administrators and tests (axum's ``advanced``).

Reach it as ``middleware.advanced`` or, inside a view, ``session.advanced``.
Unlike the :class:`~wsgi_session.session.Session` API these calls act on any
session by id, immediately, outside the request's snapshot.
"""

from __future__ import annotations

import dataclasses
import typing as t
from datetime import datetime

from .exceptions import BadToken
from .record import SessionDiff

if t.TYPE_CHECKING:
    from .manager import SessionManager


def _epoch(when: datetime | float) -> float:
    return when.timestamp() if isinstance(when, datetime) else float(when)


class Advanced:
    """Operations on stored sessions by id.

    :param manager: the middleware's engine.
    """

    def __init__(self, manager: SessionManager) -> None:
        self._manager = manager

    def verify(self, token: str, binding: str = "") -> str | None:
        """The id of the live session ``token`` names, or ``None`` if the
        token does not verify or its session is gone or expired."""
        try:
            parsed = self._manager.signer.loads(token, binding)
        except BadToken:
            return None
        return parsed.id if self._manager.load(parsed.id) is not None else None

    def load(self, session_id: str) -> dict[str, t.Any] | None:
        """The decoded data of a live session, or ``None``."""
        record = self._manager.load(session_id)
        if record is None:
            return None
        decode = self._manager.serializer.loads
        return {key: decode(raw) for key, raw in record.values.items()}

    def set_expiry(self, session_id: str, when: datetime | float) -> bool:
        """Move the idle deadline of a stored session to ``when`` (a datetime
        or epoch seconds). Returns whether the session existed."""
        record = self._manager.load(session_id)
        if record is None:
            return False
        diff = SessionDiff(
            session_id, {}, frozenset(), False, _epoch(when), record.absolute, record.longterm, record.created
        )
        return self._manager.apply([diff])[0] is not None

    def write(self, session_id: str) -> bool:
        """Write the session back with its deadline refreshed, as a request
        that changed it would. Returns whether it existed."""
        record = self._manager.load(session_id)
        if record is None:
            return False
        now = self._manager.clock()
        return self.set_expiry(session_id, now + self._manager.lifetime(record.longterm))

    def delete(self, session_id: str) -> None:
        """Remove the session from the store and from this process's memory."""
        self._manager.store.delete([session_id])
        self._manager.forget(session_id)

    def evict(self, session_id: str) -> None:
        """Drop the session from this process's memory only; the next request
        reloads it from the store. (With the in-process ``MemoryStore``,
        memory *is* the store, so this deletes it.)"""
        if self._manager.store.is_local:
            self._manager.store.delete([session_id])
        self._manager.forget(session_id)

    def exists(self, session_id: str) -> bool:
        """Whether a live session has this id."""
        return self._manager.load(session_id) is not None

    def count(self) -> int:
        """How many sessions the store holds."""
        return self._manager.store.count()

    def ids(self, batch_size: int = 1000) -> t.Iterator[str]:
        """Every stored session id."""
        return self._manager.store.iter_ids(batch_size)

    def purge(self) -> int:
        """Purge expired sessions now; returns how many went."""
        return self._manager.purge()

    def clear_store(self) -> None:
        """Delete every session."""
        self._manager.store.clear()

    def stats(self) -> dict[str, int]:
        """The middleware's counters."""
        return self._manager.stats.as_dict()

    def record(self, session_id: str) -> dict[str, t.Any] | None:
        """The stored metadata of a session (deadlines, version), or ``None``."""
        record = self._manager.store.load(session_id)
        if record is None:
            return None
        fields = dataclasses.asdict(record)
        fields.pop("memo", None)
        fields["keys"] = sorted(fields.pop("values"))
        return fields
