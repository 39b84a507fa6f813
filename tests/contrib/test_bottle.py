"""The Bottle plugin: a real Bottle app through webtest."""

from __future__ import annotations

import typing as t

import bottle
import pytest
import webtest
from core_testkit import SECRET, id_of, make_config, set_cookies, token_of

from wsgi_session import SessionMiddleware
from wsgi_session.contrib.bottle import SessionPlugin

from .conftest import assert_counts_up, vary_tokens


def build_app() -> bottle.Bottle:
    """A Bottle app whose routes take the session in every supported way."""
    app = bottle.Bottle()

    @app.get("/")
    def count(session: t.Any) -> str:  # keyword injection
        session["count"] = session.get("count", 0) + 1
        return str(session["count"])

    @app.get("/attr")
    def attr() -> str:  # bottle.request.session
        session = bottle.request.session
        session["count"] = session.get("count", 0) + 1
        return str(session["count"])

    @app.get("/same")
    def same(session: t.Any) -> dict[str, bool]:
        environ = bottle.request.environ
        return {"same": session is bottle.request.session is environ["session"]}

    @app.get("/read")
    def read(session: t.Any) -> dict[str, t.Any]:
        return dict(session)

    @app.get("/custom", session_keyword="s")
    def custom(s: t.Any) -> str:
        s["custom"] = True
        return "ok"

    @app.post("/flash")
    def flash(session: t.Any) -> None:
        session.setdefault("_flashes", []).append("saved")
        bottle.redirect("/messages")

    @app.get("/messages")
    def messages(session: t.Any) -> dict[str, t.Any]:
        return {"messages": session.pop("_flashes", [])}

    @app.get("/remember")
    def remember(session: t.Any) -> str:
        session.set_longterm(True)
        session["remembered"] = True
        return "ok"

    @app.post("/login")
    def login(session: t.Any) -> None:
        session.renew()
        session["user"] = bottle.request.forms["user"]
        bottle.redirect("/read")

    @app.get("/logout")
    def logout(session: t.Any) -> str:
        session.destroy()
        return "bye"

    @app.get("/static")
    def static() -> str:
        return "no session here"

    @app.get("/health", skip=["wsgi_session"])
    def health() -> str:
        return "fine"

    return app


@pytest.fixture
def make_client() -> t.Iterator[t.Callable[..., tuple[webtest.TestApp, SessionPlugin]]]:
    """``make_client(store=None, **config_fields) -> (TestApp, plugin)``."""
    built: list[bottle.Bottle] = []

    def factory(store: t.Any = None, **fields: t.Any) -> tuple[webtest.TestApp, SessionPlugin]:
        app = build_app()
        plugin = SessionPlugin(make_config(**fields), store)
        app.install(plugin)
        built.append(app)
        return webtest.TestApp(plugin.wrap(app)), plugin

    yield factory
    for app in built:
        app.close()


@pytest.fixture
def client(make_client: t.Callable[..., tuple[webtest.TestApp, SessionPlugin]]) -> webtest.TestApp:
    return make_client()[0]


# -- installation -------------------------------------------------------------------------


def test_wrap_returns_the_middleware_and_installs_the_plugin() -> None:
    app = build_app()
    plugin = SessionPlugin(secret_keys=[SECRET], cookie_name="sid")
    middleware = plugin.wrap(app)
    try:
        assert isinstance(middleware, SessionMiddleware)
        assert middleware.app is app
        assert plugin.middleware is middleware
        assert plugin in app.plugins
        assert middleware.config.cookie_name == "sid"
        client = webtest.TestApp(middleware)
        assert set_cookies(client.get("/"), "sid")
    finally:
        app.close()
    assert middleware._closed  # app.close() closes the plugin, which closes the middleware


def test_fields_apply_on_top_of_a_config() -> None:
    plugin = SessionPlugin(make_config(cookie_name="a"), cookie_secure=True)
    assert plugin.config is not None
    assert plugin.config.cookie_name == "a"
    assert plugin.config.cookie_secure is True


def test_wrap_needs_a_config() -> None:
    with pytest.raises(ValueError, match="needs a config"):
        SessionPlugin().wrap(build_app())
    with pytest.raises(ValueError, match="secret_keys="):
        SessionPlugin(cookie_name="sid")
    assert SessionPlugin(make_config(), environ_key="elsewhere").config.environ_key == "elsewhere"


def test_two_plugins_with_one_keyword_are_refused() -> None:
    app = bottle.Bottle()
    app.install(SessionPlugin())
    with pytest.raises(bottle.PluginError, match="already injects"):
        app.install(SessionPlugin())
    app.install(SessionPlugin(keyword="other"))


def test_plugin_with_a_hand_built_middleware() -> None:
    app = build_app()
    app.install(SessionPlugin(environ_key="my.session"))  # injection only: no config needed
    with SessionMiddleware(app, make_config(environ_key="my.session")) as middleware:
        client = webtest.TestApp(middleware)
        assert client.get("/").text == "1"
        assert client.get("/attr").text == "2"


def test_unwrapped_app_fails_loudly() -> None:
    app = build_app()
    app.install(SessionPlugin())
    app.catchall = False  # let the error reach the test instead of a 500 page
    with pytest.raises(RuntimeError, match="did not pass through"):
        webtest.TestApp(app).get("/")


# -- the session in routes ------------------------------------------------------------------


def test_counter_across_requests_with_keyword_injection(client: webtest.TestApp) -> None:
    third = assert_counts_up(client)
    assert vary_tokens(third).count("cookie") == 1


def test_request_session_attribute(client: webtest.TestApp) -> None:
    assert client.get("/attr").text == "1"
    assert client.get("/").text == "2"  # one session, both ways
    assert client.get("/same").json == {"same": True}


def test_route_chooses_its_keyword(client: webtest.TestApp) -> None:
    client.get("/custom")
    assert client.get("/read").json == {"custom": True}


def test_untouched_and_skipped_routes_send_nothing(client: webtest.TestApp) -> None:
    for path in ("/static", "/health"):
        response = client.get(path)
        assert "Set-Cookie" not in response.headers
        assert "cookie" not in vary_tokens(response)


def test_flash_survives_a_redirect(client: webtest.TestApp) -> None:
    response = client.post("/flash")
    assert response.status_int in (302, 303)
    assert response.follow().json == {"messages": ["saved"]}
    assert client.get("/messages").json == {"messages": []}


def test_longterm_gives_a_persistent_cookie(make_client: t.Callable[..., t.Any]) -> None:
    from datetime import timedelta

    client, _ = make_client(longterm_lifetime=timedelta(days=3))
    [(_, attrs)] = set_cookies(client.get("/remember"))
    assert int(attrs["max-age"]) == 3 * 86400


def test_login_renews_and_logout_destroys(client: webtest.TestApp) -> None:
    client.get("/")
    before = client.cookies["session"]
    response = client.post("/login", {"user": "alice"})
    assert id_of(token_of(response)) != id_of(before)
    assert response.follow().json == {"count": 1, "user": "alice"}
    response = client.get("/logout")
    [(value, _)] = set_cookies(response)
    assert value in ("", '""')
    assert client.get("/read").json == {}


@pytest.mark.redis
def test_redis_store(make_client: t.Callable[..., t.Any], redis_store: t.Any) -> None:
    client, plugin = make_client(store=redis_store)
    assert plugin.middleware is not None
    assert plugin.middleware.store is redis_store
    assert client.get("/").text == "1"
    assert client.get("/attr").text == "2"
    assert redis_store.load(id_of(client.cookies["session"])) is not None
    assert client.post("/flash").follow().json == {"messages": ["saved"]}
