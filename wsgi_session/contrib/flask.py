"""Flask integration: ``flask.session`` backed by wsgi_session.

:class:`WsgiSession` is a Flask extension. It wraps ``app.wsgi_app`` in
:class:`~wsgi_session.SessionMiddleware` and replaces ``app.session_interface``
with :class:`WsgiSessionInterface`, so everything written for Flask's session
keeps working: ``flask.session``, ``session.permanent``, ``flash()`` and
``get_flashed_messages()``, Flask-Login.

.. code-block:: python

    app = Flask(__name__)
    app.config["SECRET_KEY"] = os.environ["SECRET_KEY"]   # at least 32 bytes
    WsgiSession(app)                                       # or ext.init_app(app)

How it differs from Flask's cookie session:

* the data stays on the server; the cookie carries only a signed id;
* no ``session.modified = True`` is ever needed: nested changes
  (``session["cart"].append(x)``) are detected and saved;
* the middleware, not :meth:`~flask.sessions.SessionInterface.save_session`,
  saves the session and sets the cookie and ``Vary: Cookie`` — after Flask
  has produced the whole response, ``after_request`` functions included;
* :attr:`FlaskSession.permanent` is the long-term ("remember me") flag:
  ``PERMANENT_SESSION_LIFETIME`` idle timeout and a persistent cookie.

Unsafe to use: with ``app.wsgi_app`` replaced after :meth:`WsgiSession.init_app`
(the middleware would be dropped; ``flask.session`` then refuses writes), or
with ``bind_ip`` while ``ProxyFix`` sits *inside* the middleware (apply
``ProxyFix`` after ``init_app`` so that it wraps the session middleware).
"""

from __future__ import annotations

import importlib
import typing as t

from flask import current_app, has_request_context, request
from flask.sessions import NullSession, SessionInterface, SessionMixin

from ..config import SessionConfig
from ..middleware import SessionMiddleware
from . import store_from_url
from ._proxy import SessionProxy

if t.TYPE_CHECKING:
    from flask import Flask
    from flask.wrappers import Request, Response

    from ..session import Session
    from ..stores.base import Store

__all__ = ["FlaskSession", "WsgiSession", "WsgiSessionInterface", "config_from_app"]

#: The key under which the middleware is kept in ``app.extensions``.
EXTENSION_KEY = "wsgi_session"


