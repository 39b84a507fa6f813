"""Pyramid integration: ``request.session`` backed by wsgi_session.

Two pieces, because a session middleware must sit *outside* Pyramid's router:

* :class:`SessionFactory`, an ``ISessionFactory``: ``request.session`` becomes
  a :class:`PyramidSession` — the full ``ISession`` API (``invalidate``,
  ``changed``, ``new``, ``created``, flash queues, CSRF tokens, the dict API)
  over the :class:`~wsgi_session.Session` the middleware put in the environ;
* :func:`make_wsgi_app` / :func:`wrap`, which put the router inside
  :class:`~wsgi_session.SessionMiddleware`.

``config.include("wsgi_session.contrib.pyramid")`` reads ``wsgi_session.*``
settings from the ini file (see :func:`includeme`) and registers the factory:

.. code-block:: python

    def main(global_config, **settings):
        with Configurator(settings=settings) as config:
            config.include("wsgi_session.contrib.pyramid")
            config.scan()
        return make_wsgi_app(config)

Why not a tween: a tween runs inside the router, after the request is built
and before Pyramid's response is turned into WSGI headers, so it could not
hold the response back while the session is committed, answer 503 on a store
outage, or see changes made by response callbacks and streaming bodies. The
middleware does all of that at the WSGI level; the factory is then only a view
of ``environ["session"]`` and costs nothing until used.

Unsafe to use: a request that did not pass through the middleware (a
forgotten :func:`wrap`) raises :class:`RuntimeError` on ``request.session``
rather than silently dropping data.
"""

from __future__ import annotations

import dataclasses
import importlib
import secrets
import time
import typing as t
from collections.abc import MutableMapping

from pyramid.interfaces import ISession

from ..middleware import SessionMiddleware
from . import config_from_settings, store_from_settings
from ._proxy import SessionProxy

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from ..config import SessionConfig
    from ..session import Session
    from ..stores.base import Store

__all__ = ["PyramidSession", "SessionFactory", "includeme", "make_wsgi_app", "wrap"]

#: Where :func:`includeme` keeps the configuration in the registry.
REGISTRY_KEY = "wsgi_session"
#: Where :func:`wrap` keeps the middleware in the registry.
MIDDLEWARE_KEY = "wsgi_session.middleware"
#: The settings prefix read by :func:`includeme`.
SETTINGS_PREFIX = "wsgi_session."
#: The session key of the CSRF token (the same as Pyramid's cookie sessions).
CSRF_KEY = "_csrft_"
#: The prefix of flash queue keys (the same as Pyramid's cookie sessions).
FLASH_PREFIX = "_f_"


class PyramidSession(SessionProxy, MutableMapping[str, t.Any]):
    """``request.session``: Pyramid's ``ISession`` over a wsgi_session session.

    The dict API, flash queues and CSRF tokens store their data under the
    same keys as Pyramid's own cookie sessions (``_f_<queue>``, ``_csrft_``).
    Where Pyramid and wsgi_session differ:

    * :meth:`changed` is never needed: nested changes are detected;
    * :meth:`invalidate` empties the session *and* gives it a new id (the old
      token stops working at once); values set afterwards in the same request
      are kept under the new id. :meth:`destroy` removes the session and its
      cookie altogether.

    wsgi_session's own API is here too: :attr:`id`, :meth:`renew`,
    :meth:`destroy`, :meth:`set_longterm`, :attr:`longterm`, :attr:`raw`.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self._created: int | None = None

    # The dict API is passed through by SessionProxy.

    # -- ISession ----------------------------------------------------------------

    @property
    def new(self) -> bool:
        """``True`` until the session has been stored."""
        return self._session.is_new

    @property
    def created(self) -> int:
        """When the session was created, in epoch seconds (now, for a session
        not stored yet)."""
        if self._created is None:
            self._created = int(_created(self._session))
        return self._created

    def invalidate(self) -> None:
        """Forget the session's data and id: the data is cleared and the id
        renewed, so the old token gets an empty session from now on (use it
        at login and logout: session fixation). Values set after this call
        are saved under the new id, so ``invalidate(); flash("bye")`` works.
        """
        self._session.clear()
        self._session.renew()

    def changed(self) -> None:
        """Accepted for compatibility; nothing to do, since changes inside
        values (``session["cart"].append(x)``) are detected on their own."""

    def flash(self, msg: t.Any, queue: str = "", allow_duplicate: bool = True) -> None:
        """Append ``msg`` to the flash queue ``queue`` (unless it is already
        there and ``allow_duplicate`` is false)."""
        storage = self.setdefault(FLASH_PREFIX + queue, [])
        if allow_duplicate or msg not in storage:
            storage.append(msg)

    def pop_flash(self, queue: str = "") -> list[t.Any]:
        """Remove the queue ``queue`` and return its messages (``[]`` if none)."""
        return t.cast("list[t.Any]", self.pop(FLASH_PREFIX + queue, []))

    def peek_flash(self, queue: str = "") -> list[t.Any]:
        """The messages of the queue ``queue``, leaving them in place."""
        return t.cast("list[t.Any]", self.get(FLASH_PREFIX + queue, []))

    def new_csrf_token(self) -> str:
        """Store and return a new random CSRF token (40 hex characters)."""
        token = secrets.token_hex(20)
        self[CSRF_KEY] = token
        return token

    def get_csrf_token(self) -> str:
        """The session's CSRF token, created on first use."""
        token = self.get(CSRF_KEY)
        return token if isinstance(token, str) else self.new_csrf_token()

    # wsgi_session's own API (id, renew, destroy, set_longterm, ...) comes
    # from SessionProxy.


