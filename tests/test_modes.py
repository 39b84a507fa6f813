"""Consent modes: persistent (default), opt_in (signed consent), manual (create_data)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from core_testkit import SECRET, id_of, set_cookies

from wsgi_session import SessionStateError
from wsgi_session.signing import TokenSigner

LIFETIME = timedelta(hours=1)
LONGTERM = timedelta(days=60)


def flags_of(token):
    return token.split(".")[1]


def verify(token):
    return TokenSigner([SECRET.encode()]).loads(token)


# -- persistent --------------------------------------------------------------------------


def test_persistent_mode_stores_any_session_with_data(scripted):
    app = scripted()
    assert app.middleware.config.mode == "persistent"
    response = app.run(lambda s: s.update(a=1))
    [(token, attrs)] = set_cookies(response)
    assert flags_of(token) == "0"
    assert "max-age" not in attrs
    assert app.record() is not None
    assert app.run().json == {"a": 1}


def test_persistent_mode_empty_session_is_not_stored(scripted):
    app = scripted()
    response = app.run(lambda s: s.set_longterm(True))
    assert set_cookies(response) == []
    assert app.store.count() == 0


# -- opt_in --------------------------------------------------------------------------------


@pytest.fixture
def opt_in(scripted):
    return scripted(mode="opt_in", cookie_persistent=True, lifetime=LIFETIME)


def test_opt_in_without_consent_keeps_a_browser_session_cookie(opt_in):
    def fn(session):
        assert session.consented is False
        session["cart"] = ["tea"]

    response = opt_in.run(fn)
    [(token, attrs)] = set_cookies(response)
    assert flags_of(token) == "0"
    assert verify(token).consent is False
    assert "max-age" not in attrs
    assert "expires" not in attrs
    assert opt_in.run().json == {"cart": ["tea"]}  # usable, just not persistent


def test_opt_in_consent_flips_the_signed_flag_and_makes_the_cookie_persistent(opt_in):
    opt_in.run(lambda s: s.update(cart=["tea"]))
    first_id = opt_in.session_id

    def consent(session):
        session.set_store(True)
        assert session.consented is True

    response = opt_in.run(consent)
    [(token, attrs)] = set_cookies(response)
    assert flags_of(token) == "1"
    assert verify(token).consent is True
    assert attrs["max-age"] == str(int(LIFETIME.total_seconds()))
    assert id_of(token) == first_id  # same session, new token

    def check(session):
        assert session.consented is True
        assert session["cart"] == ["tea"]

    response = opt_in.run(check)
    assert set_cookies(response) == []  # consent stays: no new cookie


def test_opt_in_consent_on_a_new_session_creates_it(opt_in):
    response = opt_in.run(lambda s: s.set_store(True))
    [(token, attrs)] = set_cookies(response)
    assert flags_of(token) == "1"
    assert "max-age" in attrs
    assert opt_in.record(id_of(token)) is not None
    assert dict(opt_in.record(id_of(token)).values) == {}


def test_opt_in_consent_withdrawn(opt_in):
    opt_in.run(lambda s: (s.set_store(True), s.update(a=1)))
    response = opt_in.run(lambda s: s.set_store(False))
    [(token, attrs)] = set_cookies(response)
    assert flags_of(token) == "0"
    assert "max-age" not in attrs
    assert opt_in.run(lambda s: s.consented).text == "false"


def test_opt_in_set_store_without_change_sends_nothing(opt_in):
    opt_in.run(lambda s: s.set_store(True))
    assert set_cookies(opt_in.run(lambda s: s.set_store(True))) == []
    opt_in.client.reset()
    opt_in.run(lambda s: s.update(a=1))
    assert set_cookies(opt_in.run(lambda s: s.set_store(False))) == []


def test_opt_in_longterm_needs_consent_for_a_persistent_cookie(opt_in):
    opt_in.run(lambda s: s.update(a=1))
    [(_, attrs)] = set_cookies(opt_in.run(lambda s: s.set_longterm(True)))
    assert "max-age" not in attrs
    [(token, attrs)] = set_cookies(opt_in.run(lambda s: s.set_store(True)))
    assert flags_of(token) == "1"
    assert attrs["max-age"] == str(int(LONGTERM.total_seconds()))


def test_opt_in_default_cookie_is_a_browser_session_cookie_even_with_consent(scripted):
    # cookie_persistent=False (the default): only long-term sessions get Max-Age.
    app = scripted(mode="opt_in")
    [(token, attrs)] = set_cookies(app.run(lambda s: s.set_store(True)))
    assert flags_of(token) == "1"
    assert "max-age" not in attrs


def test_opt_in_consent_cannot_be_forged(opt_in):
    opt_in.run(lambda s: s.update(secret="x"))
    token = opt_in.cookie
    session_id, _, issued, signature = token.split(".")
    opt_in.client.reset()
    opt_in.client.set_cookie("session", f"{session_id}.1.{issued}.{signature}")
    response = opt_in.run(lambda s: {"consented": s.consented, "data": dict(s)})
    assert response.json == {"consented": False, "data": {}}


# -- manual --------------------------------------------------------------------------------


@pytest.fixture
def manual(scripted):
    return scripted(mode="manual")


@pytest.mark.parametrize(
    "write",
    [
        lambda s: s.__setitem__("a", 1),
        lambda s: s.update(a=1),
        lambda s: s.setdefault("a", 1),
    ],
    ids=["setitem", "update", "setdefault"],
)
def test_manual_mode_write_before_create_data_raises(manual, write):
    def fn(session):
        with pytest.raises(SessionStateError, match="create_data"):
            write(session)
        assert "a" not in session

    response = manual.run(fn)
    assert set_cookies(response) == []
    assert manual.store.count() == 0


def test_manual_mode_session_state_error_is_a_runtime_error():
    assert issubclass(SessionStateError, RuntimeError)


def test_manual_mode_reading_creates_nothing(manual):
    response = manual.run(lambda s: {"a": s.get("a"), "len": len(s), "new": s.is_new})
    assert response.json == {"a": None, "len": 0, "new": True}
    assert set_cookies(response) == []
    assert manual.store.count() == 0


def test_manual_mode_create_data_creates_an_empty_stored_session(manual):
    response = manual.run(lambda s: s.create_data())
    [(token, _)] = set_cookies(response)
    record = manual.record(id_of(token))
    assert record is not None
    assert dict(record.values) == {}
    # Once created, the session takes writes in later requests.
    manual.run(lambda s: s.update(a=1))
    assert manual.run().json == {"a": 1}


def test_manual_mode_create_data_then_write_in_one_request(manual):
    def fn(session):
        session.create_data()
        session["user"] = "alice"

    response = manual.run(fn)
    assert len(set_cookies(response)) == 1
    assert manual.run().json == {"user": "alice"}


def test_manual_mode_after_destroy_needs_create_data_again(manual):
    manual.run(lambda s: (s.create_data(), s.update(a=1)))
    manual.run(lambda s: s.destroy())
    manual.client.reset()

    def fn(session):
        with pytest.raises(SessionStateError):
            session["a"] = 2

    manual.run(fn)
    assert manual.store.count() == 0
