"""Where the example keeps its sessions and how it signs them, from the environment.

``WSGI_SESSION_SECRET``
    The signing secret(s), newest first, separated by whitespace (each at
    least 32 bytes; more than one is key rotation). Unset: a random secret is
    generated at start-up with a warning (``FLASK_SECRET_KEY`` works too).
``WSGI_SESSION_STORE_URL``
    Where sessions live. Unset: the embedded default, a SQLite file
    (:data:`DEFAULT_SQLITE_PATH`) through
    :class:`~wsgi_session.stores.SQLAlchemyStore` — nothing to start.
    ``redis://``/``rediss://``/``unix://`` URLs give a
    :class:`~wsgi_session.stores.RedisStore`; anything else is a SQLAlchemy
    URL (``postgresql+psycopg2://app@db/app``, ``sqlite:////tmp/s.db``...).
``WSGI_SESSION_STORE_NAMESPACE``
    Keeps this app's sessions apart from others in the same Redis database or
    SQL schema (default ``example``): Redis key prefixes ``example:session:``
    and ``example:api:``, SQL tables ``example_sessions`` and
    ``example_api_sessions``.
"""

from __future__ import annotations

import logging
import os
import secrets
import typing as t
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from wsgi_session.contrib import store_from_url

if t.TYPE_CHECKING:
    from wsgi_session.stores.base import Store

log = logging.getLogger(__name__)

SECRET_ENV = "WSGI_SESSION_SECRET"
STORE_URL_ENV = "WSGI_SESSION_STORE_URL"
NAMESPACE_ENV = "WSGI_SESSION_STORE_NAMESPACE"

#: The embedded default store: a SQLite file next to this package (git-ignored).
DEFAULT_SQLITE_PATH = Path(__file__).resolve().parent / "sessions.sqlite3"

_REDIS_SCHEMES = ("redis", "rediss", "unix")


def secret_keys() -> list[str]:
    """``WSGI_SESSION_SECRET`` split on whitespace (newest first), or one
    random development secret, logged loudly."""
    keys = os.environ.get(SECRET_ENV, "").split()
    if keys:
        return keys
    log.warning(
        "%s is not set: using a random development secret. Sessions end when the server "
        "restarts, and without --preload gunicorn's workers would not share them. "
        "Set it in production!",
        SECRET_ENV,
    )
    return [secrets.token_urlsafe(48)]


def store_url() -> str:
    """The store's URL: ``WSGI_SESSION_STORE_URL`` or the SQLite file."""
    return os.environ.get(STORE_URL_ENV, "").strip() or f"sqlite:///{DEFAULT_SQLITE_PATH}"


def namespace() -> str:
    """``WSGI_SESSION_STORE_NAMESPACE`` (default ``example``)."""
    return os.environ.get(NAMESPACE_ENV, "").strip() or "example"


def is_redis(url: str) -> bool:
    """Whether ``url`` names a Redis server."""
    return urlsplit(url).scheme.lower() in _REDIS_SCHEMES


class StoreInfo(t.NamedTuple):
    """What the state page says about a store."""

    kind: str
    where: str
    location: str


def make_store(url: str, name: str) -> tuple[Store, StoreInfo]:
    """The store for ``url`` with its own key prefix or table ``name``
    (``"session"`` or ``"api"``) inside :func:`namespace`."""
    ns = namespace()
    if is_redis(url):
        prefix = f"{ns}:{name}:"
        store = store_from_url(url, prefix=prefix)
        return store, StoreInfo("Redis", redact(url), f"hash at {prefix}<id>")
    table = f"{ns}_sessions" if name == "session" else f"{ns}_{name}_sessions"
    store = store_from_url(url, table_name=table)
    kind = "SQLite file" if url.startswith("sqlite") else "SQL database"
    return store, StoreInfo(kind, redact(url), f"row in table {table}")


def redact(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
