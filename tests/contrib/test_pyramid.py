"""The Pyramid integration: a real Pyramid app through webtest."""

from __future__ import annotations

import typing as t
from datetime import timedelta

import pytest
import webtest
from core_testkit import OLD_SECRET, SECRET, id_of, set_cookies, token_of
from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPFound
from pyramid.interfaces import ISession
from pyramid.response import Response

from wsgi_session import SessionConfig, SessionMiddleware
from wsgi_session.contrib import config_from_settings, store_from_settings
from wsgi_session.contrib.pyramid import (
    MIDDLEWARE_KEY,
    PyramidSession,
    SessionFactory,
    make_wsgi_app,
    wrap,
)
from wsgi_session.stores import MemoryStore

from .conftest import REDIS_URL, assert_counts_up, vary_tokens


def counter(request: t.Any) -> Response:
    session = request.session
    session["count"] = session.get("count", 0) + 1
    return Response(str(session["count"]))


def read(request: t.Any) -> dict[str, t.Any]:
    return dict(request.session)


def info(request: t.Any) -> dict[str, t.Any]:
    s = request.session
    return {"new": s.new, "created": s.created, "provides": ISession.providedBy(s)}


def flash(request: t.Any) -> HTTPFound:
    session = request.session
    session.flash("saved")
    session.flash("saved", allow_duplicate=False)  # not added twice
    session.flash("saved")  # added again
    session.flash("disk full", queue="error")
    return HTTPFound("/messages")


def messages(request: t.Any) -> dict[str, t.Any]:
    s = request.session  # peek first: pop_flash empties the queue
    return {"peek": s.peek_flash("error"), "info": s.pop_flash(), "error": s.pop_flash("error")}


def login(request: t.Any) -> HTTPFound:
    session = request.session
    session.invalidate()  # fixation defence: old data and id gone
    session["user"] = request.params["user"]
    return HTTPFound("/read")


def logout(request: t.Any) -> HTTPFound:
    session = request.session
    session.invalidate()
    session.flash("bye")  # survives: written under the new id
    return HTTPFound("/messages")


def remember(request: t.Any) -> Response:
    request.session.set_longterm(True)
    request.session["remembered"] = True
    return Response("ok")


def cart(request: t.Any) -> Response:
    request.session.setdefault("cart", []).append(request.matchdict["item"])
    return Response("ok")


def memory_store_factory(settings: t.Mapping[str, t.Any]) -> MemoryStore:
    return MemoryStore()  # a wsgi_session.store_factory, named by its dotted path


def build_config(**settings: t.Any) -> Configurator:
    """A Configurator with the include and every view of this module."""
    settings.setdefault("wsgi_session.secret_keys", SECRET)
    config = Configurator(settings=settings)
    config.include("wsgi_session.contrib.pyramid")
    views: list[tuple[str, t.Callable[..., t.Any], dict[str, t.Any]]] = [
        ("/", counter, {}),
        ("/read", read, {"renderer": "json"}),
        ("/info", info, {"renderer": "json"}),
        ("/flash", flash, {"request_method": "POST"}),
        ("/messages", messages, {"renderer": "json"}),
        ("/csrf", lambda request: Response(request.session.get_csrf_token()), {}),
        ("/csrf/new", lambda request: Response(request.session.new_csrf_token()), {}),
        ("/protected", lambda request: Response("accepted"), {"require_csrf": True}),
        ("/login", login, {"request_method": "POST"}),
        ("/logout", logout, {}),
        ("/remember", remember, {}),
        ("/cart/{item}", cart, {}),
        ("/static", lambda request: Response("no session here"), {}),
    ]
    for pattern, view, options in views:
        name = pattern.strip("/").replace("/", "_").replace("{", "").replace("}", "") or "home"
        config.add_route(name, pattern)
        config.add_view(view, route_name=name, **options)
    return config


@pytest.fixture
def make_client() -> t.Iterator[t.Callable[..., tuple[webtest.TestApp, SessionMiddleware]]]:
    """``make_client(**settings) -> (TestApp, middleware)``."""
    built: list[SessionMiddleware] = []

    def factory(**settings: t.Any) -> tuple[webtest.TestApp, SessionMiddleware]:
        middleware = make_wsgi_app(build_config(**settings))
        built.append(middleware)
        return webtest.TestApp(middleware), middleware

    yield factory
    for middleware in built:
        middleware.close()


@pytest.fixture
def client(make_client: t.Callable[..., tuple[webtest.TestApp, SessionMiddleware]]) -> webtest.TestApp:
    return make_client()[0]


# -- settings ---------------------------------------------------------------------------


