"""The Store protocol: what every session backend provides.

A store keeps :class:`~wsgi_session.record.SessionRecord` objects by id and
applies :class:`~wsgi_session.record.SessionDiff` batches to them. It never
sees a request, a token or a decoded value: values arrive as opaque bytes
(already encrypted when encryption at rest is on), so the same store code
serves every serializer and key.

The contract, which the middleware relies on:

* :meth:`Store.apply` merges each diff *key by key* into what is stored now
  (not into what the request saw), atomically per session, so two requests
  that changed different keys both survive. A diff with ``create=False`` for a
  missing id is dropped (``None`` in the result): a destroyed session is never
  resurrected by a request that was still running.
* :meth:`Store.load` returns what is stored, expired or not; the caller
  decides about expiry, with its own clock.
* Errors that mean "the backend cannot be reached" are raised as
  :class:`~wsgi_session.exceptions.StoreUnavailable`; a row that cannot be
  read as a record raises :class:`~wsgi_session.exceptions.BadStoredData`.
* Methods are called from many threads at once and never while the caller
  holds a lock.
"""

from __future__ import annotations

import abc
import enum
import typing as t

if t.TYPE_CHECKING:
    import threading

    from ..record import SessionDiff, SessionRecord


class Unchanged(enum.Enum):
    """The type of :data:`UNCHANGED`."""

    UNCHANGED = "unchanged"


#: What :meth:`Store.load_if_changed` answers when the stored version is
#: still the caller's: the caller's copy is current.
UNCHANGED: t.Final = Unchanged.UNCHANGED


class Store(abc.ABC):
    """Base class of session backends. Subclasses implement the abstract
    methods; the others have correct (if not the fastest) defaults."""

    #: The store keeps its data in this process: there is no other process to
    #: be coherent with, so no cache is put in front of it.
    is_local: bool = False
    #: The backend drops expired sessions by itself (e.g. Redis TTLs), so the
    #: purge sweep only has to tidy what the backend misses.
    expires_by_itself: bool = False
    #: The backend can announce changed ids to other processes
    #: (``coherence="notify"``): see :meth:`enable_notifications`.
    supports_notifications: bool = False

    def setup(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Create tables or indexes if missing. Idempotent; called once, lazily,
        in the process that serves requests."""

    @abc.abstractmethod
    def load(self, session_id: str) -> SessionRecord | None:
        """The stored record, or ``None``."""

    def version(self, session_id: str) -> int | None:
        """The stored record's version, or ``None``; used to validate a cached
        copy. Stores override it with something cheaper than :meth:`load`."""
        record = self.load(session_id)
        return None if record is None else record.version

    def load_if_changed(self, session_id: str, version: int) -> SessionRecord | Unchanged | None:
        """:data:`UNCHANGED` if the stored record's version is ``version``,
        else the stored record (or ``None``), in one round trip either way:
        how a cache validates a copy that is often stale (see
        :class:`~wsgi_session.coherence.CachedStore`). This default loads the
        record and compares; stores override it with a call that sends the
        record only when it changed (:class:`~wsgi_session.stores.RedisStore`:
        a script)."""
        record = self.load(session_id)
        return UNCHANGED if record is not None and record.version == version else record

    @abc.abstractmethod
    def apply(self, diffs: t.Sequence[SessionDiff]) -> list[SessionRecord | None]:
        """Merge each diff into its stored session; return the resulting
        records in order (``None`` where a diff was dropped). Merge exactly as
        :func:`~wsgi_session.record.apply_diff` does, the version included:
        it moves on by ``diff.span`` (a flushed diff may stand for several
        requests' writes), or a process's cached copy runs ahead of the store.

        A batch that is applied for some diffs and not others must raise
        :class:`~wsgi_session.exceptions.PartlyApplied` with every result
        (the flusher must not send the applied ones again); any other
        exception means nothing of the batch was applied."""

    @abc.abstractmethod
    def delete(self, session_ids: t.Iterable[str]) -> None:
        """Remove these sessions; missing ids are ignored."""

    def exists(self, session_id: str) -> bool:
        """Whether a record with this id is stored."""
        return self.version(session_id) is not None

    @abc.abstractmethod
    def count(self) -> int:
        """How many records are stored (expired ones not yet purged included)."""

    @abc.abstractmethod
    def iter_ids(self, batch_size: int = 1000) -> t.Iterator[str]:
        """Every stored id, fetched ``batch_size`` at a time."""

    @abc.abstractmethod
    def purge_expired(self, now: float, limit: int = 1000) -> list[str]:
        """Delete up to ``limit`` records whose deadline is past; return their ids."""

    @abc.abstractmethod
    def clear(self) -> None:
        """Delete every session this store holds (only its own keys or table)."""

    def enable_notifications(self, origin: str) -> None:
        """From now on, announce the id of every session :meth:`apply` or
        :meth:`delete` changes, tagged with ``origin``, in the same round trip
        or transaction as the change itself."""
        raise NotImplementedError(f"{type(self).__name__} cannot announce changes")

    def listen(
        self,
        on_message: t.Callable[[str, str], None],
        on_reset: t.Callable[[], None],
        stop: threading.Event,
    ) -> None:
        """Subscribe to announcements and block, calling
        ``on_message(origin, session_id)`` for each, until ``stop`` is set.
        Call ``on_reset()`` once the subscription is established (messages
        sent before it were missed). Raise on connection failure; the caller
        subscribes again."""
        raise NotImplementedError(f"{type(self).__name__} cannot announce changes")

    def close(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release connections. The store is not used afterwards."""