class FlaskSession(SessionProxy, SessionMixin):
    """The object ``flask.session`` is: a :class:`~flask.sessions.SessionMixin`
    over the request's :class:`~wsgi_session.Session`.

    The mapping API goes straight to the wsgi_session session, and so do
    :meth:`renew`, :meth:`destroy`, :meth:`set_longterm`, :attr:`id` and the
    other members of :class:`~wsgi_session.Session` (:attr:`raw` is the
    session itself). Flask's attributes mean:

    * :attr:`permanent` — the long-term flag (``set_longterm``), not a
      ``"_permanent"`` key;
    * :attr:`new` — the session has not been stored yet;
    * :attr:`modified` — a key was set or deleted through this object in this
      request. Setting it to ``True`` asks for a write even if nothing
      changed (``update_now``); it is never *needed* for nested changes;
    * :attr:`accessed` — the request used the session (Flask sets it too).
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self._modified = False
        self._accessed = False

    # -- the mapping --------------------------------------------------------

    def __setitem__(self, key: str, value: t.Any) -> None:
        self._session[key] = value
        self._modified = True

    def __delitem__(self, key: str) -> None:
        del self._session[key]
        self._modified = True

    def clear(self) -> None:
        """Remove every key (the session and its id stay: see :meth:`destroy`)."""
        self._session.clear()
        self._modified = True

    # -- Flask's SessionMixin ------------------------------------------------

    @property
    def permanent(self) -> bool:
        """``True`` for a long-term session: ``PERMANENT_SESSION_LIFETIME``
        (``longterm_lifetime``) and a persistent cookie. Kept with the
        session, so it stays set on later requests until set to ``False``."""
        return self._session.longterm

    @permanent.setter
    def permanent(self, value: bool) -> None:
        self._session.set_longterm(bool(value))

    @property
    def new(self) -> bool:  # type: ignore[override]
        """``True`` until the session has been stored (``is_new``)."""
        return self._session.is_new

    @property
    def modified(self) -> bool:
        """Whether a key was set or deleted through this object."""
        return self._modified

    @modified.setter
    def modified(self, value: bool) -> None:
        if value:
            self._session.update_now()
        self._modified = bool(value)

    @property
    def accessed(self) -> bool:
        """Whether the request used the session (the middleware then adds
        ``Vary: Cookie`` itself; Flask is not asked to)."""
        return self._accessed or self._session.accessed

    @accessed.setter
    def accessed(self, value: bool) -> None:
        self._accessed = bool(value)

    # wsgi_session's own API (id, renew, destroy, ...) comes from SessionProxy;
    # here Flask-Login's signals already renew the id on login and logout.


class UnwrappedSession(NullSession):
    """``flask.session`` when the request did not pass through the middleware
    (``app.test_request_context()``, or ``app.wsgi_app`` replaced): reads
    see an empty session, writes raise a :class:`RuntimeError` that says why."""

    def _fail(self, *args: t.Any, **kwargs: t.Any) -> t.NoReturn:
        raise RuntimeError(
            "flask.session is unavailable: this request did not pass through "
            "wsgi_session's SessionMiddleware (app.test_request_context(), or "
            "app.wsgi_app replaced after WsgiSession.init_app()?)"
        )

    __setitem__ = __delitem__ = clear = pop = popitem = update = setdefault = _fail
    del _fail


class WsgiSessionInterface(SessionInterface):
    """Hands Flask the session the middleware put in the environ.

    :param environ_key: where the middleware puts it (``config.environ_key``).

    :meth:`save_session` does nothing: the middleware commits the changes and
    sets ``Set-Cookie`` and ``Vary`` once the response is complete, so Flask
    adds no second ``Vary: Cookie`` and no cookie of its own.
    """

    null_session_class = UnwrappedSession

    def __init__(self, environ_key: str = "session") -> None:
        self.environ_key = environ_key

    def open_session(self, app: Flask, request: Request) -> FlaskSession | None:
        session = request.environ.get(self.environ_key)
        if session is None:
            return None  # Flask then uses null_session_class
        return FlaskSession(session)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Nothing to do: the middleware saves (see the class docstring)."""


def config_from_app(app: Flask) -> SessionConfig:
    """The :class:`~wsgi_session.SessionConfig` that ``app.config`` describes.

    ==================================  =====================================
    ``app.config``                      ``SessionConfig``
    ==================================  =====================================
    ``WSGI_SESSION_SECRET_KEYS``        ``secret_keys``; default ``SECRET_KEY``
                                        then ``SECRET_KEY_FALLBACKS`` newest
                                        first (Flask lists them oldest first)
    ``SESSION_COOKIE_NAME``             ``cookie_name``
    ``SESSION_COOKIE_DOMAIN``           ``cookie_domain``
    ``SESSION_COOKIE_PATH``             ``cookie_path`` (else
                                        ``APPLICATION_ROOT``)
    ``SESSION_COOKIE_SECURE``           ``cookie_secure``
    ``SESSION_COOKIE_HTTPONLY``         ``cookie_http_only``
    ``SESSION_COOKIE_SAMESITE``         ``cookie_same_site`` (Flask's default
                                        ``None`` keeps ours, ``"Lax"``)
    ``SESSION_COOKIE_PARTITIONED``      ``cookie_partitioned``
    ``PERMANENT_SESSION_LIFETIME``      ``longterm_lifetime``
    ``WSGI_SESSION_CONFIG``             a dict of any other fields; wins
    ==================================  =====================================

    :raises ValueError: naming the setting when a value is not acceptable,
        e.g. a ``SECRET_KEY`` shorter than 32 bytes.
    """
    conf = app.config
    keys = conf.get("WSGI_SESSION_SECRET_KEYS")
    source = "WSGI_SESSION_SECRET_KEYS"
    if keys is None:
        if not app.secret_key:
            raise ValueError("wsgi_session needs SECRET_KEY (or WSGI_SESSION_SECRET_KEYS) to sign ids")
        fallbacks = conf.get("SECRET_KEY_FALLBACKS") or []
        keys = [app.secret_key, *reversed(fallbacks)]  # Flask lists fallbacks oldest first
        source = "SECRET_KEY/SECRET_KEY_FALLBACKS"
    fields: dict[str, t.Any] = {
        "cookie_name": conf.get("SESSION_COOKIE_NAME") or "session",
        "cookie_domain": conf.get("SESSION_COOKIE_DOMAIN") or None,
        "cookie_path": conf.get("SESSION_COOKIE_PATH") or conf.get("APPLICATION_ROOT") or "/",
        "cookie_secure": bool(conf.get("SESSION_COOKIE_SECURE", False)),
        "cookie_http_only": bool(conf.get("SESSION_COOKIE_HTTPONLY", True)),
        "cookie_partitioned": bool(conf.get("SESSION_COOKIE_PARTITIONED", False)),
        "longterm_lifetime": app.permanent_session_lifetime,
    }
    if conf.get("SESSION_COOKIE_SAMESITE") is not None:
        fields["cookie_same_site"] = conf["SESSION_COOKIE_SAMESITE"]
    fields.update(conf.get("WSGI_SESSION_CONFIG") or {})
    fields.setdefault("secret_keys", keys)
    try:
        return SessionConfig(**fields)
    except ValueError as exc:
        hint = f" (keys from {source})" if "secret_keys" in str(exc) else ""
        raise ValueError(f"wsgi_session configuration from app.config: {exc}{hint}") from exc


