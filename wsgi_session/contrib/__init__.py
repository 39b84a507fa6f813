"""Adapters that make wsgi_session feel native in each framework.

* :mod:`wsgi_session.contrib.flask` — ``WsgiSession``, a Flask extension:
  ``flask.session``, ``session.permanent``, ``flash()`` and Flask-Login work
  unchanged on top of the middleware.
* :mod:`wsgi_session.contrib.pyramid` — an ``ISessionFactory`` and
  ``config.include("wsgi_session.contrib.pyramid")``, configured from the ini
  file.
* :mod:`wsgi_session.contrib.bottle` — ``SessionPlugin``: the session as
  ``bottle.request.session`` or a ``session`` keyword argument.

Each adapter is thin: the :class:`~wsgi_session.SessionMiddleware` still does
all the work, outside the framework, and the adapter only presents the
request's :class:`~wsgi_session.Session` the way the framework's users expect.

This module holds what the adapters share and what does not depend on any
framework: reading a :class:`~wsgi_session.SessionConfig` from flat string
settings (an ini file, environment variables) with :func:`config_from_settings`,
and building a store from a URL with :func:`store_from_url`. Importing it
imports no framework.
"""

from __future__ import annotations

import dataclasses
import pkgutil
import typing as t
from datetime import timedelta

from ..config import SessionConfig

if t.TYPE_CHECKING:
    from ..stores.base import Store

__all__ = ["STORE_SETTINGS", "config_from_settings", "store_from_settings", "store_from_url"]

#: Annotations of fields that only code can supply (a callable, an object).
_OBJECT_TYPES = ("Callable", "Serializer")

#: Setting names (after the prefix) that choose the store, not the config.
STORE_SETTINGS = frozenset(("store", "store_factory", "store_url", "store_prefix", "store_table"))

_TRUE = frozenset(("true", "yes", "on", "1"))
_FALSE = frozenset(("false", "no", "off", "0"))
_NONE = frozenset(("", "none", "null"))


def _as_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{name}: {value!r} is not a boolean (use true/false)")


def _as_seconds(name: str, value: str) -> timedelta:
    try:
        return timedelta(seconds=float(value))
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not a number of seconds") from None


def _kinds() -> dict[str, tuple[str, bool]]:
    """``{field: (kind, optional)}`` for every ``SessionConfig`` field, read
    from its annotation, so a field added to the config is readable from
    settings without a change here."""
    kinds: dict[str, tuple[str, bool]] = {}
    for field in dataclasses.fields(SessionConfig):
        annotation = str(field.type)
        base, _, rest = annotation.partition(" | ")
        optional = "None" in rest
        if any(name in annotation for name in _OBJECT_TYPES):
            kind = "object"
        elif "Sequence" in base:
            kind = "list"
        elif base in ("bool", "int", "float", "timedelta"):
            kind = base
        else:
            kind = "str"  # str and the Literal aliases (Mode, Transport...)
        kinds[field.name] = (kind, optional)
    return kinds


_KINDS = _kinds()


def _convert(name: str, field: str, value: t.Any) -> t.Any:
    """One setting's string turned into the type of ``SessionConfig.<field>``.
    Values that are not strings were put there by code and pass unchanged
    (numbers for durations become seconds)."""
    kind, optional = _KINDS[field]
    if not isinstance(value, str):
        if kind == "timedelta" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return timedelta(seconds=value)
        return value
    if kind == "object":
        raise ValueError(f"{name}: {field!r} cannot be given as a string; pass the object from code")
    if optional and value.strip().lower() in _NONE:
        return None
    if kind == "list":
        return value.split()
    if kind == "bool":
        return _as_bool(name, value)
    if kind == "timedelta":
        return _as_seconds(name, value)
    if kind in ("int", "float"):
        try:
            return int(value) if kind == "int" else float(value)
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not a valid {kind}") from None
    return value.strip()