importlib.import_module("zope.interface").classImplements(PyramidSession, ISession)


class SessionFactory:
    """The ``ISessionFactory``: ``factory(request)`` returns the request's
    :class:`PyramidSession`.

    :param environ_key: where the middleware puts the session
        (``SessionConfig.environ_key``).

    Use it directly when you build the middleware yourself::

        config.set_session_factory(SessionFactory())
        app = SessionMiddleware(config.make_wsgi_app(), SessionConfig(secret_keys=[key]))
    """

    def __init__(self, environ_key: str = "session") -> None:
        self.environ_key = environ_key

    def __call__(self, request: t.Any) -> PyramidSession:
        session = request.environ.get(self.environ_key)
        if session is None:
            raise RuntimeError(
                "request.session is unavailable: the request did not pass through wsgi_session's "
                "SessionMiddleware (build the app with wsgi_session.contrib.pyramid.make_wsgi_app)"
            )
        return PyramidSession(session)


@dataclasses.dataclass(frozen=True)
class SessionSetup:
    """What :func:`includeme` read from the settings (in the registry)."""

    config: SessionConfig
    store: Store | None


def includeme(config: t.Any) -> None:
    """``config.include("wsgi_session.contrib.pyramid")``: read the settings,
    register :class:`SessionFactory`.

    Settings are ``wsgi_session.<field>`` for every
    :class:`~wsgi_session.SessionConfig` field, converted by
    :func:`~wsgi_session.contrib.config_from_settings` — lists separated by
    whitespace, booleans as ``true``/``false``, durations in seconds::

        wsgi_session.secret_keys = %(SESSION_SECRET)s
        wsgi_session.cookie_secure = true
        wsgi_session.lifetime = 3600
        wsgi_session.store_url = redis://127.0.0.1:6379/0

    The store comes from ``wsgi_session.store_url`` (with ``store_prefix`` /
    ``store_table``), ``wsgi_session.store_factory`` (a dotted name) or
    ``wsgi_session.store`` (an object, from code); default in-process memory.

    :raises ValueError: for a missing ``secret_keys``, an unknown setting or
        a value that does not convert — when the app starts, not later.
    """
    settings = config.get_settings()
    session_config = config_from_settings(settings, SETTINGS_PREFIX)
    store = store_from_settings(settings, SETTINGS_PREFIX)
    config.registry[REGISTRY_KEY] = SessionSetup(session_config, store)
    config.set_session_factory(SessionFactory(session_config.environ_key))


def wrap(app: t.Any) -> SessionMiddleware:
    """Put a Pyramid router (``config.make_wsgi_app()``) inside the middleware
    configured by :func:`includeme`. The middleware is also kept in the
    registry under :data:`MIDDLEWARE_KEY` (``.close()``, ``.advanced``).

    :raises RuntimeError: if the include was not done.
    """
    registry = app.registry
    setup = registry.get(REGISTRY_KEY)
    if not isinstance(setup, SessionSetup):
        raise RuntimeError('config.include("wsgi_session.contrib.pyramid") must come before wrap()')
    middleware = SessionMiddleware(t.cast("WSGIApplication", app), setup.config, setup.store)
    registry[MIDDLEWARE_KEY] = middleware
    return middleware


def make_wsgi_app(config: t.Any) -> SessionMiddleware:
    """``config.make_wsgi_app()``, wrapped by :func:`wrap`: the WSGI app to
    serve."""
    return wrap(config.make_wsgi_app())


def _created(session: Session) -> float:
    """The session's creation time; a new session is created now."""
    created = session.created
    return time.time() if created is None else created
