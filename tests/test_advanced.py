"""middleware.advanced: store-level operations on sessions by id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from core_testkit import SECRET, START, id_of, set_cookies

from wsgi_session.signing import Token, TokenSigner

HOUR = 3600.0


@pytest.fixture
def app(scripted):
    return scripted(lifetime=timedelta(hours=1))


def login(app, **values):
    app.client.reset()
    response = app.run(lambda s: s.update(values or {"user": "alice"}))
    [(token, _)] = set_cookies(response)
    return token


def test_session_advanced_is_the_middleware_advanced(app):
    def fn(session):
        assert session.advanced is app.middleware.advanced

    app.run(fn)


def test_verify(app, clock):
    advanced = app.middleware.advanced
    token = login(app)
    assert advanced.verify(token) == id_of(token)
    assert advanced.verify("garbage") is None
    assert advanced.verify(token[:-2] + "AA") is None
    unknown = TokenSigner([SECRET.encode()]).dumps(Token("Q" * 32, False, 0))
    assert advanced.verify(unknown) is None  # signed, but no such session
    clock.advance(HOUR)
    assert advanced.verify(token) is None  # expired


def test_verify_with_binding(scripted):
    app = scripted(bind_user_agent=True)
    app.client.extra_environ = {"HTTP_USER_AGENT": "UA/1"}
    token = login(app)
    advanced = app.middleware.advanced
    assert advanced.verify(token, "UA/1") == id_of(token)
    assert advanced.verify(token, "UA/2") is None
    assert advanced.verify(token) is None


def test_load(app, clock):
    advanced = app.middleware.advanced
    token = login(app, user="alice", roles={"admin"}, when=datetime(2026, 1, 1, tzinfo=UTC))
    data = advanced.load(id_of(token))
    assert data == {"user": "alice", "roles": {"admin"}, "when": datetime(2026, 1, 1, tzinfo=UTC)}
    assert advanced.load("N" * 32) is None
    clock.advance(HOUR)
    assert advanced.load(id_of(token)) is None


def test_exists(app, clock):
    advanced = app.middleware.advanced
    token = login(app)
    assert advanced.exists(id_of(token))
    assert not advanced.exists("N" * 32)
    clock.advance(HOUR)
    assert not advanced.exists(id_of(token))


def test_set_expiry_with_epoch_seconds_and_datetime(app, clock):
    advanced = app.middleware.advanced
    session_id = id_of(login(app))
    assert advanced.set_expiry(session_id, START + 10 * HOUR) is True
    assert advanced.record(session_id)["expires"] == START + 10 * HOUR
    clock.advance(5 * HOUR)
    assert advanced.exists(session_id)  # beyond the normal lifetime, as set

    when = datetime.fromtimestamp(clock() + 60, tz=UTC)
    assert advanced.set_expiry(session_id, when) is True
    assert advanced.record(session_id)["expires"] == pytest.approx(clock() + 60)
    clock.advance(61)
    assert not advanced.exists(session_id)
    assert advanced.set_expiry(session_id, clock() + HOUR) is False  # gone: nothing to move


def test_set_expiry_in_the_past_ends_the_session(app, clock):
    advanced = app.middleware.advanced
    token = login(app)
    assert advanced.set_expiry(id_of(token), clock() - 1)
    assert app.run().json == {}


def test_set_expiry_unknown_id(app):
    assert app.middleware.advanced.set_expiry("N" * 32, START + HOUR) is False


def test_write_refreshes_the_deadline(app, clock):
    advanced = app.middleware.advanced
    session_id = id_of(login(app))
    version = advanced.record(session_id)["version"]
    clock.advance(HOUR - 10)
    assert advanced.write(session_id) is True
    record = advanced.record(session_id)
    assert record["expires"] == clock() + HOUR
    assert record["version"] == version + 1
    clock.advance(HOUR - 10)
    assert advanced.exists(session_id)
    assert advanced.write("N" * 32) is False


def test_delete(app):
    advanced = app.middleware.advanced
    token = login(app)
    other = login(app, user="bob")
    advanced.delete(id_of(token))
    assert not advanced.exists(id_of(token))
    assert advanced.exists(id_of(other))
    assert advanced.count() == 1
    advanced.delete("N" * 32)  # unknown: no error
    app.client.reset()
    app.client.set_cookie("session", token)
    assert app.run().json == {}


def test_evict_with_memory_store_deletes(app):
    advanced = app.middleware.advanced
    token = login(app)
    advanced.evict(id_of(token))
    assert not advanced.exists(id_of(token))
    assert advanced.count() == 0


def test_count_ids_and_clear_store(app, clock):
    advanced = app.middleware.advanced
    assert advanced.count() == 0
    tokens = [login(app, n=n) for n in range(5)]
    assert advanced.count() == 5
    assert sorted(advanced.ids()) == sorted(id_of(t) for t in tokens)
    clock.advance(HOUR)
    assert advanced.count() == 5  # expired, not purged: still counted
    advanced.clear_store()
    assert advanced.count() == 0
    assert list(advanced.ids()) == []


def test_purge(app, clock):
    advanced = app.middleware.advanced
    old = [login(app, n=n) for n in range(3)]
    clock.advance(HOUR / 2)
    fresh = login(app, n="fresh")
    clock.advance(HOUR / 2)
    assert advanced.purge() == 3
    assert sorted(advanced.ids()) == [id_of(fresh)]
    assert all(not advanced.exists(id_of(t)) for t in old)
    assert advanced.purge() == 0


def test_stats(app, clock):
    advanced = app.middleware.advanced
    stats = advanced.stats()
    assert isinstance(stats, dict)
    assert stats["created"] == 0
    token = login(app)
    app.run(lambda s: s.update(more=1))
    app.run(lambda s: s.renew())
    app.run(lambda s: s.destroy())
    app.client.reset()
    app.client.set_cookie("session", "garbage")
    app.run()
    app.client.reset()
    app.client.set_cookie("session", token)  # renewed away: unknown id
    app.run()
    stats = advanced.stats()
    assert stats["created"] == 1
    assert stats["renewed"] == 1
    assert stats["destroyed"] == 1
    assert stats["writes"] >= 2
    assert stats["rejected_tokens"] == 1
    assert stats["unknown_ids"] == 1
    assert stats == app.middleware.stats.as_dict()


def test_record(app, clock):
    advanced = app.middleware.advanced
    token = login(app, b=1, a=2)
    record = advanced.record(id_of(token))
    assert record["id"] == id_of(token)
    assert record["keys"] == ["a", "b"]
    assert record["created"] == START
    assert record["expires"] == START + HOUR
    assert record["absolute"] is None
    assert record["longterm"] is False
    assert record["version"] == 1
    assert "values" not in record
    assert "memo" not in record
    assert advanced.record("N" * 32) is None


def test_record_shows_absolute_and_longterm(scripted):
    app = scripted(absolute_lifetime=timedelta(days=1))
    app.run(lambda s: (s.update(a=1), s.set_longterm(True)))
    record = app.middleware.advanced.record(app.session_id)
    assert record["absolute"] == START + 86400
    assert record["longterm"] is True
