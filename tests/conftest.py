"""Shared fixtures for the core (in-memory store) test suite.

* :class:`FakeClock` — a movable epoch clock passed as ``clock=`` to the
  middleware, so expiry is tested without sleeping.
* ``make_middleware`` — builds :class:`SessionMiddleware` instances and closes
  them at teardown (each one may start a sweep thread).
* ``make_client`` — a :class:`webtest.TestApp` around a middleware.
* :func:`view_app` — turns ``view(session, environ) -> str | bytes | None``
  into a plain WSGI app, so each test states only what its view does.
* :func:`call_wsgi` — calls a WSGI app directly (thread-safe, unlike TestApp).
* :func:`run_in_threads` — runs callables on threads at once, re-raising their errors.

Test modules import the helpers as ``from core_testkit import ...``: this
module registers itself under that name, which another directory's
``conftest.py`` (tests/stores/) cannot shadow the way it shadows ``conftest``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import typing as t
from datetime import timedelta
from pathlib import Path

import pytest
import webtest
from werkzeug.test import EnvironBuilder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsgi_session import SessionConfig, SessionMiddleware
from wsgi_session.stores import MemoryStore

SECRET = "test-secret-key-0123456789-abcdefghijklmnop"
OLD_SECRET = "older-secret-key-0123456789-abcdefghijklmno"
OTHER_SECRET = "unrelated-secret-0123456789-abcdefghijklmn"
START = 1_800_000_000.0

sys.modules.setdefault("core_testkit", sys.modules[__name__])

View = t.Callable[[t.Any, dict[str, t.Any]], t.Any]


class FakeClock:
    """A clock the test moves by hand: ``clock()`` returns epoch seconds."""

    def __init__(self, start: float = START) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, amount: float | timedelta) -> float:
        """Move forward by ``amount`` seconds (or a timedelta); returns the new time."""
        if isinstance(amount, timedelta):
            amount = amount.total_seconds()
        self.now += amount
        return self.now


class RecordingStore(MemoryStore):
    """A MemoryStore that remembers every diff it was asked to apply."""

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self.applied: list[t.Any] = []

    def apply(self, diffs: t.Sequence[t.Any]) -> list[t.Any]:
        self.applied.extend(diffs)
        return super().apply(diffs)


def make_config(**overrides: t.Any) -> SessionConfig:
    """A valid config with a test secret; ``overrides`` are SessionConfig fields."""
    overrides.setdefault("secret_keys", [SECRET])
    return SessionConfig(**overrides)


def _body(value: t.Any) -> tuple[bytes, str]:
    if value is None:
        return b"", "text/plain"
    if isinstance(value, bytes):
        return value, "text/plain"
    if isinstance(value, str):
        return value.encode(), "text/plain"
    return json.dumps(value, sort_keys=True).encode(), "application/json"


def view_app(view: View, headers: t.Sequence[tuple[str, str]] = ()) -> t.Callable[..., t.Any]:
    """A plain WSGI app: runs ``view(environ["session"], environ)`` and answers
    200 with its return value: str or bytes as text/plain, anything else as
    JSON (sorted keys)."""

    def app(environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]) -> list[bytes]:
        body, content_type = _body(view(environ["session"], environ))
        start_response("200 OK", [("Content-Type", content_type), *headers])
        return [body]

    return app


def counter_view(session: t.Any, environ: dict[str, t.Any]) -> str:
    """Increment ``session["count"]`` and return it."""
    session["count"] = session.get("count", 0) + 1
    return str(session["count"])


def read_view(session: t.Any, environ: dict[str, t.Any]) -> t.Any:
    """Return the session's contents without changing anything."""
    return dict(session)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_middleware(clock: FakeClock) -> t.Iterator[t.Callable[..., SessionMiddleware]]:
    """``make_middleware(app, store=None, **config_fields)`` with the fake clock."""
    built: list[SessionMiddleware] = []

    def factory(app: t.Any, store: t.Any = None, config: SessionConfig | None = None, **fields: t.Any):
        middleware = SessionMiddleware(app, config or make_config(**fields), store, clock=clock)
        built.append(middleware)
        return middleware

    yield factory
    for middleware in built:
        middleware.close()


@pytest.fixture
def make_client(
    make_middleware: t.Callable[..., SessionMiddleware],
) -> t.Callable[..., tuple[webtest.TestApp, SessionMiddleware]]:
    """``make_client(view, **config_fields) -> (TestApp, middleware)``.

    ``view`` is either a ``view(session, environ)`` function (wrapped with
    :func:`view_app`) or, with ``wsgi=True``, a complete WSGI app.
    """

    def factory(
        view: t.Any,
        *,
        wsgi: bool = False,
        store: t.Any = None,
        extra_environ: dict[str, str] | None = None,
        **fields: t.Any,
    ) -> tuple[webtest.TestApp, SessionMiddleware]:
        app = view if wsgi else view_app(view)
        middleware = make_middleware(app, store=store, **fields)
        return webtest.TestApp(middleware, extra_environ=extra_environ or {}), middleware

    return factory


# -- inspecting responses ----------------------------------------------------


def parse_set_cookie(header: str) -> tuple[str, str, dict[str, str]]:
    """``"n=v; Path=/; HttpOnly"`` -> ``("n", "v", {"path": "/", "httponly": ""})``."""
    first, *rest = (part.strip() for part in header.split(";"))
    name, _, value = first.partition("=")
    attrs: dict[str, str] = {}
    for part in rest:
        key, _, val = part.partition("=")
        attrs[key.strip().lower()] = val.strip()
    return name, value, attrs


