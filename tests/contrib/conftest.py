"""Fixtures shared by the framework adapter tests.

* ``redis_store``: a :class:`~wsgi_session.stores.RedisStore` on the Redis at
  ``WSGI_SESSION_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) with a key
  prefix unique to the test, whose keys are deleted afterwards. The service
  rule of ``tests/services.py`` applies: skipped when Redis cannot be
  reached, failed when the ``CI`` variable is set.
* :func:`vary_tokens`: every ``Vary`` token of a response, lower-cased, so a
  test can assert that ``cookie`` appears exactly once.
* :func:`drop_session_cookie`: what a browser restart does to a webtest
  client's browser-session cookie.
"""

from __future__ import annotations

import typing as t
import uuid

import pytest
from services import REDIS_URL, service_unavailable

__all__ = ["REDIS_URL", "drop_session_cookie", "vary_tokens"]


@pytest.fixture
def redis_store() -> t.Iterator[t.Any]:
    import redis

    from wsgi_session.stores import RedisStore

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=5)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        client.close()
        service_unavailable(f"Redis at {REDIS_URL} is unreachable: {exc}")
    prefix = f"wsgi_session_test:contrib:{uuid.uuid4().hex}:"
    try:
        yield RedisStore(client, prefix=prefix)
    finally:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()


def vary_tokens(response: t.Any) -> list[str]:
    """All ``Vary`` tokens of a webtest response, lower-cased, in order."""
    return [
        token.strip().lower()
        for key, value in response.headerlist
        if key.lower() == "vary"
        for token in value.split(",")
    ]


def drop_session_cookie(client: t.Any, name: str = "session") -> None:
    """Remove cookie ``name`` from a webtest client's jar, keeping the others."""
    for cookie in list(client.cookiejar):
        if cookie.name == name:
            client.cookiejar.clear(cookie.domain, cookie.path, cookie.name)


def assert_counts_up(client: t.Any, path: str = "/") -> t.Any:
    """Three requests to a counter view: 1, 2, 3, with exactly one
    ``Set-Cookie`` (on the first) and none once the cookie is set. Returns
    the third response."""
    first = client.get(path)
    assert first.text == "1"
    assert len([v for k, v in first.headerlist if k == "Set-Cookie"]) == 1
    assert client.get(path).text == "2"
    third = client.get(path)
    assert third.text == "3"
    assert "Set-Cookie" not in third.headers  # no noise once the cookie is set
    return third
