"""Deciding what the end of a request must do.

When the view is done, :class:`Finisher` looks at what the request did to its
:class:`~wsgi_session.session.Session` and produces an :class:`Outcome`: the
diffs to commit, ids to delete, a renewal to perform, and whether the client
needs a new token (``Set-Cookie``) or must drop its token. The rules:

* a session that was never written is not created (no cookie, no row);
* an existing session is written when data changed, when its long-term or
  consent flag changed, on ``update_now()``/``always_save``, or when its
  sliding expiry is due for a refresh (at most every ``touch_interval``);
* a token is sent only when it must change: new, renewed, flags changed, or a
  persistent cookie past half of its ``Max-Age``;
* a rejected token (bad signature, unknown or expired id) is cleared if the
  request did not create a session in its place.
"""

from __future__ import annotations

import dataclasses
import logging
import typing as t

from .record import SessionDiff
from .session import _NO_DELETES
from .signing import Token

if t.TYPE_CHECKING:
    from .manager import SessionManager
    from .record import SessionRecord
    from .session import Session

log = logging.getLogger("wsgi_session")


class Outcome:
    """What the end of a request must do (a plain slotted class: one is built
    for every request that writes, so it avoids dataclass factories)."""

    __slots__ = ("clear", "delete", "diffs", "max_age", "renew", "send")

    def __init__(self) -> None:
        #: Diffs to apply.
        self.diffs: list[SessionDiff] = []
        #: Ids to delete.
        self.delete: list[str] = []
        #: ``(old id, creating diff of the new id)`` for a renewal.
        self.renew: tuple[str, SessionDiff] | None = None
        #: A new token for the client, with its cookie ``Max-Age``.
        self.send: str | None = None
        self.max_age: int | None = None
        #: Make the client drop its token.
        self.clear = False


#: The shared outcome of a request that used its session but has nothing to
#: write or send (never mutated).
NOTHING = Outcome()


class Finisher:
    """Turns a finished request's session into an :class:`Outcome`.

    :param manager: supplies the clock, ids, signer, binding and counters.
    """

    def __init__(self, manager: SessionManager) -> None:
        config = manager.config
        self._manager = manager
        self._opt_in = config.mode == "opt_in"
        self._absolute = config.absolute_lifetime.total_seconds() if config.absolute_lifetime else None
        self._touch = config.touch_interval.total_seconds()
        self._cookie_persistent = config.cookie_persistent
        self._lifetime = config.lifetime.total_seconds()
        self._longterm_lifetime = config.longterm_lifetime.total_seconds()
        self._always_save = config.always_save

    def finish(self, session: Session, late: bool = False) -> Outcome | None:
        """Turn what ``session`` did into an :class:`Outcome`; ``None`` if the
        request never used its session. ``late`` means the headers are gone:
        nothing that needs a new token can happen any more."""
        if not session._loaded:
            return None
        if session._unsaved:
            return NOTHING
        m = self._manager
        now = m.clock()
        record = session._record
        # Only read immutable values, or nothing: no call to compare encodings.
        untouched = not (session._decoded or session._deleted or session._cleared)
        changes = None if untouched else session._changes()
        if (
            record is not None
            and not (changes or session._renew or session._meta_changed or session._force)
            and not (self._always_save or session._destroyed)
            and now - record.expires + (self._longterm_lifetime if record.longterm else self._lifetime)
            < self._touch
            # Only a persistent cookie is ever refreshed.
            and (
                late
                or not (record.longterm or self._cookie_persistent)
                or not self._refresh_due(session, record, now)
            )
        ):
            return NOTHING  # the read-only request: nothing to write or send
        out = Outcome()
        changed, deleted, cleared = changes if changes is not None else ({}, _NO_DELETES, False)
        if session._destroyed:
            if record is not None:
                out.delete.append(record.id)
                m.stats.bump("destroyed")
            out.clear = session._presented and not late
            return out
        longterm = session._longterm
        # Opt-in mode: without consent the session stays in process memory.
        local = self._opt_in and not session._consent
        expires = now + (self._longterm_lifetime if longterm else self._lifetime)
        if record is None:
            wanted = bool(changed) or session._created or (session._consent and session._meta_changed)
            if not wanted:
                out.clear = session._rejected and not late
                return out
            if late:
                m.stats.bump("late_changes_dropped")
                log.warning(
                    "a new session was written after the response started; "
                    "its id cannot reach the client, so it is not saved"
                )
                return out
            session_id = session.id
            absolute = now + self._absolute if self._absolute is not None else None
            # Fields by position (see wsgi_session.record): id, set, delete,
            # clear, expires, absolute, longterm, created, create, defaults, local_only.
            out.diffs.append(
                SessionDiff(
                    session_id,
                    changed,
                    _NO_DELETES,
                    False,
                    expires,
                    absolute,
                    longterm,
                    now,
                    True,
                    None,
                    local,
                )
            )
            m.stats.created += 1
            self._issue(out, session, session_id, longterm, absolute, now)
            return out
        # By position, as above; ``base`` is the snapshot, which lets SQL and
        # Redis skip re-reading an unchanged row.
        diff = SessionDiff(
            record.id,
            changed,
            deleted,
            cleared,
            expires,
            record.absolute,
            longterm,
            record.created,
            False,
            None,
            local,
            record,
        )
        if session._renew and not late:
            new_id = m.new_id()
            session._id = new_id
            out.renew = (record.id, dataclasses.replace(diff, id=new_id, create=True, base=None))
            m.stats.bump("renewed")
            self._issue(out, session, new_id, longterm, record.absolute, now)
            return out
        if changes or session._meta_changed or session._force or self._always_save:
            out.diffs.append(diff)
        elif now - (record.expires - m.lifetime(record.longterm)) >= self._touch:  # since the last write
            out.diffs.append(diff)
            m.stats.bump("touches")
        if late:
            return out
        if session._meta_changed or (
            (longterm or self._cookie_persistent) and self._refresh_due(session, record, now)
        ):
            self._issue(out, session, record.id, longterm, record.absolute, now)
        return out

    def _refresh_due(self, session: Session, record: SessionRecord, now: float) -> bool:
        """Whether a persistent cookie is past half of its ``Max-Age``."""
        token = session._token
        if token is None:
            return False
        max_age = self._max_age(session._consent, record.longterm, record.absolute, now)
        return max_age is not None and now - token.issued > max_age / 2

    def _issue(
        self,
        out: Outcome,
        session: Session,
        session_id: str,
        longterm: bool,
        absolute: float | None,
        now: float,
    ) -> None:
        """Put a new token for ``session_id`` in ``out``, bound to this client."""
        m = self._manager
        consent = session._consent
        out.send = m.signer.dumps(Token(session_id, consent, int(now)), session._binding)
        out.max_age = self._max_age(consent, longterm, absolute, now)

    def _max_age(self, consent: bool, longterm: bool, absolute: float | None, now: float) -> int | None:
        if self._opt_in and not consent:
            return None
        if longterm:
            max_age = self._manager.lifetime(True)
        elif self._cookie_persistent:
            max_age = self._manager.lifetime(False)
        else:
            return None
        if absolute is not None:
            max_age = min(max_age, absolute - now)
        return max(0, int(max_age))
