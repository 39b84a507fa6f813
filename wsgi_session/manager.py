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
import os
import threading
import typing as t

from ._logging import RateLimitedLog
from .advanced import Advanced
from .background import PeriodicTask
from .coherence import CachedStore
from .exceptions import BadStoredData, BadToken, StoreError
from .keystore import KeyStore
from .outcome import Finisher
from .record import MOVED_KEY, SessionDiff, SessionRecord, forwarding_stub
from .serialization import IMMUTABLE_TYPES, TaggedJSONSerializer
from .signing import ClientBinding, Token, TokenSigner, is_valid_id, urlsafe_b64
from .transport import make_transport

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .config import SessionConfig
    from .outcome import Outcome
    from .stores.base import Store

log = logging.getLogger("wsgi_session")

_MAX_FORWARD_HOPS = 4
_MAX_ID_ATTEMPTS = 16
#: Marks a record whose values were all decoded once: a memo key that is not
#: a string, so no key a view asks for can ever equal it (``Session.get``
#: looks in the memo before it looks at the values).
_DECODED: t.Any = object()


#: The result of resolving a request's token: whether the request presented
#: one, the verified token and the live record (a plain tuple: one is built
#: for every request that uses its session).
Found = tuple[bool, "Token | None", "SessionRecord | None"]
_NOT_PRESENTED: Found = (False, None, None)
_NOT_FOUND: Found = (True, None, None)


