"""The session engine: tokens in, records out, diffs committed.

:class:`SessionManager` holds everything that outlives a request — the signer,
the transport, the store, the background sweep — and implements the rules that
do not depend on WSGI:

* **resolving** a request: which of the presented tokens verifies, whether its
  id is known and alive (strict mode: an unknown or expired id is never
  adopted);
* **finishing** a request: turning a :class:`~wsgi_session.session.Session`'s
  changes into :class:`~wsgi_session.record.SessionDiff` objects and deciding
  whether the client needs a new token (:class:`Outcome`);
* **committing**: applying diffs to the store, forwarding writes of renewed
  sessions to their new id.

The middleware owns the WSGI flow and calls these three in order.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
import typing as t

from ._logging import RateLimitedLog
from .background import PeriodicTask
from .exceptions import BadToken
from .record import MOVED_KEY, SessionDiff, SessionRecord, forwarding_stub
from .serialization import TaggedJSONSerializer
from .signing import ClientBinding, Token, TokenSigner, is_valid_id
from .transport import make_transport

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .config import SessionConfig
    from .session import Session
    from .stores.base import Store

log = logging.getLogger("wsgi_session")

_MAX_FORWARD_HOPS = 4


class Found(t.NamedTuple):
    """The result of resolving a request's token."""

    presented: bool
    token: Token | None
    record: SessionRecord | None


@dataclasses.dataclass(slots=True)
class Outcome:
    """What the end of a request must do."""

    diffs: list[SessionDiff] = dataclasses.field(default_factory=list)
    delete: list[str] = dataclasses.field(default_factory=list)
    renew: tuple[str, SessionDiff] | None = None
    send: str | None = None
    max_age: int | None = None
    clear: bool = False