def test_settings_from_an_ini_file() -> None:
    settings = {
        "wsgi_session.secret_keys": f"\n{SECRET}\n{OLD_SECRET}",
        "wsgi_session.cookie_name": "pyr_sid",
        "wsgi_session.cookie_secure": "true",
        "wsgi_session.cookie_http_only": "no",
        "wsgi_session.cookie_same_site": "Strict",
        "wsgi_session.cookie_domain": "none",
        "wsgi_session.lifetime": "3600",
        "wsgi_session.longterm_lifetime": "86400",
        "wsgi_session.absolute_lifetime": "604800",
        "wsgi_session.mode": "opt_in",
        "wsgi_session.cache_shards": "8",
        "wsgi_session.bloom_false_positive_rate": "0.001",
        "wsgi_session.bind_ip_sources": "REMOTE_ADDR X-Real-IP",
        "unrelated.setting": "ignored",
    }
    config = config_from_settings(settings)
    assert config.secret_keys == (SECRET.encode(), OLD_SECRET.encode())
    assert config.cookie_name == "pyr_sid"
    assert config.cookie_secure is True
    assert config.cookie_http_only is False
    assert config.cookie_same_site == "Strict"
    assert config.cookie_domain is None
    assert config.lifetime == timedelta(hours=1)
    assert config.longterm_lifetime == timedelta(days=1)
    assert config.absolute_lifetime == timedelta(days=7)
    assert config.mode == "opt_in"
    assert config.cache_shards == 8
    assert config.bloom_false_positive_rate == 0.001
    assert config.bind_ip_sources == ("REMOTE_ADDR", "X-Real-IP")


def test_settings_objects_from_code_pass_through() -> None:
    config = config_from_settings(
        {"wsgi_session.secret_keys": [SECRET], "wsgi_session.lifetime": 60, "wsgi_session.bind_ip": True},
        id_generator=lambda: "x" * 32,
    )
    assert config.lifetime == timedelta(minutes=1)
    assert config.bind_ip is True
    assert config.id_generator is not None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "secret_keys is required"),
        ({"wsgi_session.secret_keys": "short"}, "at least 32"),
        ({"wsgi_session.secret_keys": SECRET, "wsgi_session.lifetme": "60"}, "unknown setting"),
        ({"wsgi_session.secret_keys": SECRET, "wsgi_session.cookie_secure": "maybe"}, "not a boolean"),
        ({"wsgi_session.secret_keys": SECRET, "wsgi_session.lifetime": "an hour"}, "number of seconds"),
        ({"wsgi_session.secret_keys": SECRET, "wsgi_session.cache_shards": "many"}, "not a valid int"),
        ({"wsgi_session.secret_keys": SECRET, "wsgi_session.serializer": "json"}, "from code"),
        ({"wsgi_session.secret_keys": SECRET, "wsgi_session.mode": "sometimes"}, "mode must be"),
    ],
)
def test_bad_settings_fail_at_include(settings: dict[str, str], message: str) -> None:
    config = Configurator(settings=settings)
    with pytest.raises(ValueError, match=message):
        config.include("wsgi_session.contrib.pyramid")


def test_store_from_settings() -> None:
    assert store_from_settings({}) is None
    store = MemoryStore()
    assert store_from_settings({"wsgi_session.store": store}) is store
    made = store_from_settings({"wsgi_session.store_factory": lambda settings: store})
    assert made is store
    dotted = store_from_settings({"wsgi_session.store_factory": f"{__name__}:memory_store_factory"})
    assert isinstance(dotted, MemoryStore)
    with pytest.raises(ValueError, match="store object"):
        store_from_settings({"wsgi_session.store": "redis://"})


def test_store_url_builds_a_sqlalchemy_store(tmp_path: t.Any) -> None:
    from wsgi_session.stores import SQLAlchemyStore

    store = store_from_settings(
        {"wsgi_session.store_url": f"sqlite:///{tmp_path}/s.db", "wsgi_session.store_table": "web_sessions"}
    )
    assert isinstance(store, SQLAlchemyStore)
    assert store.table.name == "web_sessions"
    store.engine.dispose()


def test_wrap_keeps_the_middleware_in_the_registry() -> None:
    router = build_config().make_wsgi_app()
    middleware = wrap(router)
    try:
        assert middleware.app is router
        assert router.registry[MIDDLEWARE_KEY] is middleware
    finally:
        middleware.close()


def test_wrap_without_include_fails() -> None:
    router = Configurator().make_wsgi_app()
    with pytest.raises(RuntimeError, match=r"config\.include"):
        wrap(router)


def test_unwrapped_router_refuses_request_session() -> None:
    app = webtest.TestApp(build_config().make_wsgi_app())
    with pytest.raises(RuntimeError, match="did not pass through"):
        app.get("/")


def test_factory_with_a_hand_built_middleware() -> None:
    config = Configurator()
    config.set_session_factory(SessionFactory("my.session"))
    config.add_route("home", "/")
    config.add_view(counter, route_name="home")
    session_config = SessionConfig(secret_keys=[SECRET], environ_key="my.session")
    with SessionMiddleware(config.make_wsgi_app(), session_config) as middleware:
        client = webtest.TestApp(middleware)
        assert client.get("/").text == "1"
        assert client.get("/").text == "2"


# -- request.session ----------------------------------------------------------------------


