"""Two middleware instances over one real backend stand for two workers.

Every test runs against Redis, PostgreSQL, MariaDB and a SQLite file. The
middleware instances share nothing but the store's backend, exactly like two
gunicorn workers (or hosts).
"""

from __future__ import annotations

import threading
import typing as t
from datetime import timedelta

import pytest
import redis
import sqlalchemy as sa
from webtest import TestApp

from wsgi_session import SessionConfig, SessionMiddleware

from .conftest import SharedBackend

if t.TYPE_CHECKING:
    from pathlib import Path


SECRET = "two-workers-secret-0123456789abcdefghij"
ENCRYPTION_KEY = "two-workers-encryption-key-0123456789abcd"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Backend(SharedBackend):
    """Also reads the shared namespace raw, and tampers with it."""

    def raw_values(self) -> list[bytes]:
        """Everything stored, as raw bytes (to look for plaintext)."""
        if self.kind == "redis":
            client = redis.Redis.from_url(self.url)
            out: list[bytes] = []
            for key in client.scan_iter(match=f"{self.namespace}:*"):
                out.extend(v for pair in client.hgetall(key).items() for v in pair)
            return out
        engine = sa.create_engine(self.url)
        with engine.connect() as connection:
            rows = connection.execute(sa.text(f"SELECT * FROM {self.namespace}")).all()
        engine.dispose()
        return [value if isinstance(value, bytes) else str(value).encode() for row in rows for value in row]

    def swap(self, first: str, second: str) -> None:
        """Swap the stored data of two sessions, behind the middleware's back."""
        if self.kind == "redis":
            client = redis.Redis.from_url(self.url)
            a, b = f"{self.namespace}:{first}", f"{self.namespace}:{second}"
            data_a, data_b = client.hgetall(a), client.hgetall(b)
            client.delete(a, b)
            client.hset(a, mapping=data_b)
            client.hset(b, mapping=data_a)
            return
        engine = sa.create_engine(self.url)
        with engine.begin() as connection:
            table = sa.Table(self.namespace, sa.MetaData(), autoload_with=connection)
            rows = {row.id: row.data for row in connection.execute(sa.select(table.c.id, table.c.data)).all()}
            for source, target in ((first, second), (second, first)):
                connection.execute(table.update().where(table.c.id == target).values(data=rows[source]))
        engine.dispose()


@pytest.fixture(params=["redis", "postgresql", "mariadb", "sqlite"])
def backend(request: pytest.FixtureRequest, namespace: str, tmp_path: Path) -> t.Iterator[Backend]:
    made = Backend(request.param, namespace, tmp_path / "sessions.sqlite3")
    yield made
    made.cleanup()


def counter_app(environ: dict[str, t.Any], start_response: t.Any) -> list[bytes]:
    session = environ["session"]
    path = environ["PATH_INFO"]
    if path.startswith("/inc/"):
        key = path[len("/inc/") :]
        session[key] = session.get(key, 0) + 1
    elif path.startswith("/set/"):
        key, _, value = path[len("/set/") :].partition("=")
        session[key] = value
    elif path == "/renew":
        session.renew()
    elif path == "/destroy":
        session.destroy()
    body = repr(sorted(session.items())).encode() if path != "/plain" else b"plain"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


@pytest.fixture
def workers(backend: Backend) -> t.Iterator[t.Callable[..., SessionMiddleware]]:
    made: list[SessionMiddleware] = []

    def make(clock: Clock | None = None, **settings: t.Any) -> SessionMiddleware:
        config = SessionConfig(secret_keys=[SECRET], **settings)
        middleware = SessionMiddleware(counter_app, config, store=backend.store(), clock=clock)
        made.append(middleware)
        return middleware

    yield make
    for middleware in made:
        middleware.close()


def browser(middleware: SessionMiddleware, cookie: str | None = None) -> TestApp:
    app = TestApp(middleware)
    if cookie:
        app.set_cookie("session", cookie)
    return app


def test_read_your_writes_both_ways(workers: t.Callable[..., SessionMiddleware]) -> None:
    one, two = workers(), workers()
    first = browser(one)
    assert first.get("/inc/n").text == "[('n', 1)]"
    cookie = first.cookies["session"]
    second = browser(two, cookie)
    assert second.get("/inc/n").text == "[('n', 2)]"
    assert first.get("/inc/n").text == "[('n', 3)]"
    assert second.get("/").text == "[('n', 3)]"