@dataclasses.dataclass
class Stats:
    """Counters, readable as ``middleware.stats``. Updated under a lock;
    only events off the hot path are counted."""

    created: int = 0
    renewed: int = 0
    destroyed: int = 0
    writes: int = 0
    touches: int = 0
    rejected_tokens: int = 0
    unknown_ids: int = 0
    expired: int = 0
    purged: int = 0
    encode_errors: int = 0
    late_changes_dropped: int = 0
    forwarded_writes: int = 0
    dropped_writes: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def bump(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to counter ``name``."""
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def as_dict(self) -> dict[str, int]:
        """A snapshot of every counter."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class SessionManager:
    """Implements the session rules for one middleware instance.

    :param config: the validated configuration.
    :param store: where sessions live.
    :param clock: returns the current time in epoch seconds.
    """

    def __init__(self, config: SessionConfig, store: Store, clock: t.Callable[[], float]) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.serializer = config.serializer or TaggedJSONSerializer()
        self.signer = TokenSigner(config.signing_keys)
        self.binding = ClientBinding(config)
        self.transport = make_transport(config)
        self.stats = Stats()
        self.manual = config.mode == "manual"
        self.fail_open = config.outage_policy == "fail_open"
        self._opt_in = config.mode == "opt_in"
        self._lifetime = config.lifetime.total_seconds()
        self._longterm_lifetime = config.longterm_lifetime.total_seconds()
        self._absolute = config.absolute_lifetime.total_seconds() if config.absolute_lifetime else None
        self._touch = config.touch_interval.total_seconds()
        self._grace = config.renew_grace.total_seconds()
        self._new_raw_id = config.id_generator or _default_id
        self._bad_input = RateLimitedLog(log)
        self._setup_lock = threading.Lock()
        self._ready = False
        self.sweeper = PeriodicTask("wsgi-session-purge", config.purge_interval.total_seconds(), self.purge)
        from .advanced import Advanced

        self.advanced = Advanced(self)

    # -- start-up ----------------------------------------------------------

    def ensure_ready(self) -> None:
        """Create the store's schema and start the sweep, once per process."""
        if self._ready and self.sweeper.running:
            return
        with self._setup_lock:
            if not self._ready:
                self.store.setup()
                self._ready = True
        self.sweeper.ensure_running()

    def close(self) -> None:
        """Stop background work and release the store."""
        self.sweeper.stop()
        self.store.close()

    # -- resolving a request -------------------------------------------------

    def resolve(self, environ: WSGIEnvironment) -> Found:
        """Find the session a request presents, if any is alive."""
        candidates = self.transport.read(environ)
        if not candidates:
            return Found(False, None, None)
        binding = self.binding.fingerprint(environ)
        for value in candidates:
            try:
                token = self.signer.loads(value, binding)
            except BadToken as exc:
                self.stats.bump("rejected_tokens")
                self._bad_input.warning("token", "rejected session token: %s", exc.describe())
                continue
            record = self.load(token.id)
            if record is not None:
                return Found(True, token, record)
            self.stats.bump("unknown_ids")
        return Found(True, None, None)

    def load(self, session_id: str) -> SessionRecord | None:
        """The live record for ``session_id``: ``None`` if unknown, expired or
        a forwarding stub (a renewed session's old id)."""
        record = self.store.load(session_id)
        if record is None or MOVED_KEY in record.values:
            return None
        if record.is_expired(self.clock()):
            self.stats.bump("expired")
            self.store.delete([session_id])
            return None
        return record

    def forget(self, session_id: str) -> None:
        """Drop any copy of ``session_id`` this process keeps besides the store."""

    def decode_value(self, session_id: str | None, key: str, raw: bytes) -> t.Any:
        """Decode one stored value."""
        return self.serializer.loads(raw)

    def encode_late(self, key: str, value: t.Any) -> bytes | None:
        """Encode a value at the end of the request, or log why it cannot be."""
        try:
            return self.serializer.dumps(value)
        except (TypeError, ValueError) as exc:
            self.stats.bump("encode_errors")
            log.error(
                "session[%r] was changed to a value that cannot be saved (%s); the stored value is kept",
                key,
                exc,
            )
            return None

    def new_id(self) -> str:
        """A fresh session id from the configured generator."""
        session_id = self._new_raw_id()
        if not is_valid_id(session_id):
            raise ValueError("id_generator must return 16-128 characters of A-Z a-z 0-9 - _")
        return session_id

    # -- finishing a request -------------------------------------------------

    def lifetime(self, longterm: bool) -> float:
        """The idle lifetime in seconds for a normal or long-term session."""
        return self._longterm_lifetime if longterm else self._lifetime

    def finish(self, session: Session, late: bool = False) -> Outcome | None:
        """Turn what ``session`` did into an :class:`Outcome`; ``None`` if the
        request never used its session. ``late`` means the headers are gone:
        nothing that needs a new token can happen any more."""
        if not session._loaded:
            return None
        out = Outcome()
        if session._unsaved:
            return out
        now = self.clock()
        record = session._record
        if session._destroyed:
            if record is not None:
                out.delete.append(record.id)
                self.stats.bump("destroyed")
            out.clear = session._presented and not late
            return out
        changes = session._changes()
        longterm = session._longterm
        expires = now + self.lifetime(longterm)
        if record is None:
            wanted = bool(changes.set) or session._created or (session._consent and session._meta_changed)
            if not wanted:
                out.clear = session._rejected and not late
                return out
            if late:
                self.stats.bump("late_changes_dropped")
                log.warning(
                    "a new session was written after the response started; "
                    "its id cannot reach the client, so it is not saved"
                )
                return out
            session_id = session.id
            absolute = now + self._absolute if self._absolute is not None else None
            out.diffs.append(
                SessionDiff(
                    session_id,
                    changes.set,
                    frozenset(),
                    False,
                    expires,
                    absolute,
                    longterm,
                    created=now,
                    create=True,
                )
            )
            self.stats.bump("created")
            self._issue(out, session, session_id, longterm, absolute, now)
            return out
        diff = SessionDiff(
            record.id,
            changes.set,
            changes.delete,
            changes.clear,
            expires,
            record.absolute,
            longterm,
            created=record.created,
        )
        if session._renew and not late:
            new_id = self.new_id()
            session._id = new_id
            out.renew = (record.id, dataclasses.replace(diff, id=new_id, create=True))
            self.stats.bump("renewed")
            self._issue(out, session, new_id, longterm, record.absolute, now)
            return out
        last_touch = record.expires - self.lifetime(record.longterm)
        if changes or session._meta_changed or session._force or self.config.always_save:
            out.diffs.append(diff)
        elif now - last_touch >= self._touch:
            out.diffs.append(diff)
            self.stats.bump("touches")
        if late:
            return out
        max_age = self._max_age(session._consent, longterm, record.absolute, now)
        token = session._token
        if session._meta_changed or (
            max_age is not None and token is not None and now - token.issued > max_age / 2
        ):
            self._issue(out, session, record.id, longterm, record.absolute, now)
        return out

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
        consent = session._consent
        binding = self.binding.fingerprint(session._environ)
        out.send = self.signer.dumps(Token(session_id, consent, int(now)), binding)
        out.max_age = self._max_age(consent, longterm, absolute, now)

    def _max_age(self, consent: bool, longterm: bool, absolute: float | None, now: float) -> int | None:
        if self._opt_in and not consent:
            return None
        if longterm:
            max_age = self._longterm_lifetime
        elif self.config.cookie_persistent:
            max_age = self._lifetime
        else:
            return None
        if absolute is not None:
            max_age = min(max_age, absolute - now)
        return max(0, int(max_age))

    # -- committing ------------------------------------------------------------

    def commit(self, out: Outcome) -> SessionRecord | None:
        """Apply ``out`` to the store; returns the session's new record when
        there is one (for a second commit while the body streams)."""
        result: SessionRecord | None = None
        if out.delete:
            self.store.delete(out.delete)
        if out.renew is not None:
            result = self._renew(*out.renew)
        if out.diffs:
            records = self.apply(out.diffs)
            result = records[0] if records else result
            self.stats.bump("writes", len(out.diffs))
        return result

    def apply(self, diffs: t.Sequence[SessionDiff]) -> list[SessionRecord | None]:
        """Apply diffs, following forwarding stubs of renewed sessions."""
        results = self.store.apply(diffs)
        for index, (diff, record) in enumerate(zip(diffs, results, strict=True)):
            hops = 0
            while record is not None and MOVED_KEY in record.values and MOVED_KEY not in diff.set:
                hops += 1
                if hops > _MAX_FORWARD_HOPS:
                    record = None
                    break
                self.stats.bump("forwarded_writes")
                diff = dataclasses.replace(diff, id=record.values[MOVED_KEY].decode(), create=True)
                record = self.store.apply([diff])[0]
            if record is None:
                self.stats.bump("dropped_writes")
            results[index] = record
        return results

    def _renew(self, old_id: str, new: SessionDiff) -> SessionRecord | None:
        """Move ``old_id``'s data to ``new.id`` without losing concurrent writes.

        1. Mark the old record as moved (its data stays until the stub
           expires): from now on every write to the old id is forwarded.
        2. Create the new record from this request's changes, with the old
           data as *defaults* underneath: a forwarded write that reached the
           new id first is not overwritten by older data.
        """
        now = self.clock()
        old = self.store.apply([forwarding_stub(old_id, new.id, now, self._grace)])[0]
        base: dict[str, bytes] = {}
        if old is not None and not new.clear:
            base = {k: v for k, v in old.values.items() if k != MOVED_KEY}
        return self.apply([dataclasses.replace(new, defaults=base)])[0]

    # -- maintenance -------------------------------------------------------------

    def purge(self, limit: int = 1000) -> int:
        """Delete expired sessions from the store, ``limit`` at a time, until
        none are left; returns how many went."""
        total = 0
        while True:
            ids = self.store.purge_expired(self.clock(), limit)
            total += len(ids)
            if len(ids) < limit:
                break
        if total:
            self.stats.bump("purged", total)
        return total


def _default_id() -> str:
    return secrets.token_urlsafe(24)
