"""Idle, long-term and absolute expiry, touches and purge, on a fake clock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from core_testkit import START, id_of, set_cookies

HOUR = 3600.0
LIFETIME = timedelta(hours=1)
LONGTERM = timedelta(days=60)


def write(**values):
    return lambda session: session.update(values)


@pytest.fixture
def app(scripted):
    return scripted(lifetime=LIFETIME, longterm_lifetime=LONGTERM)


# -- idle expiry ----------------------------------------------------------------------


def test_deadlines_are_stored_with_the_data(app, clock):
    app.run(write(a=1))
    record = app.record()
    assert record.created == START
    assert record.expires == START + HOUR
    assert record.absolute is None
    assert record.longterm is False


def test_idle_session_expires_after_lifetime(app, clock):
    app.run(write(a=1))
    session_id = app.session_id
    clock.advance(HOUR - 1)
    assert app.run().json == {"a": 1}  # touched: the deadline slides
    clock.advance(HOUR - 1)
    assert app.run().json == {"a": 1}
    clock.advance(HOUR)
    response = app.run()
    assert response.json == {}
    [(value, attrs)] = set_cookies(response)  # the dead token is cleared
    assert value == ""
    assert attrs["max-age"] == "0"
    assert app.store.load(session_id) is None
    assert app.middleware.stats.expired == 1


def test_expiry_is_exact_at_the_deadline(app, clock):
    app.run(write(a=1))
    clock.advance(HOUR - 0.001)
    assert app.middleware.advanced.exists(app.session_id)
    clock.advance(0.001)
    assert not app.middleware.advanced.exists(app.session_id)


def test_activity_keeps_a_session_alive(app, clock):
    app.run(write(n=0))
    for _ in range(10):  # 10 x 50 minutes: far beyond one lifetime
        clock.advance(50 * 60)
        app.run(lambda s: s.update(n=s["n"] + 1))
    assert app.run().json == {"n": 10}


def test_read_only_activity_keeps_a_session_alive(app, clock):
    app.run(write(a=1))
    for _ in range(5):
        clock.advance(50 * 60)
        assert app.run().json == {"a": 1}


def test_expired_session_gets_a_fresh_id_and_is_never_adopted(app, clock):
    app.run(write(secret="old"))
    old_id = app.session_id
    clock.advance(HOUR + 1)

    def fn(session):
        assert session.is_new
        assert "secret" not in session
        session["fresh"] = True
        return session.id

    response = app.run(fn)
    new_id = id_of(set_cookies(response)[0][0])
    assert response.text == new_id
    assert new_id != old_id
    assert app.store.load(old_id) is None
    assert app.run().json == {"fresh": True}


def test_expired_record_still_in_store_is_not_served(app, clock):
    # Even if nothing purged it, a past-deadline record is refused on load.
    app.run(write(a=1))
    session_id = app.session_id
    clock.advance(2 * HOUR)
    assert app.store.load(session_id) is not None  # still stored: not yet purged
    assert app.run().json == {}


# -- touches --------------------------------------------------------------------------------


def test_touch_written_at_most_every_touch_interval(app, clock):
    app.run(write(a=1))
    record = app.record()
    assert (record.version, record.expires) == (1, START + HOUR)

    clock.advance(5)
    app.run()
    assert app.record().version == 1  # inside touch_interval (10 s): nothing written

    clock.advance(5)  # 10 s after the write
    app.run()
    record = app.record()
    assert record.version == 2
    assert record.expires == START + 10 + HOUR

    clock.advance(9.9)
    app.run()
    app.run()
    assert app.record().version == 2

    clock.advance(0.1)
    app.run()
    assert app.record().version == 3
    assert app.record().expires == START + 20 + HOUR
    assert app.middleware.stats.touches == 2


def test_touches_send_no_cookie(app, clock):
    app.run(write(a=1))
    for _ in range(3):
        clock.advance(60)
        assert set_cookies(app.run()) == []
    assert app.record().version == 4


def test_touch_interval_zero_touches_every_request(scripted, clock):
    app = scripted(lifetime=LIFETIME, touch_interval=timedelta(0))
    app.run(write(a=1))
    app.run()
    app.run()
    assert app.record().version == 3


def test_custom_touch_interval(scripted, clock):
    app = scripted(lifetime=LIFETIME, touch_interval=timedelta(minutes=5))
    app.run(write(a=1))
    clock.advance(299)
    app.run()
    assert app.record().version == 1
    clock.advance(1)
    app.run()
    assert app.record().version == 2


def test_a_write_resets_the_touch_clock(app, clock):
    app.run(write(a=1))
    clock.advance(8)
    app.run(write(a=2))  # version 2, expires now + lifetime
    clock.advance(8)
    app.run()  # 8 s after the write: no touch
    assert app.record().version == 2
    assert app.record().expires == START + 8 + HOUR


# -- long-term ----------------------------------------------------------------------------------


def test_longterm_cookie_and_deadline(app, clock):
    app.run(write(user="alice"))
    response = app.run(lambda s: s.set_longterm(True))
    [(_, attrs)] = set_cookies(response)
    assert attrs["max-age"] == str(int(LONGTERM.total_seconds()))
    record = app.record()
    assert record.longterm is True
    assert record.expires == START + LONGTERM.total_seconds()
    assert app.run(lambda s: s.longterm).text == "true"


def test_longterm_session_survives_past_lifetime(app, clock):
    app.run(lambda s: (s.update(user="alice"), s.set_longterm(True)))
    clock.advance(7 * HOUR)
    assert app.run().json == {"user": "alice"}
    clock.advance(LONGTERM.total_seconds() - 1)  # idle for almost 60 days after that touch
    assert app.run().json == {"user": "alice"}
    clock.advance(LONGTERM.total_seconds() + 1)
    assert app.run().json == {}


def test_longterm_off_returns_to_lifetime(app, clock):
    app.run(lambda s: (s.update(a=1), s.set_longterm(True)))
    response = app.run(lambda s: s.set_longterm(False))
    [(_, attrs)] = set_cookies(response)
    assert "max-age" not in attrs
    assert app.record().expires == START + HOUR
    clock.advance(HOUR + 1)
    assert app.run().json == {}


def test_new_session_can_start_longterm(app, clock):
    response = app.run(lambda s: (s.update(a=1), s.set_longterm(True)))
    [(_, attrs)] = set_cookies(response)
    assert attrs["max-age"] == str(int(LONGTERM.total_seconds()))
    assert app.record().longterm is True


# -- absolute lifetime ------------------------------------------------------------------------


def test_absolute_lifetime_is_enforced_even_when_active(scripted, clock):
    app = scripted(lifetime=LIFETIME, absolute_lifetime=timedelta(hours=2))
    app.run(write(n=0))
    assert app.record().absolute == START + 2 * HOUR
    for _ in range(3):  # active every 30 minutes, up to 1h30
        clock.advance(30 * 60)
        app.run(lambda s: s.update(n=s["n"] + 1))
    clock.advance(29 * 60)  # 1h59
    assert app.run().json == {"n": 3}
    clock.advance(60)  # 2h00: the absolute deadline
    assert app.run().json == {}


def test_absolute_lifetime_survives_renewal(scripted, clock):
    app = scripted(lifetime=LIFETIME, absolute_lifetime=timedelta(hours=2))
    app.run(write(a=1))
    clock.advance(HOUR - 60)
    app.run(lambda s: s.renew())
    assert app.record().absolute == START + 2 * HOUR
    clock.advance(HOUR - 60)
    assert app.run().json == {"a": 1}
    clock.advance(120)
    assert app.run().json == {}


def test_absolute_lifetime_caps_longterm_cookie_max_age(scripted, clock):
    app = scripted(lifetime=LIFETIME, absolute_lifetime=timedelta(days=7))
    app.run(write(a=1))
    clock.advance(HOUR / 2)
    [(_, attrs)] = set_cookies(app.run(lambda s: s.set_longterm(True)))
    assert attrs["max-age"] == str(int(7 * 24 * HOUR - HOUR / 2))
    clock.advance(7 * 24 * HOUR)
    assert app.run().json == {}


# -- persistent cookie refresh -------------------------------------------------------------------


def test_persistent_cookie_refreshed_after_half_its_max_age(scripted, clock):
    app = scripted(lifetime=LIFETIME, cookie_persistent=True)
    [(first, attrs)] = set_cookies(app.run(write(a=1)))
    assert attrs["max-age"] == "3600"
    clock.advance(HOUR / 2)  # exactly half: not yet
    assert set_cookies(app.run()) == []
    clock.advance(1)
    [(second, attrs)] = set_cookies(app.run())
    assert attrs["max-age"] == "3600"
    assert id_of(second) == id_of(first)
    assert second != first
    assert set_cookies(app.run()) == []  # the new token restarts the count
    clock.advance(HOUR / 2)
    assert set_cookies(app.run()) == []
    clock.advance(1)
    assert len(set_cookies(app.run())) == 1


def test_longterm_cookie_refreshed_after_half_its_max_age(app, clock):
    app.run(lambda s: (s.update(a=1), s.set_longterm(True)))
    clock.advance(LONGTERM.total_seconds() / 2 - 60)
    assert set_cookies(app.run()) == []
    clock.advance(61)
    [(_, attrs)] = set_cookies(app.run())
    assert attrs["max-age"] == str(int(LONGTERM.total_seconds()))


def test_browser_session_cookie_is_never_refreshed(app, clock):
    app.run(write(a=1))
    for _ in range(5):
        clock.advance(50 * 60)
        assert set_cookies(app.run()) == []


# -- purge -----------------------------------------------------------------------------------------


def test_purge_removes_expired_sessions(scripted, clock):
    app = scripted(lifetime=LIFETIME)
    advanced = app.middleware.advanced
    for n in range(3):
        app.client.reset()
        app.run(write(n=n))
    app.client.reset()
    app.run(lambda s: (s.update(keep=True), s.set_longterm(True)))
    keeper = app.session_id
    assert advanced.count() == 4
    assert advanced.purge() == 0

    clock.advance(HOUR + 1)
    assert advanced.count() == 4  # expired, not yet purged
    assert advanced.purge() == 3
    assert advanced.count() == 1
    assert list(advanced.ids()) == [keeper]
    assert app.middleware.stats.purged == 3
    assert advanced.purge() == 0


def test_purge_handles_more_than_one_batch(scripted, clock):
    app = scripted(lifetime=LIFETIME)
    manager = app.middleware.manager
    for n in range(25):
        app.client.reset()
        app.run(write(n=n))
    clock.advance(HOUR)
    assert manager.purge(limit=10) == 25
    assert app.store.count() == 0