def test_counter_across_requests(client: webtest.TestApp) -> None:
    third = assert_counts_up(client)
    assert vary_tokens(third).count("cookie") == 1


def test_untouched_session_sends_nothing(client: webtest.TestApp) -> None:
    response = client.get("/static")
    assert "Set-Cookie" not in response.headers
    assert "cookie" not in vary_tokens(response)


def test_new_created_and_interface(client: webtest.TestApp) -> None:
    first = client.get("/info").json
    assert first["new"] is True
    assert first["provides"] is True
    client.get("/")
    second = client.get("/info").json
    assert second["new"] is False
    assert abs(second["created"] - first["created"]) <= 2


def test_nested_mutation_needs_no_changed(client: webtest.TestApp) -> None:
    client.get("/cart/apple")
    client.get("/cart/pear")
    assert client.get("/read").json["cart"] == ["apple", "pear"]


def test_flash_queues_survive_a_redirect(client: webtest.TestApp) -> None:
    response = client.post("/flash")
    assert response.status_int == 302
    assert response.follow().json == {
        "peek": ["disk full"],
        "info": ["saved", "saved"],
        "error": ["disk full"],
    }
    assert client.get("/messages").json == {"peek": [], "info": [], "error": []}


def test_csrf_token(client: webtest.TestApp) -> None:
    token = client.get("/csrf").text
    assert len(token) == 40
    assert client.get("/csrf").text == token  # stable within the session
    assert client.post("/protected", {"csrf_token": token}).text == "accepted"
    assert client.post("/protected", headers={"X-CSRF-Token": token}).text == "accepted"
    client.post("/protected", {"csrf_token": "forged"}, status=400)
    client.post("/protected", status=400)
    fresh = client.get("/csrf/new").text
    assert fresh != token
    client.post("/protected", {"csrf_token": token}, status=400)
    assert client.post("/protected", {"csrf_token": fresh}).text == "accepted"


def test_invalidate_renews_and_empties(client: webtest.TestApp) -> None:
    client.get("/")
    client.get("/")
    before = client.cookies["session"]
    response = client.post("/login", {"user": "alice"})
    after = token_of(response)
    assert id_of(after) != id_of(before)
    assert response.follow().json == {"user": "alice"}  # the counter is gone

    attacker = webtest.TestApp(client.app)
    attacker.set_cookie("session", before)
    assert attacker.get("/read").json == {}  # the old token no longer works


def test_invalidate_then_flash(client: webtest.TestApp) -> None:
    client.post("/login", {"user": "alice"})
    response = client.get("/logout")
    assert response.follow().json == {"peek": [], "info": ["bye"], "error": []}
    assert client.get("/read").json == {}


def test_settings_reach_the_cookie(make_client: t.Callable[..., t.Any]) -> None:
    client, middleware = make_client(
        **{
            "wsgi_session.cookie_name": "sid",
            "wsgi_session.cookie_same_site": "Strict",
            "wsgi_session.longterm_lifetime": "7200",
        }
    )
    [(_, attrs)] = set_cookies(client.get("/remember"), "sid")  # long-term: a persistent cookie
    assert int(attrs["max-age"]) == 7200
    assert attrs["samesite"] == "Strict"
    assert isinstance(middleware.store, MemoryStore)


def test_pyramid_session_dict_api(make_client: t.Callable[..., t.Any]) -> None:
    _, middleware = make_client()
    seen: dict[str, t.Any] = {}

    def probe(environ: dict[str, t.Any], start_response: t.Callable[..., t.Any]) -> list[bytes]:
        session = PyramidSession(environ["session"])
        session.update(a=1, b=2)
        seen["items"] = sorted(session.items())
        seen["pop"] = session.pop("a")
        seen["popitem"] = session.popitem()
        seen["empty"] = len(session) == 0
        session["c"] = 3
        session.clear()
        seen["cleared"] = dict(session)
        seen["raw"] = session.raw is environ["session"]
        start_response("200 OK", [])
        return [b""]

    with SessionMiddleware(probe, middleware.config) as probe_middleware:
        webtest.TestApp(probe_middleware).get("/")
    assert seen == {
        "items": [("a", 1), ("b", 2)],
        "pop": 1,
        "popitem": ("b", 2),
        "empty": True,
        "cleared": {},
        "raw": True,
    }


@pytest.mark.redis
def test_redis_store_from_settings(make_client: t.Callable[..., t.Any], redis_store: t.Any) -> None:
    client, middleware = make_client(
        **{"wsgi_session.store_url": REDIS_URL, "wsgi_session.store_prefix": redis_store.prefix}
    )
    assert type(middleware.store).__name__ != "MemoryStore"
    assert client.get("/").text == "1"
    assert client.get("/").text == "2"
    session_id = id_of(client.cookies["session"])
    assert redis_store.load(session_id) is not None  # same server, same prefix
    assert client.post("/flash").follow().json["info"] == ["saved", "saved"]
    token = client.get("/csrf").text
    assert client.post("/protected", {"csrf_token": token}).text == "accepted"
