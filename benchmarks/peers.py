"""The libraries people use today, configured as their docs suggest.

* **Beaker** ``SessionMiddleware`` (memory and ``ext:redis``) around the plain
  WSGI app, with a signed cookie, a 6-hour timeout like ours, explicit
  ``session.save()`` after writes and its defaults otherwise (it saves the
  access time on every request that loads a session). Its Redis keys get
  this run's prefix through a ``namespace_class`` that only renames keys.
* **Flask-Session** 0.8 (Redis, and SQLAlchemy on PostgreSQL through
  Flask-SQLAlchemy) inside the Flask app, with its defaults (permanent
  sessions, refreshed on every request).
* **Flask's cookie session** (``SecureCookieSessionInterface``): the data
  itself travels, signed, in the cookie (with the 20 KB session a 27 KB
  cookie, which browsers would drop: measured anyway, for the cost).
* **Flask alone**: the Flask app with no session use, the limit for the above.
"""

from __future__ import annotations

import typing as t
import warnings

from .apps import flask_app, wsgi_app
from .cleanup import delete_redis_keys, drop_postgres_tables
from .counting import Counters, counting_connect_args, counting_redis
from .settings import REDIS_URL, SECRET, Namespace
from .subjects import Subject, Target, Unavailable

if t.TYPE_CHECKING:
    from collections.abc import MutableMapping

_BEAKER_OPTIONS = {
    "session.key": "session",
    "session.secret": SECRET,
    "session.auto": False,
    "session.timeout": 6 * 3600,
    "session.httponly": True,
}


def _beaker(options: dict[str, t.Any], clear: t.Callable[[], None], counters: Counters) -> Target:
    try:
        from beaker.middleware import SessionMiddleware
    except ImportError as exc:
        raise Unavailable("pip install beaker") from exc

    def save(session: MutableMapping[str, t.Any]) -> None:
        session.save()  # type: ignore[attr-defined]

    app = wsgi_app(lambda environ: environ["beaker.session"], save)
    return Target(SessionMiddleware(app, {**_BEAKER_OPTIONS, **options}), clear=clear, counters=counters)


def beaker_memory(namespace: Namespace) -> Target:
    """Beaker's in-process memory backend."""
    from beaker.container import MemoryNamespaceManager

    return _beaker({"session.type": "memory"}, MemoryNamespaceManager.namespaces.clear, Counters())


def beaker_redis(namespace: Namespace) -> Target:
    """Beaker's ``ext:redis`` backend on a counting client."""
    try:
        from beaker.ext.redisnm import RedisNamespaceManager
    except ImportError as exc:
        raise Unavailable("pip install beaker") from exc

    prefix = namespace.redis_prefix("beaker-redis")

    class PrefixedNamespaceManager(RedisNamespaceManager):  # type: ignore[misc]
        """Beaker's manager with this run's prefix in front of its keys."""

        def _format_key(self, key: str | bytes) -> str:
            return prefix + str(super()._format_key(key))

    counters = Counters()
    client = counting_redis(REDIS_URL, counters.redis)
    options = {
        "session.type": "ext:redis",
        "session.url": client,
        "session.namespace_class": PrefixedNamespaceManager,
    }
    target = _beaker(options, lambda: _delete_beaker_keys(prefix), counters)
    target.close = client.close
    return target


def _delete_beaker_keys(prefix: str) -> None:
    delete_redis_keys(prefix + "*")
    delete_redis_keys(f"beaker_lock:{prefix}*")


def wsgi_peers() -> list[Subject]:
    """Beaker's subjects."""
    return [
        Subject(
            "beaker[memory]", "beaker-memory", beaker_memory, store="memory", shared=False, gunicorn=True
        ),
        Subject(
            "beaker[redis]",
            "beaker-redis",
            beaker_redis,
            store="redis",
            gunicorn=True,
            cleanup=lambda namespace: _delete_beaker_keys(namespace.redis_prefix("beaker-redis")),
        ),
    ]


# -- Flask ----------------------------------------------------------------------------------------


def _flask_session() -> MutableMapping[str, t.Any]:
    import flask

    return flask.session


def flask_alone(gunicorn: bool = True) -> Subject:
    """The Flask app without any session use."""
    return Subject(
        "flask",
        "flask",
        lambda namespace: Target(flask_app(None)),
        role="baseline",
        family="flask",
        gunicorn=gunicorn,
    )


def _flask_cookie(namespace: Namespace) -> Target:
    # The 20 KB session makes a 27 KB cookie; werkzeug warns (browsers drop
    # cookies over 4 KB), which the module docstring says once instead.
    warnings.filterwarnings("ignore", message="The 'session' cookie is too large", category=UserWarning)
    return Target(flask_app(_flask_session))


def flask_cookie() -> Subject:
    """Flask's built-in signed-cookie session."""
    return Subject(
        "flask cookie session",
        "flask-cookie",
        _flask_cookie,
        family="flask",
        store="cookie",
    )


def flask_session_redis(namespace: Namespace) -> Target:
    """Flask-Session's Redis interface on a counting client."""
    try:
        from flask_session import Session
    except ImportError as exc:
        raise Unavailable("pip install flask-session") from exc

    counters = Counters()
    client = counting_redis(REDIS_URL, counters.redis)
    prefix = namespace.redis_prefix("fs-redis")
    app = flask_app(_flask_session)
    app.config.update(SESSION_TYPE="redis", SESSION_REDIS=client, SESSION_KEY_PREFIX=prefix)
    Session(app)
    return Target(app, clear=lambda: delete_redis_keys(prefix + "*"), close=client.close, counters=counters)


def flask_session_postgresql(namespace: Namespace) -> Target:
    """Flask-Session's SQLAlchemy interface (Flask-SQLAlchemy) on PostgreSQL."""
    try:
        from flask_session import Session
        from flask_sqlalchemy import SQLAlchemy
    except ImportError as exc:
        raise Unavailable("pip install flask-session flask-sqlalchemy") from exc

    counters = Counters()
    table = namespace.table("fs-postgresql")
    app = flask_app(_flask_session)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=namespace.postgres_url,
        SESSION_TYPE="sqlalchemy",
        SESSION_SQLALCHEMY_TABLE=table,
        SQLALCHEMY_ENGINE_OPTIONS={
            "connect_args": counting_connect_args(namespace.postgres_url, counters.sql_statements)
        },
    )
    db = SQLAlchemy(app)
    app.config["SESSION_SQLALCHEMY"] = db
    Session(app)
    with app.app_context():
        engine = db.engine

    def clear() -> None:
        import sqlalchemy as sa

        with engine.begin() as conn:
            conn.execute(sa.text(f'DELETE FROM "{table}"'))

    return Target(app, clear=clear, close=engine.dispose, counters=counters)


def flask_peers() -> list[Subject]:
    """Flask-Session's subjects."""
    return [
        Subject(
            "flask-session[redis]",
            "fs-redis",
            flask_session_redis,
            family="flask",
            store="redis",
            gunicorn=True,
            cleanup=lambda namespace: delete_redis_keys(namespace.redis_prefix("fs-redis") + "*"),
        ),
        Subject(
            "flask-session[postgresql]",
            "fs-postgresql",
            flask_session_postgresql,
            family="flask",
            store="postgresql",
            gunicorn=True,
            cleanup=lambda namespace: drop_postgres_tables(namespace.table("fs-postgresql")),
        ),
    ]