@dataclasses.dataclass
class Stats:
    """Counters, readable as ``middleware.stats``.

    They are for monitoring, so they are updated without a lock: under heavy
    contention between threads an increment can, rarely, be lost."""

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
    unreadable_rows: int = 0
    discarded_on_error: int = 0

    def bump(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to counter ``name``."""
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
        self.clock = clock
        self.cached: CachedStore | None = None
        if store.is_local:
            self.store = store
        else:
            self.cached = CachedStore(_sealed(store, config), config)
            self.store = self.cached
        self.serializer = config.serializer or TaggedJSONSerializer()
        self.signer = TokenSigner(config.signing_keys)
        self.binding = ClientBinding(config)
        self.transport = make_transport(config)
        self.stats = Stats()
        self.manual = config.mode == "manual"
        self.fail_open = config.outage_policy == "fail_open"
        self._lifetime = config.lifetime.total_seconds()
        self._longterm_lifetime = config.longterm_lifetime.total_seconds()
        self._grace = config.renew_grace.total_seconds()
        self._new_raw_id = config.id_generator or _default_id
        self._bad_input = RateLimitedLog(log)
        self._setup_lock = threading.Lock()
        self._ready = False
        self.sweeper = PeriodicTask("wsgi-session-purge", config.purge_interval.total_seconds(), self.purge)
        self.evictor = PeriodicTask(
            "wsgi-session-evict", config.memory_purge_interval.total_seconds(), self.evict_idle
        )
        self.keystore = KeyStore(config, self.store, clock) if KeyStore.wanted(config, store) else None
        self.finisher = Finisher(self)
        self.advanced = Advanced(self)

    # -- start-up ----------------------------------------------------------

    def ensure_ready(self) -> None:
        """Create the store's schema and start the sweep, once per process."""
        if self._ready and self.sweeper.started:
            return
        with self._setup_lock:
            if not self._ready:
                try:
                    self.store.setup()
                except StoreError as exc:
                    # Tried again on the next request; this one gets the outage policy.
                    self._bad_input.warning("setup", "session store setup failed: %s", exc)
                    return
                self._ready = True
        self.sweeper.ensure_running()
        if self.cached is not None:
            self.evictor.ensure_running()
        if self.keystore is not None:
            self.keystore.ensure_running()

    def close(self) -> None:
        """Flush pending writes, stop background work, release the store."""
        self.sweeper.stop()
        self.evictor.stop()
        if self.keystore is not None:
            self.keystore.stop()
        self.store.close()

    # -- resolving a request -------------------------------------------------

    def resolve(self, environ: WSGIEnvironment, binding: str) -> Found:
        """Find the session a request presents, if any is alive; ``binding``
        is the request's client fingerprint (:meth:`ClientBinding.fingerprint`)."""
        candidates = self.transport.read(environ)
        if not candidates:
            return _NOT_PRESENTED
        for value in candidates:
            try:
                token = self.signer.loads(value, binding)
            except BadToken as exc:
                self.stats.bump("rejected_tokens")
                self._bad_input.warning("token", "rejected session token: %s", exc.describe())
                continue
            keystore = self.keystore
            if keystore is not None and keystore.never_issued(token.id, token.issued):
                self.stats.bump("unknown_ids")  # the bloom filter spared the lookup
                continue
            record = self.load(token.id)
            if record is not None:
                return (True, token, record)
            self.stats.bump("unknown_ids")
        return _NOT_FOUND

    def load(self, session_id: str) -> SessionRecord | None:
        """The live record for ``session_id``: ``None`` if unknown, expired or
        a forwarding stub (a renewed session's old id)."""
        try:
            record = self.store.load(session_id)
        except BadStoredData as exc:
            self._unreadable(session_id, exc.message)
            return None
        if record is None or MOVED_KEY in record.values:
            return None
        now = self.clock()
        if now >= record.expires or (record.absolute is not None and now >= record.absolute):
            self.stats.bump("expired")
            self.store.delete([session_id])
            return None
        if self.cached is not None and _DECODED not in record.memo and not self._check_decodes(record):
            return None
        return record

    def _check_decodes(self, record: SessionRecord) -> bool:
        """Decode every value of a record fresh from the store, once: a row
        that does not decode is refused whole, before a view sees half of it.
        Immutable values are memoised for the requests that follow."""
        memo = record.memo
        for key, raw in record.values.items():
            try:
                value = self.serializer.loads(raw)
            except Exception as exc:
                self._unreadable(record.id, f"value of {key!r} does not decode: {exc}")
                return False
            if type(value) in IMMUTABLE_TYPES:
                memo[key] = value
        memo[_DECODED] = True
        return True

    def _unreadable(self, session_id: str, reason: str) -> None:
        self.stats.bump("unreadable_rows")
        self._bad_input.log(
            logging.ERROR,
            "row",
            "stored session %s... cannot be read (%s); the client gets a new session, "
            "the row is left untouched",
            session_id[:6],
            reason,
        )

    def forget(self, session_id: str) -> None:
        """Drop any copy of ``session_id`` this process keeps besides the store."""
        if self.cached is not None:
            self.cached.forget(session_id)

    def evict_idle(self) -> int:
        """Drop cache entries idle for longer than ``memory_lifetime``."""
        return self.cached.cache.evict_idle() if self.cached is not None else 0

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
        """A fresh session id from the configured generator.

        The default generator's 192 random bits make a collision
        negligible, so its ids are used as they come. A custom
        ``id_generator`` may be weaker: its ids are checked against the
        store and drawn again if taken, so two visitors never share a session.
        """
        keystore = self.keystore
        if self._new_raw_id is _default_id:
            session_id = _default_id()
            if keystore is not None:
                keystore.added(session_id)
            return session_id
        if keystore is not None:
            return keystore.claim(self._generate_checked)
        for _ in range(_MAX_ID_ATTEMPTS):
            session_id = self._generate_checked()
            if not self.store.exists(session_id):
                return session_id
        raise RuntimeError(f"id_generator returned {_MAX_ID_ATTEMPTS} ids in a row that are taken")

    def _generate_checked(self) -> str:
        session_id = self._new_raw_id()
        if not is_valid_id(session_id):
            raise ValueError("id_generator must return 16-128 characters of A-Z a-z 0-9 - _")
        return session_id

    def lifetime(self, longterm: bool) -> float:
        """The idle lifetime in seconds for a normal or long-term session."""
        return self._longterm_lifetime if longterm else self._lifetime

    # -- committing ------------------------------------------------------------

    def commit(self, out: Outcome) -> SessionRecord | None:
        """Apply ``out`` to the store; returns the session's new record when
        there is one (for a second commit while the body streams).

        A stored row that cannot be merged into (damaged, or undecryptable)
        is logged and left alone; this request's changes to it are dropped,
        and the next request gets a fresh session."""
        try:
            result: SessionRecord | None = None
            if out.delete:
                self.store.delete(out.delete)
            if out.renew is not None:
                result = self._renew(*out.renew)
            diffs = out.diffs
            if diffs:
                result = self.apply(diffs)[0]
                self.stats.writes += len(diffs)
            return result
        except BadStoredData as exc:
            ids = [diff.id for diff in out.diffs] or ([out.renew[0]] if out.renew else [])
            for session_id in ids:
                self._unreadable(session_id, f"cannot write to it: {exc.message}")
                self.forget(session_id)
            return None

    def apply(self, diffs: t.Sequence[SessionDiff]) -> list[SessionRecord | None]:
        """Apply diffs, following forwarding stubs of renewed sessions."""
        results = self.store.apply(diffs)
        if len(results) == 1 and results[0] is not None and MOVED_KEY not in results[0].values:
            return results  # the common case: one diff, applied where it was sent
        for index, (diff, record) in enumerate(zip(diffs, results, strict=True)):
            hops = 0
            while record is not None and MOVED_KEY in record.values and MOVED_KEY not in diff.set:
                hops += 1
                if hops > _MAX_FORWARD_HOPS:
                    record = None
                    break
                self.stats.bump("forwarded_writes")
                # Never create=True: a renewed session destroyed since must stay gone.
                diff = dataclasses.replace(diff, id=record.values[MOVED_KEY].decode(), create=False)
                record = self.store.apply([diff])[0]
            if record is None:
                self.stats.bump("dropped_writes")
            results[index] = record
        return results

    def _renew(self, old_id: str, new: SessionDiff) -> SessionRecord | None:
        """Move ``old_id``'s data to ``new.id`` without losing concurrent writes.

        1. Create the new record with this request's changes only.
        2. Turn the old record into a forwarding stub (its data stays until
           the stub expires): from now on every write to the old id is
           forwarded to the new one — never re-creating it, so a logout
           (destroy) of the new id sticks.
        3. Copy the old data into the new record as *defaults*: keys a
           forwarded write already set there are not overwritten with older
           values, and keys this request deleted do not come back.
        """
        now = self.clock()
        created = self.apply([new])[0]
        old = self.store.apply([forwarding_stub(old_id, new.id, now, self._grace)])[0]
        if old is None or new.clear or created is None:
            return created
        base = {k: v for k, v in old.values.items() if k != MOVED_KEY and k not in new.delete}
        if not base:
            return created
        fill = dataclasses.replace(new, set={}, delete=frozenset(), create=False, defaults=base)
        return self.apply([fill])[0]

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


def _sealed(store: Store, config: SessionConfig) -> Store:
    """``store`` wrapped for encryption at rest when keys are configured."""
    if not config.encryption_keys:
        return store
    from .crypto import SealedStore, Sealer

    return t.cast("Store", SealedStore(store, Sealer(config.sealing_keys)))


def _default_id() -> str:
    """192 bits from the OS's CSPRNG as 32 URL-safe characters: what
    ``secrets.token_urlsafe(24)`` gives, without its Python-level calls."""
    return urlsafe_b64(os.urandom(24))
