"""The example application: a visit counter, a login and a logout.

Plain Flask, with :class:`~wsgi_session.SessionMiddleware` wrapped around
``app.wsgi_app``. Views reach the session as ``request.environ["session"]``
(Flask's own cookie session is not used).

Configuration comes from the environment:

``WSGI_SESSION_SECRET``
    The signing secret, at least 32 bytes. Unset: a random one is generated
    at start-up (with a warning), so sessions do not survive a restart and
    differ between worker processes.
``WSGI_SESSION_STORE_URL``
    Where sessions are kept; see :func:`make_store`. Unset: in process memory.

``gunicorn example_app.app:app`` serves :data:`app`, which is created on
first access so that importing :func:`create_app` has no side effects.
"""

from __future__ import annotations

import logging
import os
import secrets
import typing as t

from flask import Flask, Response, redirect, render_template_string, request, url_for

from wsgi_session import SessionConfig, SessionMiddleware
from wsgi_session.stores import MemoryStore

if t.TYPE_CHECKING:
    from wsgi_session import Session
    from wsgi_session.stores import Store

log = logging.getLogger(__name__)

SECRET_ENV = "WSGI_SESSION_SECRET"
STORE_URL_ENV = "WSGI_SESSION_STORE_URL"
MAX_USERNAME = 64

PAGE = """\
<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>wsgi_session example</title></head>
<body>
  <h1>wsgi_session example</h1>
  {% if error %}<p style="color: #b00">{{ error }}</p>{% endif %}
  <p>You have visited this page <strong>{{ visits }}</strong> time{{ "" if visits == 1 else "s" }}
     in this session.</p>
  {% if user %}
    <p>Logged in as <strong>{{ user }}</strong>.</p>
    <form method="post" action="{{ url_for('logout') }}"><button>Log out</button></form>
  {% else %}
    <form method="post" action="{{ url_for('login') }}">
      <label>Username <input name="username" maxlength="{{ max_username }}" required></label>
      <label><input type="checkbox" name="remember" value="1"> Remember me</label>
      <button>Log in</button>
    </form>
  {% endif %}
  <h2>Session state</h2>
  <table>
    <tr><th align="left">id</th><td><code>{{ state.id_prefix }}…</code></td></tr>
    <tr><th align="left">is_new</th><td>{{ state.is_new }}</td></tr>
    <tr><th align="left">keys</th><td>{{ state.keys | join(", ") }}</td></tr>
    <tr><th align="left">longterm</th><td>{{ state.longterm }}</td></tr>
  </table>
</body>
</html>
"""


def make_store() -> Store:
    """The session store named by ``WSGI_SESSION_STORE_URL``.

    * unset or empty: :class:`~wsgi_session.stores.MemoryStore` (the default,
      this process only);
    * ``redis://`` or ``rediss://``: :class:`~wsgi_session.stores.RedisStore`
      on ``redis.Redis.from_url(url)``;
    * anything else is a SQLAlchemy URL, e.g. ``sqlite:///sessions.db``:
      :class:`~wsgi_session.stores.SQLAlchemyStore` on
      ``sqlalchemy.create_engine(url)``.
    """
    url = os.environ.get(STORE_URL_ENV, "").strip()
    if not url:
        return MemoryStore()
    if url.startswith(("redis://", "rediss://")):
        import redis

        from wsgi_session.stores import RedisStore

        return RedisStore(redis.Redis.from_url(url))
    import sqlalchemy

    from wsgi_session.stores import SQLAlchemyStore

    return SQLAlchemyStore(sqlalchemy.create_engine(url))


def load_secret() -> str:
    """``WSGI_SESSION_SECRET``, or a random development secret (logged loudly)."""
    secret = os.environ.get(SECRET_ENV)
    if secret:
        return secret
    log.warning(
        "%s is not set: using a random development secret. Sessions will not survive a "
        "restart and will not work across worker processes. Set it in production!",
        SECRET_ENV,
    )
    return secrets.token_urlsafe(32)


def current_session() -> Session:
    """The session of the request being handled."""
    return t.cast("Session", request.environ["session"])


class SessionState(t.NamedTuple):
    """What the page shows about the session itself."""

    id_prefix: str
    is_new: bool
    keys: list[str]
    longterm: bool


def session_state(session: Session) -> SessionState:
    """The session's identity and flags, and the keys it holds now."""
    return SessionState(session.id[:8], session.is_new, sorted(session), session.longterm)


def render_page(visits: int, error: str | None = None, status: int = 200) -> tuple[str, int]:
    """The page, with the session's current state."""
    session = current_session()
    return (
        render_template_string(
            PAGE,
            error=error,
            visits=visits,
            user=session.get("user"),
            state=session_state(session),
            max_username=MAX_USERNAME,
        ),
        status,
    )


def index() -> tuple[str, int]:
    """Count the visit and show the page."""
    session = current_session()
    session["visits"] = session.get("visits", 0) + 1
    return render_page(session["visits"])


def login() -> Response | tuple[str, int]:
    """Log in: a new session id (fixation defence), then the user name."""
    session = current_session()
    username = request.form.get("username", "").strip()
    if not username or len(username) > MAX_USERNAME:
        error = f"Enter a username of 1 to {MAX_USERNAME} characters."
        return render_page(session.get("visits", 0), error, 400)
    session.renew()
    session["user"] = username
    session.set_longterm(request.form.get("remember") == "1")
    return redirect(url_for("index"), 303)


def logout() -> Response:
    """Log out: delete the session and the client's cookie."""
    current_session().destroy()
    return redirect(url_for("index"), 303)


def create_app() -> Flask:
    """The Flask application with :class:`~wsgi_session.SessionMiddleware`
    around it, configured from the environment."""
    app = Flask(__name__)
    app.add_url_rule("/", view_func=index)
    app.add_url_rule("/login", view_func=login, methods=["POST"])
    app.add_url_rule("/logout", view_func=logout, methods=["POST"])
    config = SessionConfig(secret_keys=[load_secret()])
    app.wsgi_app = SessionMiddleware(app.wsgi_app, config, store=make_store())  # type: ignore[method-assign]
    return app


def __getattr__(name: str) -> t.Any:
    """``app``: one application, created on first access (for gunicorn)."""
    if name == "app":
        global app
        app = create_app()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