def test_concurrent_different_keys_merge(workers: t.Callable[..., SessionMiddleware]) -> None:
    one, two = workers(), workers()
    seed = browser(one)
    seed.get("/inc/seed")
    cookie = seed.cookies["session"]
    rounds = 15

    def hammer(middleware: SessionMiddleware, key: str) -> None:
        client = browser(middleware, cookie)
        for _ in range(rounds):
            client.get(f"/inc/{key}")

    threads = [
        threading.Thread(target=hammer, args=(worker, f"{name}{i}"))
        for i in range(2)
        for name, worker in (("a", one), ("b", two))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = sorted({"seed": 1, **{f"{n}{i}": rounds for i in range(2) for n in "ab"}}.items())
    assert browser(one, cookie).get("/").text == repr(expected)
    assert browser(two, cookie).get("/").text == repr(expected)


def test_survives_restart(workers: t.Callable[..., SessionMiddleware]) -> None:
    before = workers()
    client = browser(before)
    client.get("/set/user=ada")
    cookie = client.cookies["session"]
    before.close()
    after = workers()
    assert browser(after, cookie).get("/").text == "[('user', 'ada')]"


def test_expiry_is_honoured_after_reload(workers: t.Callable[..., SessionMiddleware]) -> None:
    clock = Clock()
    writer = workers(clock, lifetime=timedelta(minutes=30))
    client = browser(writer)
    client.get("/set/user=ada")
    cookie = client.cookies["session"]
    clock.now += 29 * 60
    fresh = workers(clock, lifetime=timedelta(minutes=30))
    assert browser(fresh, cookie).get("/").text == "[('user', 'ada')]"
    clock.now += 31 * 60  # idle for 31 minutes since the last write
    later = workers(clock, lifetime=timedelta(minutes=30))
    response = browser(later, cookie).get("/")
    assert response.text == "[]"
    assert "session=;" in response.headers["Set-Cookie"]  # the dead token is cleared


def test_destroy_and_renew_remove_stored_data(workers: t.Callable[..., SessionMiddleware]) -> None:
    one, two = workers(), workers()
    client = browser(one)
    client.get("/set/user=ada")
    old = client.cookies["session"]
    old_id = old.split(".")[0]
    client.get("/renew")
    new = client.cookies["session"]
    assert new != old
    assert one.advanced.exists(old_id) is False
    assert browser(two, old).get("/").text == "[]"
    assert browser(two, new).get("/").text == "[('user', 'ada')]"
    client.get("/destroy")
    assert one.store.load(new.split(".")[0]) is None
    assert browser(two, new).get("/").text == "[]"


def test_nothing_stored_for_untouched_visitors(workers: t.Callable[..., SessionMiddleware]) -> None:
    one = workers()
    before = one.advanced.count()
    for path in ("/plain", "/", "/"):
        response = browser(one).get(path)
        assert "Set-Cookie" not in response.headers
    assert one.advanced.count() == before


def test_encryption_at_rest(backend: Backend, workers: t.Callable[..., SessionMiddleware]) -> None:
    sealed = workers(encryption_keys=[ENCRYPTION_KEY])
    first, second = browser(sealed), browser(sealed)
    first.get("/set/secret=PLAINTEXT-MARKER-ONE")
    second.get("/set/secret=PLAINTEXT-MARKER-TWO")
    raw = b"".join(backend.raw_values())
    assert raw, "nothing was stored"
    assert b"PLAINTEXT-MARKER" not in raw
    other_worker = workers(encryption_keys=[ENCRYPTION_KEY])
    assert "MARKER-ONE" in browser(other_worker, first.cookies["session"]).get("/").text
    one_id = first.cookies["session"].split(".")[0]
    two_id = second.cookies["session"].split(".")[0]
    backend.swap(one_id, two_id)
    reader = workers(encryption_keys=[ENCRYPTION_KEY])
    swapped = browser(reader, first.cookies["session"]).get("/")
    assert swapped.text == "[]"  # refused whole: a fresh session, not the other user's data
    assert reader.stats.unreadable_rows >= 1
    assert b"".join(backend.raw_values()) != b""  # the rows were left alone


def test_corrupt_row_gives_fresh_session_and_is_left_alone(
    backend: Backend, workers: t.Callable[..., SessionMiddleware]
) -> None:
    one = workers()
    client = browser(one)
    client.get("/set/user=ada")
    cookie = client.cookies["session"]
    session_id = cookie.split(".")[0]
    store = one.store
    record = store.load(session_id)
    assert record is not None
    from wsgi_session.record import SessionDiff

    store.apply(
        [
            SessionDiff(
                session_id, {"user": b"{not json"}, frozenset(), False,
                record.expires, record.absolute, record.longterm, record.created,
            )
        ]
    )  # fmt: skip
    reader = workers()
    response = browser(reader, cookie).get("/")
    assert response.status_int == 200
    assert response.text == "[]"
    assert reader.stats.unreadable_rows == 1
    still = store.load(session_id)
    assert still is not None
    assert still.values["user"] == b"{not json"
