"""The part of wsgi_session's session API that every framework adapter passes
through unchanged, written once."""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    from ..session import Session


class SessionProxy:
    """Mixin for an adapter's session object that wraps a
    :class:`~wsgi_session.Session` in ``self._session``."""

    _session: Session

    # -- the mapping, passed through (adapters may add bookkeeping) -----------

    def __getitem__(self, key: str) -> t.Any:
        return self._session[key]

    def get(self, key: str, default: t.Any = None) -> t.Any:
        """``session[key]`` if present, else ``default`` (passed through: the
        mapping's own ``get`` would go through ``__getitem__`` and, for a
        missing key, a raised and caught ``KeyError``)."""
        return self._session.get(key, default)

    def __setitem__(self, key: str, value: t.Any) -> None:
        self._session[key] = value

    def __delitem__(self, key: str) -> None:
        del self._session[key]

    def __contains__(self, key: object) -> bool:
        return key in self._session

    def __iter__(self) -> t.Iterator[str]:
        return iter(self._session)

    def __len__(self) -> int:
        return len(self._session)

    def clear(self) -> None:
        """Remove every key; the session and its id stay (see :meth:`destroy`)."""
        self._session.clear()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._session!r}>"

    # -- wsgi_session's own API -------------------------------------------------

    @property
    def raw(self) -> Session:
        """The underlying :class:`~wsgi_session.Session` (``environ["session"]``)."""
        return self._session

    @property
    def id(self) -> str:
        """The session id."""
        return self._session.id

    @property
    def is_new(self) -> bool:
        """``True`` until the session has been stored once."""
        return self._session.is_new

    @property
    def longterm(self) -> bool:
        """Whether this is a long-term ("remember me") session."""
        return self._session.longterm

    @property
    def consented(self) -> bool:
        """Opt-in mode: whether the user agreed to storage."""
        return self._session.consented

    def renew(self) -> None:
        """New id at the end of the request, data kept: call it at login and
        at every change of privilege."""
        self._session.renew()

    def destroy(self) -> None:
        """Delete the session and clear the cookie; later writes in this
        request are discarded."""
        self._session.destroy()

    def set_longterm(self, longterm: bool) -> None:
        """Switch to ``longterm_lifetime`` and a persistent cookie, or back."""
        self._session.set_longterm(longterm)

    def set_store(self, store: bool) -> None:
        """Opt-in mode: record or withdraw the user's consent."""
        self._session.set_store(store)

    def create_data(self) -> None:
        """Manual mode: create the session so it can be written."""
        self._session.create_data()

    def update_now(self) -> None:
        """Write the session at the end of the request even if unchanged."""
        self._session.update_now()

    @property
    def advanced(self) -> t.Any:
        """The store-level operations."""
        return self._session.advanced