def config_from_settings(
    settings: t.Mapping[str, t.Any], prefix: str = "wsgi_session.", **overrides: t.Any
) -> SessionConfig:
    """Build a :class:`~wsgi_session.SessionConfig` from flat settings.

    Every key that starts with ``prefix`` names a ``SessionConfig`` field;
    string values are converted to the field's type:

    * lists (``secret_keys``, ``encryption_keys``, ``bind_ip_sources``):
      separated by whitespace or newlines, as in an ini file;
    * booleans: ``true``/``false``, ``yes``/``no``, ``on``/``off``, ``1``/``0``;
    * durations (``lifetime``, ``longterm_lifetime``, ``absolute_lifetime``,
      ``retry_after``...): seconds, e.g. ``21600``;
    * ``none`` or an empty value for the optional fields (``cookie_domain``,
      ``cookie_same_site``, ``absolute_lifetime``, ``bloom_filter``).

    Values that are not strings (put in the settings by code) are used as
    they are; that is also the only way to pass ``id_generator`` and
    ``serializer``. Keys in :data:`STORE_SETTINGS` are left for
    :func:`store_from_settings`. ``overrides`` are ``SessionConfig`` fields
    that win over the settings.

    .. code-block:: python

        config = config_from_settings({"wsgi_session.secret_keys": key,
                                       "wsgi_session.lifetime": "3600"})

    :raises ValueError: for an unknown field (a typo should fail the deploy,
        not silently keep a default) or a value that does not convert.
    """
    fields: dict[str, t.Any] = {}
    for name, value in settings.items():
        if not name.startswith(prefix):
            continue
        field = name[len(prefix) :]
        if field in STORE_SETTINGS:
            continue
        if field not in _KINDS:
            raise ValueError(f"unknown setting {name!r}: {field!r} is not a SessionConfig field")
        fields[field] = _convert(name, field, value)
    fields.update(overrides)
    if "secret_keys" not in fields:
        raise ValueError(f"{prefix}secret_keys is required (one or more keys of at least 32 bytes)")
    return SessionConfig(**fields)


def store_from_url(url: str, *, prefix: str | None = None, table_name: str | None = None) -> Store:
    """A store for ``url``: Redis for ``redis://``, ``rediss://`` and
    ``unix://``, otherwise a SQLAlchemy database URL.

    :param url: e.g. ``redis://127.0.0.1:6379/0`` or
        ``postgresql+psycopg2://app@db/app``, ``sqlite:///sessions.db``.
    :param prefix: the Redis key prefix (default ``"session:"``).
    :param table_name: the SQL table (default ``"sessions"``).

    Redis Cluster and Sentinel clients need more than a URL: build those in
    code (``RedisStore(RedisCluster(...))``) and pass the store.
    """
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        import redis

        from ..stores.redis import RedisStore

        client = redis.Redis.from_url(url)
        return RedisStore(client) if prefix is None else RedisStore(client, prefix=prefix)
    import sqlalchemy

    from ..stores.sqlalchemy import SQLAlchemyStore

    engine = sqlalchemy.create_engine(url)
    return SQLAlchemyStore(engine) if table_name is None else SQLAlchemyStore(engine, table_name=table_name)


def store_from_settings(settings: t.Mapping[str, t.Any], prefix: str = "wsgi_session.") -> Store | None:
    """The store the settings choose, or ``None`` (the in-process default).

    In order of precedence:

    * ``<prefix>store`` — a store object, put in the settings by code;
    * ``<prefix>store_factory`` — a callable, or its dotted name
      (``"myapp.sessions:make_store"``), called with the settings and
      returning a store: the way to a Redis Cluster or Sentinel from an ini
      file;
    * ``<prefix>store_url`` — see :func:`store_from_url`, with
      ``<prefix>store_prefix`` (Redis key prefix) and ``<prefix>store_table``
      (SQL table name).
    """
    store = settings.get(prefix + "store")
    if store is not None:
        if isinstance(store, str):
            raise ValueError(
                f"{prefix}store must be a store object; in an ini file use store_url or store_factory"
            )
        return t.cast("Store", store)
    factory = settings.get(prefix + "store_factory")
    if factory:
        if isinstance(factory, str):
            factory = pkgutil.resolve_name(factory.strip())
        return t.cast("Store", factory(settings))
    url = settings.get(prefix + "store_url")
    if not url:
        return None
    return store_from_url(
        str(url).strip(),
        prefix=settings.get(prefix + "store_prefix"),
        table_name=settings.get(prefix + "store_table"),
    )
