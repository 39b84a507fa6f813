"""Bottle integration: the session as ``bottle.request.session`` or a
``session`` argument.

:class:`SessionPlugin` is a Bottle plugin (plugin API 2). Installed on an
application, it hands every route the request's
:class:`~wsgi_session.Session`:

* as ``bottle.request.session``, in the route and in ``after_request`` hooks;
* as a keyword argument, to routes whose callback has a parameter named
  ``session`` (the ``keyword``), the way ``bottle-sqlite`` hands out ``db``.

.. code-block:: python

    app = bottle.Bottle()
    sessions = SessionPlugin(secret_keys=[os.environ["SESSION_SECRET"]])
    app.install(sessions)

    @app.get("/")
    def index(session):
        session["visits"] = session.get("visits", 0) + 1
        return f"visit {session['visits']}"

    application = sessions.wrap(app)     # what the WSGI server serves

Why :meth:`SessionPlugin.wrap`: a plugin wraps route callbacks, which run
inside Bottle, but the middleware must wrap the whole WSGI application so it
can hold the response back until the session is committed (and answer 503 on
a store outage). A plugin cannot replace the application its server was given,
so the app to serve is the one :meth:`~SessionPlugin.wrap` returns. Serving the
bare ``app`` by mistake fails loudly: a route that wants the session raises
:class:`RuntimeError` instead of silently losing data.

Not covered: ``before_request`` hooks run before the plugin; they can use
``bottle.request.environ["session"]``.
"""

from __future__ import annotations

import functools
import typing as t

import bottle

from ..config import SessionConfig
from ..middleware import SessionMiddleware

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from ..session import Session
    from ..stores.base import Store

__all__ = ["SessionPlugin"]

#: Bottle looks up ``request.<name>`` under ``bottle.request.ext.<name>`` in the environ.
_REQUEST_ATTRIBUTE = "bottle.request.ext.session"


class SessionPlugin:
    """Gives Bottle routes the request's session.

    :param config: a :class:`~wsgi_session.SessionConfig`; needed by
        :meth:`wrap`, not when you build the middleware yourself.
    :param store: where sessions live (for :meth:`wrap`); default an
        in-process :class:`~wsgi_session.stores.MemoryStore`.
    :param keyword: the parameter name that receives the session. Default
        ``"session"``. A route can choose another with
        ``@app.get("/", session_keyword="s")``.
    :param environ_key: where the middleware puts the session; default
        ``config.environ_key`` (and set in the config when both are given).
    :param fields: ``SessionConfig`` fields, a shorthand for ``config``
        (applied on top of it when both are given).

    Two plugins with the same ``keyword`` on one app are refused
    (:class:`bottle.PluginError`). Skip the plugin for a route with
    ``@app.get("/health", skip=["wsgi_session"])``.

    .. versionadded:: 0.1
    """

    name = "wsgi_session"
    api = 2

    def __init__(
        self,
        config: SessionConfig | None = None,
        store: Store | None = None,
        *,
        keyword: str = "session",
        environ_key: str | None = None,
        **fields: t.Any,
    ) -> None:
        if fields:
            if config is None and "secret_keys" not in fields:
                raise ValueError("SessionPlugin needs config= or secret_keys= to build a config")
            config = config.replace(**fields) if config is not None else SessionConfig(**fields)
        if config is not None and environ_key is not None and environ_key != config.environ_key:
            config = config.replace(environ_key=environ_key)
        self.config = config
        self.store = store
        self.keyword = keyword
        self.environ_key = config.environ_key if config is not None else environ_key or "session"
        self.middleware: SessionMiddleware | None = None

    def setup(self, app: t.Any) -> None:
        """Called by ``app.install(plugin)``: refuse a second plugin that
        injects the same keyword."""
        for other in app.plugins:
            if isinstance(other, SessionPlugin) and other.keyword == self.keyword:
                raise bottle.PluginError(f"another SessionPlugin already injects {self.keyword!r}")

    def apply(self, callback: t.Callable[..., t.Any], route: t.Any) -> t.Callable[..., t.Any]:
        """Wrap ``callback`` (once per route) so it finds the session."""
        keyword = route.config.get("session_keyword", self.keyword)
        inject = keyword in route.get_callback_args()
        environ_key = self.environ_key

        @functools.wraps(callback)
        def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
            environ = bottle.request.environ
            session: Session | None = environ.get(environ_key)
            if session is None:
                raise RuntimeError(
                    "no session: the request did not pass through wsgi_session's SessionMiddleware "
                    "(serve the app returned by SessionPlugin.wrap(app))"
                )
            environ[_REQUEST_ATTRIBUTE] = session
            if inject:
                kwargs[keyword] = session
            return callback(*args, **kwargs)

        return wrapper

    def wrap(self, app: WSGIApplication) -> SessionMiddleware:
        """The WSGI application to serve: ``app`` inside a
        :class:`~wsgi_session.SessionMiddleware` built from this plugin's
        config and store. A :class:`bottle.Bottle` that does not have the
        plugin yet gets it installed. Keep the result for ``.close()`` (also
        :attr:`middleware`; ``app.close()`` closes it too).

        :raises ValueError: if the plugin was made without a config.
        """
        if self.config is None:
            raise ValueError("SessionPlugin.wrap() needs a config: SessionPlugin(SessionConfig(...))")
        if isinstance(app, bottle.Bottle) and self not in app.plugins:
            app.install(self)
        self.middleware = SessionMiddleware(app, self.config, self.store)
        return self.middleware

    def close(self) -> None:
        """Called by Bottle on ``app.close()`` and ``app.uninstall()``: close
        the middleware made by :meth:`wrap` (commit pending writes, stop
        threads)."""
        if self.middleware is not None:
            self.middleware.close()
