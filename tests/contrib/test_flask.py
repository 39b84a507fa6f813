"""The Flask extension: a real Flask app (and Flask-Login) through webtest."""

from __future__ import annotations

import os
import typing as t
from datetime import timedelta

import flask
import pytest
import webtest
from core_testkit import SECRET, header_values, id_of, set_cookies, token_of

from wsgi_session import SessionConfig, SessionMiddleware
from wsgi_session.contrib.flask import FlaskSession, WsgiSession, config_from_app
from wsgi_session.stores import MemoryStore

from .conftest import assert_counts_up, drop_session_cookie, vary_tokens

# Flask-Login is a test dependency: skipped without it locally, an error under CI.
flask_login = __import__("flask_login") if os.environ.get("CI") else pytest.importorskip("flask_login")

OLD_KEY = "an-older-flask-secret-key-0123456789-abcdef"


class User(flask_login.UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def build_app(login: bool = True, **config: t.Any) -> flask.Flask:
    """A small Flask app whose views use ``flask.session`` the usual way,
    with Flask-Login unless ``login`` is false."""
    app = flask.Flask("flask_contrib_under_test")
    app.config.update(SECRET_KEY=SECRET, TESTING=True, **config)

    @app.get("/")
    def count() -> str:
        flask.session["count"] = flask.session.get("count", 0) + 1
        return str(flask.session["count"])

    @app.get("/read")
    def read() -> t.Any:
        return flask.jsonify(dict(flask.session))

    @app.get("/info")
    def info() -> t.Any:
        s = flask.session
        return flask.jsonify(new=s.new, permanent=s.permanent, modified=s.modified)

    @app.get("/permanent/<int:on>")
    def permanent(on: int) -> str:
        flask.session.permanent = bool(on)
        flask.session["marker"] = on
        return "ok"

    @app.get("/cart/<item>")
    def cart(item: str) -> t.Any:
        flask.session.setdefault("cart", []).append(item)
        return flask.jsonify(modified=flask.session.modified)

    @app.post("/flash")
    def flash() -> t.Any:
        flask.flash("saved")
        flask.flash("careful", "warning")
        return flask.redirect("/messages")

    @app.get("/messages")
    def messages() -> t.Any:
        return flask.jsonify(flask.get_flashed_messages(with_categories=True))

    @app.get("/vary")
    def vary() -> t.Any:
        response = flask.make_response(str(flask.session.get("count")))
        response.vary.add("Accept-Language")
        return response

    @app.get("/static")
    def static_page() -> str:
        return "no session here"

    if login:
        add_login(app)
    return app


def add_login(app: flask.Flask) -> None:
    """Flask-Login with two known users, and login/logout/whoami views."""
    login_manager = flask_login.LoginManager(app)

    @login_manager.user_loader
    def load_user(user_id: str) -> User | None:
        return User(user_id) if user_id in ("alice", "bob") else None

    @app.post("/login")
    def login() -> t.Any:
        remember = flask.request.form.get("remember") == "1"
        flask_login.login_user(User(flask.request.form["user"]), remember=remember)
        return flask.redirect("/whoami")

    @app.get("/whoami")
    def whoami() -> str:
        user = flask_login.current_user
        return user.id if user.is_authenticated else "anonymous"

    @app.get("/logout")
    def logout() -> t.Any:
        flask_login.logout_user()
        return flask.redirect("/whoami")


@pytest.fixture
def make_app() -> t.Iterator[t.Callable[..., tuple[webtest.TestApp, flask.Flask]]]:
    """``make_app(store=None, renew_on_login=True, login=True, **app_config)``."""
    built: list[flask.Flask] = []

    def factory(store: t.Any = None, renew_on_login: bool = True, login: bool = True, **config: t.Any):
        app = build_app(login, **config)
        WsgiSession(app, store=store, renew_on_login=renew_on_login)
        built.append(app)
        return webtest.TestApp(app), app

    yield factory
    for app in built:
        WsgiSession.get_middleware(app).close()


@pytest.fixture
def client(make_app: t.Callable[..., tuple[webtest.TestApp, flask.Flask]]) -> webtest.TestApp:
    return make_app()[0]


# -- installation and configuration ---------------------------------------------------


def test_init_app_installs_middleware_and_interface() -> None:
    app = build_app()
    original = app.wsgi_app
    ext = WsgiSession()
    middleware = ext.init_app(app)
    try:
        assert isinstance(app.wsgi_app, SessionMiddleware)
        assert app.wsgi_app is middleware
        assert middleware.app == original
        assert app.extensions["wsgi_session"] is middleware
        assert WsgiSession.get_middleware(app) is middleware
        with app.app_context():
            assert WsgiSession.get_middleware() is middleware
        with pytest.raises(RuntimeError, match="already installed"):
            ext.init_app(app)
    finally:
        middleware.close()


def test_explicit_config_and_store_are_used_as_given() -> None:
    app = build_app()
    store = MemoryStore()
    config = SessionConfig(secret_keys=[SECRET], cookie_name="sid")
    middleware = WsgiSession(app, config=config, store=store).get_middleware(app)
    try:
        assert middleware.config is config
        assert middleware.store is store
        response = webtest.TestApp(app).get("/")
        assert set_cookies(response, "sid")
    finally:
        middleware.close()


def test_config_mapping_from_app_config() -> None:
    app = flask.Flask("mapping")
    app.config.update(
        SECRET_KEY=SECRET,
        SECRET_KEY_FALLBACKS=["x" * 40, OLD_KEY],
        SESSION_COOKIE_NAME="flask_sid",
        SESSION_COOKIE_DOMAIN="example.test",
        SESSION_COOKIE_PATH="/app",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=False,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=3600,
        WSGI_SESSION_CONFIG={"lifetime": timedelta(minutes=20), "bind_user_agent": True},
    )
    config = config_from_app(app)
    assert config.secret_keys == (SECRET.encode(), OLD_KEY.encode(), b"x" * 40)  # newest first
    assert config.cookie_name == "flask_sid"
    assert config.cookie_domain == "example.test"
    assert config.cookie_path == "/app"
    assert config.cookie_secure is True
    assert config.cookie_http_only is False
    assert config.cookie_same_site == "Strict"
    assert config.longterm_lifetime == timedelta(hours=1)
    assert config.lifetime == timedelta(minutes=20)
    assert config.bind_user_agent is True


def test_config_defaults_from_a_plain_flask_app() -> None:
    app = flask.Flask("defaults")
    app.config["SECRET_KEY"] = SECRET
    config = config_from_app(app)
    assert config.secret_keys == (SECRET.encode(),)
    assert config.cookie_name == "session"
    assert config.cookie_path == "/"
    assert config.cookie_domain is None
    assert config.cookie_same_site == "Lax"  # Flask's None does not weaken our default
    assert config.longterm_lifetime == timedelta(days=31)  # Flask's PERMANENT_SESSION_LIFETIME


def test_short_or_missing_secret_key_fails_at_init() -> None:
    app = flask.Flask("short")
    app.config["SECRET_KEY"] = "dev"
    with pytest.raises(ValueError, match=r"secret_keys\[0\] is 3 bytes.*SECRET_KEY"):
        WsgiSession(app)
    with pytest.raises(ValueError, match="needs SECRET_KEY"):
        WsgiSession(flask.Flask("none"))
    app.config["WSGI_SESSION_SECRET_KEYS"] = [SECRET, OLD_KEY]  # wins over SECRET_KEY
    assert config_from_app(app).secret_keys == (SECRET.encode(), OLD_KEY.encode())


# -- flask.session ----------------------------------------------------------------------


def test_counter_across_requests(client: webtest.TestApp) -> None:
    assert_counts_up(client)
    flask_client = client.app.test_client()  # Flask's own test client goes through it too
    assert [flask_client.get("/").text for _ in range(2)] == ["1", "2"]


def test_vary_cookie_appears_once(client: webtest.TestApp) -> None:
    response = client.get("/")
    assert vary_tokens(response).count("cookie") == 1
    response = client.get("/vary")
    assert sorted(vary_tokens(response)) == ["accept-language", "cookie"]
    assert len(header_values(response, "Vary")) == 1


def test_untouched_session_sends_nothing(make_app: t.Callable[..., t.Any]) -> None:
    client, _ = make_app(login=False)  # Flask-Login reads the session on every request
    response = client.get("/static")
    assert "Set-Cookie" not in response.headers
    assert "cookie" not in vary_tokens(response)


def test_nested_mutation_is_saved_without_modified(client: webtest.TestApp) -> None:
    assert client.get("/cart/apple").json == {"modified": True}  # setdefault assigned the list
    assert client.get("/cart/pear").json == {"modified": False}  # only a nested append
    assert client.get("/read").json["cart"] == ["apple", "pear"]


def test_new_permanent_modified(client: webtest.TestApp) -> None:
    assert client.get("/info").json == {"new": True, "permanent": False, "modified": False}
    client.get("/")
    assert client.get("/info").json == {"new": False, "permanent": False, "modified": False}


def test_permanent_gives_a_persistent_cookie(make_app: t.Callable[..., t.Any]) -> None:
    client, _ = make_app(PERMANENT_SESSION_LIFETIME=timedelta(days=2))
    response = client.get("/permanent/1")
    [(_, attrs)] = set_cookies(response)
    assert int(attrs["max-age"]) == 2 * 86400
    info = client.get("/info").json
    assert info["permanent"] is True  # stored with the session, not a key
    assert "_permanent" not in client.get("/read").json
    response = client.get("/permanent/0")
    [(_, attrs)] = set_cookies(response)
    assert "max-age" not in attrs
    assert "expires" not in attrs
    assert client.get("/info").json["permanent"] is False


def test_flash_messages_survive_a_redirect(client: webtest.TestApp) -> None:
    response = client.post("/flash")
    assert response.status_int == 302
    assert response.follow().json == [["message", "saved"], ["warning", "careful"]]
    assert client.get("/messages").json == []  # consumed


def test_flask_session_object_api(make_app: t.Callable[..., t.Any]) -> None:
    _, app = make_app()
    seen: dict[str, t.Any] = {}

    @app.get("/api")
    def api() -> str:
        s = flask.session
        seen["type"] = type(s._get_current_object())  # type: ignore[attr-defined]
        seen["raw"] = s.raw is flask.request.environ["session"]
        seen["id"] = s.id
        s["a"] = 1
        del s["a"]
        s.update(b=2, c=3)
        seen["keys"] = sorted(s)
        seen["len"] = len(s)
        seen["contains"] = "b" in s
        s.renew()
        return "ok"

    webtest.TestApp(app).get("/api")
    assert seen["type"] is FlaskSession
    assert seen["raw"] is True
    assert seen["keys"] == ["b", "c"]
    assert seen["len"] == 2
    assert seen["contains"]


def test_test_request_context_gets_a_helpful_null_session(make_app: t.Callable[..., t.Any]) -> None:
    _, app = make_app()
    with app.test_request_context("/"):
        assert dict(flask.session) == {}
        with pytest.raises(RuntimeError, match="did not pass through"):
            flask.session["x"] = 1


@pytest.mark.redis
def test_redis_store(make_app: t.Callable[..., t.Any], redis_store: t.Any) -> None:
    client, _ = make_app(store=redis_store)
    assert client.get("/").text == "1"
    assert client.get("/").text == "2"
    session_id = id_of(client.cookies["session"])
    assert redis_store.load(session_id) is not None
    response = client.post("/flash").follow()
    assert response.json == [["message", "saved"], ["warning", "careful"]]
    assert vary_tokens(response).count("cookie") == 1


# -- Flask-Login --------------------------------------------------------------------------


def test_flask_login_login_and_logout(client: webtest.TestApp) -> None:
    client.get("/")  # an anonymous session first
    anonymous = client.cookies["session"]
    assert client.get("/whoami").text == "anonymous"
    response = client.post("/login", {"user": "alice"})
    logged_in = token_of(response)
    assert id_of(logged_in) != id_of(anonymous)  # renewed on user_logged_in
    assert "remember_token" not in client.cookies
    assert response.follow().text == "alice"
    assert client.get("/whoami").text == "alice"
    assert client.get("/").text == "2"  # data survived the renewal

    # The pre-login token is dead: session fixation defence.
    attacker = webtest.TestApp(client.app)
    attacker.set_cookie("session", anonymous)
    assert attacker.get("/whoami").text == "anonymous"

    response = client.get("/logout")
    assert id_of(token_of(response)) != id_of(logged_in)  # renewed on user_logged_out
    assert response.follow().text == "anonymous"
    assert client.get("/whoami").text == "anonymous"


def test_flask_login_without_remember_ends_with_the_browser(client: webtest.TestApp) -> None:
    client.post("/login", {"user": "bob"})
    assert client.get("/whoami").text == "bob"
    drop_session_cookie(client)
    assert client.get("/whoami").text == "anonymous"


def test_flask_login_remember_me(client: webtest.TestApp) -> None:
    response = client.post("/login", {"user": "alice", "remember": "1"})
    assert set_cookies(response, "remember_token")
    assert "remember_token" in client.cookies
    drop_session_cookie(client)  # the browser restarts: only the remember cookie is left
    response = client.get("/whoami")
    assert response.text == "alice"  # restored from the remember cookie into a new session
    assert set_cookies(response)  # the new session got its cookie
    assert client.get("/whoami").text == "alice"

    response = client.get("/logout")
    [(value, _)] = set_cookies(response, "remember_token")
    assert value in ("", '""')  # Flask-Login cleared its cookie
    assert response.follow().text == "anonymous"
    drop_session_cookie(client)
    assert client.get("/whoami").text == "anonymous"


def test_renew_on_login_can_be_turned_off(make_app: t.Callable[..., t.Any]) -> None:
    client, _ = make_app(renew_on_login=False)
    client.get("/")
    before = id_of(client.cookies["session"])
    response = client.post("/login", {"user": "alice"})
    assert not set_cookies(response)  # same id: no new cookie
    assert id_of(client.cookies["session"]) == before
    assert client.get("/whoami").text == "alice"


@pytest.mark.redis
def test_flask_login_over_redis(make_app: t.Callable[..., t.Any], redis_store: t.Any) -> None:
    client, _ = make_app(store=redis_store)
    client.post("/login", {"user": "alice", "remember": "1"})
    assert client.get("/whoami").text == "alice"
    client.get("/logout")
    assert client.get("/whoami").text == "anonymous"
