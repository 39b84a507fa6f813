"""A plain WSGI app for the multi-process tests, configured by environment.

``WSGI_SESSION_TEST_STORE`` picks the store: ``memory`` (default), a
``redis://`` URL, or an SQLAlchemy URL. ``WSGI_SESSION_TEST_NAMESPACE`` is the
Redis key prefix or SQL table name, so parallel test runs do not meet.

Routes (all answer JSON, with the serving worker's pid in ``X-Worker``):

* ``/inc?key=K`` — ``session[K] += 1``;
* ``/get`` — the whole session;
* ``/renew`` and ``/destroy``.
"""

from __future__ import annotations

import json
import os
import typing as t
from urllib.parse import parse_qs

from wsgi_session import SessionConfig, SessionMiddleware
from wsgi_session.stores import MemoryStore
from wsgi_session.stores.base import Store

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

SECRET = "integration-test-secret-0123456789abcdef"


def make_store() -> Store:
    """The store named by the environment."""
    url = os.environ.get("WSGI_SESSION_TEST_STORE", "memory")
    namespace = os.environ.get("WSGI_SESSION_TEST_NAMESPACE", "wsgi_session_test")
    if url == "memory":
        return MemoryStore()
    if url.startswith("redis://"):
        import redis

        from wsgi_session.stores import RedisStore

        return RedisStore(redis.Redis.from_url(url), prefix=namespace + ":")
    import sqlalchemy

    from wsgi_session.stores import SQLAlchemyStore

    return SQLAlchemyStore(sqlalchemy.create_engine(url, pool_size=8), table_name=namespace)


def counter_app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """Increment, read, renew or destroy, by path."""
    session = environ["session"]
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/inc":
        key = query.get("key", ["n"])[0]
        session[key] = session.get(key, 0) + 1
    elif path == "/renew":
        session.renew()
    elif path == "/destroy":
        session.destroy()
    body = json.dumps(dict(session)).encode()
    start_response(
        "200 OK",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("X-Worker", str(os.getpid())),
        ],
    )
    return [body]


app = SessionMiddleware(counter_app, SessionConfig(secret_keys=[SECRET]), store=make_store())
