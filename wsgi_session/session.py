"""The session a view sees: a mapping that tracks its own changes.

A :class:`Session` is created for every request but does nothing until it is
used: the token is read, verified and looked up on first access, so a request
that never touches ``environ["session"]`` costs one small object.

On first access it takes a *snapshot*: the stored record (immutable) plus the
values this request decodes from it. Nothing this request does is visible to
other requests until the middleware commits, and what it commits is only the
*difference*: the keys whose encoding changed, the keys deleted. Concurrent
requests of one session that change different keys therefore both survive; for
the same key the last to commit wins.

Change detection needs no ``session.modified = True``. Every key that was read
and holds a mutable value (a list, a dict, a set...) is encoded again at the
end of the request and compared with what was loaded, so
``session["cart"].append(item)`` is saved. Immutable values that were only read
cost nothing.
"""

from __future__ import annotations

import typing as t
from collections.abc import MutableMapping

from .exceptions import SessionStateError, StoreUnavailable, UnserializableValue
from .record import MOVED_KEY
from .serialization import IMMUTABLE_TYPES

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .manager import SessionManager
    from .record import SessionRecord
    from .signing import Token

_EMPTY: t.Mapping[str, bytes] = {}
_MISSING: t.Any = object()


#: What a request changed in its session's data: the keys it set (encoded),
#: the keys it deleted, and whether it cleared everything else first. A plain
#: tuple (one is built for every request that writes; a named tuple costs a
#: Python-level constructor call).
Changes = tuple[dict[str, bytes], frozenset[str], bool]
_NO_DELETES: frozenset[str] = frozenset()