def set_cookies(response: t.Any, name: str = "session") -> list[tuple[str, dict[str, str]]]:
    """Every ``Set-Cookie`` for cookie ``name`` in a webtest response (or a
    header list): ``[(value, attributes)]``."""
    headers = response.headerlist if hasattr(response, "headerlist") else response
    out = []
    for key, value in headers:
        if key.lower() == "set-cookie":
            cookie_name, cookie_value, attrs = parse_set_cookie(value)
            if cookie_name == name:
                out.append((cookie_value, attrs))
    return out


def token_of(response: t.Any, name: str = "session") -> str:
    """The one session token a response sets (fails if there is not exactly one)."""
    cookies = set_cookies(response, name)
    assert len(cookies) == 1, f"expected one Set-Cookie for {name!r}, got {cookies!r}"
    return cookies[0][0]


def id_of(token: str) -> str:
    """The session id inside a token ``id.flags.issued.signature``."""
    return token.split(".", maxsplit=1)[0]


def header_values(response: t.Any, name: str) -> list[str]:
    headers = response.headerlist if hasattr(response, "headerlist") else response
    return [value for key, value in headers if key.lower() == name.lower()]


# -- calling WSGI apps without webtest (thread-safe) --------------------------


class WSGIResult(t.NamedTuple):
    status: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def code(self) -> int:
        return int(self.status.split()[0])


def build_environ(
    path: str = "/",
    headers: dict[str, str] | None = None,
    cookie: str | None = None,
    **environ_overrides: t.Any,
) -> dict[str, t.Any]:
    """A fresh WSGI environ; ``cookie`` is the raw ``Cookie`` header value."""
    all_headers = dict(headers or {})
    if cookie is not None:
        all_headers["Cookie"] = cookie
    builder = EnvironBuilder(path=path, headers=all_headers, environ_overrides=environ_overrides)
    try:
        return builder.get_environ()
    finally:
        builder.close()


def call_wsgi(app: t.Any, environ: dict[str, t.Any] | None = None, **kwargs: t.Any) -> WSGIResult:
    """Run one request through ``app`` the way a WSGI server would: iterate
    the body, support the legacy ``write()`` callable, always call ``close()``."""
    environ = environ if environ is not None else build_environ(**kwargs)
    captured: dict[str, t.Any] = {}
    out: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: t.Any = None) -> t.Any:
        if exc_info is not None and out:
            raise exc_info[1].with_traceback(exc_info[2])
        captured["status"] = status
        captured["headers"] = list(headers)
        return out.append

    result = app(environ, start_response)
    try:
        for chunk in result:
            out.append(chunk)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return WSGIResult(captured["status"], captured["headers"], b"".join(out))


# -- a client whose view runs whatever the test hands it ----------------------------


def run_in_threads(targets: t.Sequence[t.Callable[[], None]], timeout: float = 60) -> None:
    """Run each target on its own (daemon) thread and wait up to ``timeout``
    seconds for all of them; fail if one hangs, and re-raise the first error
    any of them raised."""
    errors: list[BaseException] = []

    def run(target: t.Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(target,), daemon=True) for target in targets]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    if errors:
        raise errors[0]


def read_session(session: t.Any) -> t.Any:
    """The default script: return the session's contents."""
    return dict(session)


class Scripted:
    """A webtest client around a middleware whose view runs ``fn(session)``
    given to :meth:`run`; the return value is the response body (see
    :func:`view_app`). Assertions inside ``fn`` fail the test."""

    def __init__(self, make_middleware: t.Callable[..., SessionMiddleware], store: t.Any, **fields: t.Any):
        self._fn: t.Callable[[t.Any], t.Any] = read_session
        app = view_app(lambda session, environ: self._fn(session))
        self.middleware = make_middleware(app, store, **fields)
        self.client = webtest.TestApp(self.middleware)

    def run(self, fn: t.Callable[[t.Any], t.Any] | None = None, path: str = "/", **kwargs: t.Any) -> t.Any:
        """One GET request whose view calls ``fn(session)`` (default: read all)."""
        self._fn = fn or read_session
        return self.client.get(path, **kwargs)

    @property
    def store(self) -> t.Any:
        return self.middleware.store

    @property
    def cookie(self) -> str | None:
        """The session token in the client's cookie jar, if any."""
        return self.client.cookies.get(self.middleware.config.effective_cookie_name)

    @property
    def session_id(self) -> str:
        cookie = self.cookie
        assert cookie, "the client holds no session cookie"
        return id_of(cookie)

    def record(self, session_id: str | None = None) -> t.Any:
        """The raw stored record of the client's session (or of ``session_id``)."""
        return self.store.load(session_id or self.session_id)


@pytest.fixture
def scripted(make_middleware: t.Callable[..., SessionMiddleware]) -> t.Callable[..., Scripted]:
    """``scripted(store=None, **config_fields) -> Scripted``."""

    def factory(store: t.Any = None, **fields: t.Any) -> Scripted:
        return Scripted(make_middleware, store, **fields)

    return factory


@pytest.fixture(scope="session")
def redis_client() -> t.Iterator[t.Any]:
    """A client of the suite's Redis (the service rule applies when it is down)."""
    import redis
    from services import REDIS_URL, service_unavailable

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_unavailable(f"Redis at {REDIS_URL} is unreachable: {exc}")
    yield client
    client.close()
