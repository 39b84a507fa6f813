"""renew() and destroy(): fixation defence, and requests in flight that must
neither lose their writes (renew) nor resurrect a session (destroy)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from core_testkit import call_wsgi, id_of, set_cookies, view_app

from wsgi_session.record import MOVED_KEY

WAIT = 10  # seconds; only ever reached if the code under test deadlocks


def cookie_of(result):
    [(token, _)] = set_cookies(result.headers)
    return token


def test_renew_gives_a_new_id_and_keeps_the_data(scripted):
    app = scripted()
    app.run(lambda s: s.update(user="alice", cart=["tea"]))
    old_token = app.cookie
    old_id = app.session_id

    def fn(session):
        session.renew()
        session["role"] = "admin"

    response = app.run(fn)
    [(new_token, _)] = set_cookies(response)
    new_id = id_of(new_token)
    assert new_id != old_id
    assert app.session_id == new_id
    assert app.run().json == {"user": "alice", "cart": ["tea"], "role": "admin"}
    assert app.middleware.stats.renewed == 1

    # Fixation defence: a new request with the old token gets a fresh, empty session.
    app.client.reset()
    app.client.set_cookie("session", old_token)
    response = app.run(lambda s: {"data": dict(s), "new": s.is_new})
    assert response.json == {"data": {}, "new": True}
    assert not app.middleware.advanced.exists(old_id)
    assert app.middleware.advanced.exists(new_id)


def test_session_id_reflects_the_renewal_after_the_response(make_middleware):
    seen = {}

    def app(environ, start_response):
        session = environ["session"]
        if environ["PATH_INFO"] == "/renew":
            seen["before"] = session.id
            session.renew()
        else:
            session["x"] = 1
        start_response("200 OK", [])

        def body():
            yield b""
            seen["after"] = session.id

        return body()

    middleware = make_middleware(app)
    token = cookie_of(call_wsgi(middleware))
    renewed = cookie_of(call_wsgi(middleware, path="/renew", cookie=f"session={token}"))
    assert seen["before"] == id_of(token)
    assert seen["after"] == id_of(renewed)


def test_renew_of_a_new_session_just_creates_it(scripted):
    app = scripted()
    response = app.run(lambda s: (s.update(a=1), s.renew()))
    assert len(set_cookies(response)) == 1
    assert app.run().json == {"a": 1}
    assert app.store.count() == 1


def test_renew_keeps_longterm_and_deadlines(scripted, clock):
    app = scripted(lifetime=timedelta(hours=1))
    app.run(lambda s: (s.update(a=1), s.set_longterm(True)))
    created = app.record().created
    clock.advance(100)
    [(_, attrs)] = set_cookies(app.run(lambda s: s.renew()))
    assert attrs["max-age"] == str(int(timedelta(days=60).total_seconds()))
    record = app.record()
    assert record.longterm is True
    assert record.created == created


def test_renew_with_clear_does_not_carry_old_data(scripted):
    app = scripted()
    app.run(lambda s: s.update(a=1, b=2))

    def fn(session):
        session.clear()
        session["c"] = 3
        session.renew()

    app.run(fn)
    assert app.run().json == {"c": 3}


def test_renew_with_delete_drops_the_key(scripted):
    app = scripted()
    app.run(lambda s: s.update(a=1, b=2))
    app.run(lambda s: (s.pop("a"), s.renew()))
    assert app.run().json == {"b": 2}


def test_old_id_leaves_only_a_short_lived_stub(scripted, clock):
    app = scripted(renew_grace=timedelta(seconds=30))
    app.run(lambda s: s.update(a=1))
    old_id = app.session_id
    app.run(lambda s: s.renew())
    stub = app.store.load(old_id)
    assert stub is not None
    assert MOVED_KEY in stub.values
    assert stub.values[MOVED_KEY].decode() == app.session_id
    assert stub.expires == clock() + 30
    clock.advance(31)
    app.middleware.advanced.purge()
    assert app.store.load(old_id) is None
    assert app.run().json == {"a": 1}


# -- a request in flight during a renewal -----------------------------------------------------


class InFlight:
    """Runs one request on a thread that stops inside the view (after the
    session has been loaded) until :meth:`release`."""

    def __init__(self, middleware, cookie, action):
        self.loaded = threading.Event()
        self.proceed = threading.Event()
        self.result = None
        self.error = None
        self._middleware = middleware
        self._cookie = cookie
        self._action = action

    def view(self, session, environ):
        session.get("anything")  # load the snapshot now
        self.loaded.set()
        assert self.proceed.wait(WAIT)
        self._action(session)
        return dict(session)

    def start(self):
        def run():
            try:
                self.result = call_wsgi(self._middleware, path="/slow", cookie=f"session={self._cookie}")
            except BaseException as exc:  # surfaced by release()
                self.error = exc

        self.thread = threading.Thread(target=run)
        self.thread.start()
        assert self.loaded.wait(WAIT)
        return self

    def release(self):
        self.proceed.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.result


def routed_app(slow_requests):
    """``/slow`` goes to the in-flight view registered last; anything else
    runs a small router."""

    def view(session, environ):
        path = environ["PATH_INFO"]
        if path == "/slow":
            return slow_requests[-1].view(session, environ)
        if path == "/login":
            session["user"] = "alice"
        elif path == "/renew":
            session.renew()
        elif path == "/renew-and-write":
            session.renew()
            session["renewer"] = "was here"
        elif path == "/destroy":
            session.destroy()
        return dict(session)

    return view_app(view)


@pytest.fixture
def in_flight_app(make_middleware):
    slow: list[InFlight] = []
    middleware = make_middleware(routed_app(slow))

    def start(cookie, action):
        request = InFlight(middleware, cookie, action)
        slow.append(request)
        return request.start()

    return middleware, start


def test_in_flight_write_with_old_id_is_forwarded_to_the_new_id(in_flight_app):
    middleware, start = in_flight_app
    old = cookie_of(call_wsgi(middleware, path="/login"))

    slow = start(old, lambda s: s.update(from_slow="kept"))
    new = cookie_of(call_wsgi(middleware, path="/renew-and-write", cookie=f"session={old}"))
    result = slow.release()
    assert result.code == 200

    assert id_of(new) != id_of(old)
    data = call_wsgi(middleware, cookie=f"session={new}").body
    assert data == b'{"from_slow": "kept", "renewer": "was here", "user": "alice"}'
    assert middleware.stats.forwarded_writes >= 1
    assert middleware.stats.dropped_writes == 0
    # The old token still opens nothing.
    assert call_wsgi(middleware, cookie=f"session={old}").body == b"{}"


def test_in_flight_nested_mutation_with_old_id_is_forwarded(in_flight_app):
    middleware, start = in_flight_app
    old = cookie_of(call_wsgi(middleware, path="/login"))
    call_wsgi(middleware, cookie=f"session={old}")

    slow = start(old, lambda s: s.setdefault("items", []).append(1))
    new = cookie_of(call_wsgi(middleware, path="/renew", cookie=f"session={old}"))
    slow.release()
    assert middleware.advanced.load(id_of(new)) == {"user": "alice", "items": [1]}


def test_in_flight_writes_follow_two_renewals(in_flight_app):
    middleware, start = in_flight_app
    first = cookie_of(call_wsgi(middleware, path="/login"))
    slow = start(first, lambda s: s.update(late="yes"))
    second = cookie_of(call_wsgi(middleware, path="/renew", cookie=f"session={first}"))
    third = cookie_of(call_wsgi(middleware, path="/renew", cookie=f"session={second}"))
    slow.release()
    assert middleware.advanced.load(id_of(third)) == {"user": "alice", "late": "yes"}


def test_renewal_does_not_overwrite_a_forwarded_newer_value(in_flight_app):
    middleware, start = in_flight_app
    old = cookie_of(call_wsgi(middleware, path="/login"))
    slow = start(old, lambda s: s.update(user="bob"))
    new = cookie_of(call_wsgi(middleware, path="/renew", cookie=f"session={old}"))
    slow.release()  # committed after the renewal: its newer value wins
    assert middleware.advanced.load(id_of(new)) == {"user": "bob"}


# -- destroy -------------------------------------------------------------------------------------


def test_destroy_removes_stored_data_and_clears_the_cookie(scripted):
    app = scripted()
    app.run(lambda s: s.update(secret="x"))
    token = app.cookie
    session_id = app.session_id
    response = app.run(lambda s: s.destroy())
    [(value, attrs)] = set_cookies(response)
    assert value == ""
    assert attrs["max-age"] == "0"
    assert app.store.load(session_id) is None
    assert app.store.count() == 0
    assert app.middleware.stats.destroyed == 1

    app.client.reset()
    app.client.set_cookie("session", token)
    assert app.run().json == {}


def test_writes_after_destroy_in_the_same_request_are_discarded(scripted):
    app = scripted()
    app.run(lambda s: s.update(a=1))

    def fn(session):
        session.destroy()
        session["after"] = "ignored"

    app.run(fn)
    assert app.store.count() == 0


def test_destroy_then_new_session(scripted):
    app = scripted()
    app.run(lambda s: s.update(a=1))
    old_id = app.session_id
    app.run(lambda s: s.destroy())
    app.run(lambda s: s.update(b=2))
    assert app.session_id != old_id
    assert app.run().json == {"b": 2}


def test_in_flight_write_to_a_destroyed_session_is_dropped(in_flight_app):
    middleware, start = in_flight_app
    token = cookie_of(call_wsgi(middleware, path="/login"))
    slow = start(token, lambda s: s.update(zombie="should not come back"))
    destroyed = call_wsgi(middleware, path="/destroy", cookie=f"session={token}")
    assert set_cookies(destroyed.headers)[0][0] == ""
    result = slow.release()
    assert result.code == 200
    assert middleware.store.count() == 0
    assert middleware.stats.dropped_writes >= 1
    assert call_wsgi(middleware, cookie=f"session={token}").body == b"{}"


def test_in_flight_write_does_not_resurrect_a_renewed_then_destroyed_session(in_flight_app):
    middleware, start = in_flight_app
    old = cookie_of(call_wsgi(middleware, path="/login"))
    slow = start(old, lambda s: s.update(zombie="should not come back"))
    new = cookie_of(call_wsgi(middleware, path="/renew", cookie=f"session={old}"))
    call_wsgi(middleware, path="/destroy", cookie=f"session={new}")  # logout
    slow.release()
    assert not middleware.advanced.exists(id_of(new))
    assert call_wsgi(middleware, cookie=f"session={new}").body == b"{}"