class Session(MutableMapping[str, t.Any]):
    """A request's view of its session: ``MutableMapping[str, Any]``.

    Keys are strings (not starting with NUL, which is reserved); values are
    anything the serializer encodes. Besides the mapping API:

    * :attr:`id`, :attr:`is_new`, :attr:`longterm`, :attr:`consented`;
    * :meth:`renew` (new id, e.g. at login), :meth:`destroy` (logout);
    * :meth:`set_longterm` ("remember me"), :meth:`set_store` (opt-in consent),
      :meth:`create_data` (manual mode), :meth:`update_now` (force a write);
    * :attr:`advanced`: the store-level operations.
    """

    __slots__ = (
        "_assigned",
        "_binding",
        "_cleared",
        "_consent",
        "_created",
        "_decoded",
        "_deleted",
        "_destroyed",
        "_environ",
        "_failure",
        "_force",
        "_id",
        "_loaded",
        "_longterm",
        "_manager",
        "_memo",
        "_meta_changed",
        "_presented",
        "_record",
        "_rejected",
        "_renew",
        "_token",
        "_unsaved",
        "_values",
    )  # fmt: skip

    def __init__(self, manager: SessionManager, environ: WSGIEnvironment) -> None:
        self._manager = manager
        #: Until the first access; ``environ`` holds this session too, and the
        #: pair would otherwise be a reference cycle per request, left for the
        #: cyclic garbage collector (with everything the environ holds).
        self._environ: WSGIEnvironment | None = environ
        self._loaded = False

    # -- loading -----------------------------------------------------------

    def _load(self) -> None:
        """Resolve the token and take the snapshot (first access only)."""
        self._loaded = True
        self._decoded: dict[str, t.Any] = {}
        self._assigned: dict[str, bytes] = {}
        self._deleted: set[str] = set()
        self._cleared = self._renew = self._destroyed = self._created = self._force = False
        self._unsaved = self._meta_changed = self._rejected = False
        self._failure: StoreUnavailable | None = None
        environ, self._environ = self._environ or {}, None
        #: The client binding of this request, for a new token.
        binding = self._manager.binding
        self._binding = binding.fingerprint(environ) if binding.enabled else ""
        try:
            found = self._manager.resolve(environ, self._binding)
        except StoreUnavailable as exc:
            self._failure = exc
            found = (False, None, None)  # every attribute is set before the error goes on
        presented, token, record = found
        self._presented = presented
        if record is not None:  # _adopt, written out: every request with a session comes here
            self._record: SessionRecord | None = record
            self._id: str | None = record.id
            self._values: t.Mapping[str, bytes] = record.values
            self._memo: dict[str, t.Any] = record.memo
            self._longterm = record.longterm
            self._token: Token | None = token
            self._consent = token is not None and token.consent
        else:
            self._record = None
            self._id = None
            self._values = _EMPTY
            self._memo = {}
            self._longterm = self._consent = False
            self._token = None
            self._rejected = presented
        if self._failure is not None:
            if not self._manager.fail_open:
                raise self._failure
            self._unsaved = True

    def _adopt(self, record: SessionRecord) -> None:
        self._record = record
        self._id = record.id
        self._values = record.values
        self._memo = record.memo
        self._longterm = record.longterm

    def _rebase(self, record: SessionRecord | None) -> None:
        """After a commit: make ``record`` the new baseline, so a second commit
        (for changes made while the body streams) sends only what is newer."""
        if record is not None:
            self._adopt(record)
        self._decoded = {k: v for k, v in self._decoded.items() if type(v) not in IMMUTABLE_TYPES}
        self._assigned.clear()
        self._deleted.clear()
        self._cleared = self._renew = self._force = self._meta_changed = False

    # -- the mapping -------------------------------------------------------

    # Keys are typed ``object`` where a dict takes any key: a key that is not a
    # str is absent (``KeyError``, the default) and a str subclass such as a
    # StrEnum member is its string, in the compiled build too, where a ``str``
    # annotation would make a non-str key a ``TypeError`` (see setup.py).

    def __getitem__(self, key: object) -> t.Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def get(self, key: object, default: t.Any = None) -> t.Any:
        """``session[key]`` if present, else ``default`` (the mapping's ``get``,
        written out because it is the most common call a view makes)."""
        if not self._loaded:
            self._load()
        if not isinstance(key, str):
            return default
        decoded = self._decoded
        if key in decoded:
            return decoded[key]
        if self._cleared or key in self._deleted:
            return default
        memo = self._memo  # decoded immutable values of the snapshot's keys (never a reserved one)
        if key in memo:
            return memo[key]
        raw = self._values.get(key)
        if raw is None or key == MOVED_KEY:
            return default
        value = self._manager.serializer.loads(raw)
        if type(value) in IMMUTABLE_TYPES:
            memo[key] = value
        else:
            decoded[key] = value
        return value

    def __setitem__(self, key: object, value: t.Any) -> None:
        if not self._loaded:
            self._load()
        if type(key) is not str:
            raise TypeError(f"session keys must be str, not {type(key).__name__}")
        if key.startswith("\x00"):
            raise ValueError("session keys starting with NUL are reserved")
        if self._manager.manual and self._record is None and not self._created:
            raise SessionStateError("manual mode: call session.create_data() before writing")
        try:
            encoded = self._manager.serializer.dumps(value)
        except (TypeError, ValueError) as exc:
            raise UnserializableValue(key, value, str(exc)) from exc
        self._decoded[key] = value
        self._assigned[key] = encoded
        if self._deleted:
            self._deleted.discard(key)

    def __delitem__(self, key: object) -> None:
        if not isinstance(key, str) or key not in self:
            raise KeyError(key)
        self._decoded.pop(key, None)
        self._assigned.pop(key, None)
        self._deleted.add(key)

    def __contains__(self, key: object) -> bool:
        if not self._loaded:
            self._load()
        if key in self._decoded:
            return True
        if self._cleared or key in self._deleted or key == MOVED_KEY:
            return False
        return key in self._values

    def _keys(self) -> list[str]:
        keys = dict.fromkeys(() if self._cleared else self._values)
        keys.update(dict.fromkeys(self._decoded))
        keys.pop(MOVED_KEY, None)
        return [key for key in keys if key not in self._deleted]

    def __iter__(self) -> t.Iterator[str]:
        if not self._loaded:
            self._load()
        return iter(self._keys())

    def __len__(self) -> int:
        if not self._loaded:
            self._load()
        return len(self._keys())

    def clear(self) -> None:
        """Remove every key (the session itself and its id stay)."""
        if not self._loaded:
            self._load()
        self._cleared = True
        self._decoded.clear()
        self._assigned.clear()
        self._deleted.clear()

    def __repr__(self) -> str:
        if not self._loaded:
            return "<Session (not loaded)>"
        return f"<Session {'new' if self.is_new else 'id=' + (self._id or '')[:6] + '…'} {dict(self)!r}>"

    # -- identity and lifecycle ---------------------------------------------

    @property
    def id(self) -> str:
        """The session id. A new session gets its id here, on first use; it
        is stored only if the session ends up holding data."""
        if not self._loaded:
            self._load()
        if self._id is None:
            self._id = self._manager.new_id()
        return self._id

    @property
    def is_new(self) -> bool:
        """``True`` until the session has been stored once."""
        if not self._loaded:
            self._load()
        return self._record is None

    @property
    def created(self) -> float | None:
        """When the session was created (epoch seconds); ``None`` while new."""
        if not self._loaded:
            self._load()
        return None if self._record is None else self._record.created

    @property
    def longterm(self) -> bool:
        """Whether this is a long-term ("remember me") session."""
        if not self._loaded:
            self._load()
        return self._longterm

    @property
    def consented(self) -> bool:
        """Opt-in mode: whether the user agreed to storage (:meth:`set_store`)."""
        if not self._loaded:
            self._load()
        return self._consent

    @property
    def accessed(self) -> bool:
        """Whether this request used the session at all (decides ``Vary``)."""
        return self._loaded

    def renew(self) -> None:
        """Give the session a new id at the end of this request, keeping its
        data; the old id stops working at once for new requests. Call it at
        login and at every change of privilege (session fixation defence)."""
        if not self._loaded:
            self._load()
        self._renew = True

    def destroy(self) -> None:
        """Delete the session from memory and store, and clear the client's
        token. Later writes in this request are discarded."""
        if not self._loaded:
            self._load()
        self._destroyed = True

    def set_longterm(self, longterm: bool) -> None:
        """Switch to ``longterm_lifetime`` and a persistent cookie ("remember
        me"), or back to ``lifetime``."""
        if not self._loaded:
            self._load()
        if bool(longterm) != self._longterm:
            self._longterm = bool(longterm)
            self._meta_changed = True

    def set_store(self, store: bool) -> None:
        """Opt-in mode: record the user's consent to keep the session
        (carried in the signed token) or withdraw it."""
        if not self._loaded:
            self._load()
        if bool(store) != self._consent:
            self._consent = bool(store)
            self._meta_changed = True

    def create_data(self) -> None:
        """Manual mode: create the session so it can be written and stored."""
        if not self._loaded:
            self._load()
        self._created = True

    def update_now(self) -> None:
        """Write the session (and refresh its expiry) at the end of this
        request even if nothing changed."""
        if not self._loaded:
            self._load()
        self._force = True

    @property
    def advanced(self) -> t.Any:
        """The store-level operations (:class:`~wsgi_session.advanced.Advanced`)."""
        return self._manager.advanced

    # -- change tracking ---------------------------------------------------

    def _changes(self) -> Changes | None:
        """Encode what changed since the snapshot; ``None`` if nothing did.
        A value that can no longer be encoded (a nested mutation added
        something unsupported) is logged and skipped: the stored value stays
        as it was."""
        decoded, deleted, cleared = self._decoded, self._deleted, self._cleared
        if not (decoded or deleted or cleared):
            return None  # the common read-only request
        changed: dict[str, bytes] = {}
        baseline = self._values
        assigned = self._assigned
        for key, value in decoded.items():
            if type(value) in IMMUTABLE_TYPES:
                encoded = assigned.get(key)  # only an assignment changes an immutable value
                if encoded is None:
                    continue
            else:
                encoded = self._manager.encode_late(key, value)
                if encoded is None:
                    continue
            if cleared or baseline.get(key) != encoded:
                changed[key] = encoded
        if cleared:
            clear = any(key != MOVED_KEY for key in baseline)
            return (changed, _NO_DELETES, clear) if changed or clear else None
        removed = frozenset(key for key in deleted if key in baseline) if deleted else _NO_DELETES
        return (changed, removed, False) if changed or removed else None