class WsgiSession:
    """The Flask extension: server-side ``flask.session``.

    :param app: the application; or call :meth:`init_app` later (factories).
    :param config: a :class:`~wsgi_session.SessionConfig` to use as is;
        default: built from ``app.config`` by :func:`config_from_app`.
    :param store: where sessions live; default the store that
        ``WSGI_SESSION_STORE_URL`` names (``redis://...`` or a SQLAlchemy URL,
        see :func:`~wsgi_session.contrib.store_from_url`), else a
        :class:`~wsgi_session.stores.MemoryStore` per application.
    :param renew_on_login: give the session a new id when Flask-Login sends
        ``user_logged_in`` or ``user_logged_out`` (session fixation defence).
        Default ``True``; ignored when Flask-Login is not installed.

    .. code-block:: python

        sessions = WsgiSession(store=RedisStore(redis.Redis.from_url(url)))
        def create_app():
            app = Flask(__name__); app.config.from_prefixed_env()
            sessions.init_app(app); return app

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        app: Flask | None = None,
        config: SessionConfig | None = None,
        store: Store | None = None,
        *,
        renew_on_login: bool = True,
    ) -> None:
        self.config = config
        self.store = store
        self.renew_on_login = renew_on_login
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> SessionMiddleware:
        """Wrap ``app.wsgi_app`` and install the session interface; returns
        the middleware (also ``app.extensions["wsgi_session"]``).

        :raises RuntimeError: if ``app`` already has it.
        :raises ValueError: if the configuration is not acceptable.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("WsgiSession is already installed on this application")
        config = self.config or config_from_app(app)
        store = self.store
        if store is None and app.config.get("WSGI_SESSION_STORE_URL"):
            store = store_from_url(app.config["WSGI_SESSION_STORE_URL"])
        middleware = SessionMiddleware(app.wsgi_app, config, store)
        app.wsgi_app = middleware  # type: ignore[method-assign]
        app.session_interface = WsgiSessionInterface(config.environ_key)
        app.extensions[EXTENSION_KEY] = middleware
        if self.renew_on_login:
            _connect_flask_login(app, config.environ_key)
        return middleware

    @staticmethod
    def get_middleware(app: Flask | None = None) -> SessionMiddleware:
        """The middleware of ``app`` (default: the current app), e.g. for
        ``.close()``, ``.advanced`` or ``.counters()``."""
        target = app if app is not None else current_app
        return t.cast("SessionMiddleware", target.extensions[EXTENSION_KEY])


def _connect_flask_login(app: Flask, environ_key: str) -> None:
    """Renew the session id on Flask-Login's login and logout signals."""
    try:
        signals = importlib.import_module("flask_login.signals")
    except ImportError:
        return

    def renew(sender: Flask, **extra: t.Any) -> None:
        session = request.environ.get(environ_key) if has_request_context() else None
        if session is not None:
            session.renew()

    # weak=False: the receiver is a closure that nothing else keeps alive.
    signals.user_logged_in.connect(renew, sender=app, weak=False)
    signals.user_logged_out.connect(renew, sender=app, weak=False)
