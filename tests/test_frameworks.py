"""The middleware under real frameworks: Flask, Bottle and Pyramid."""

from __future__ import annotations

import bottle
import flask
import pytest
import webtest
from core_testkit import header_values, id_of, make_config, set_cookies
from pyramid.config import Configurator
from pyramid.response import Response

from wsgi_session import SessionMiddleware

# -- Flask ----------------------------------------------------------------------------------


@pytest.fixture
def flask_client(clock):
    app = flask.Flask("flask_under_test")

    @app.route("/")
    def count():
        session = flask.request.environ["session"]
        session["count"] = session.get("count", 0) + 1
        return str(session["count"])

    @app.route("/read")
    def read():
        return flask.jsonify(dict(flask.request.environ["session"]))

    @app.route("/login", methods=["POST"])
    def login():
        session = flask.request.environ["session"]
        session.renew()
        session["user"] = flask.request.form["user"]
        return flask.redirect("/read")

    @app.route("/logout")
    def logout():
        flask.request.environ["session"].destroy()
        return "bye"

    @app.route("/stream")
    def stream():
        session = flask.request.environ["session"]

        @flask.stream_with_context
        def generate():
            yield "a"
            session["streamed"] = True
            yield "b"

        return flask.Response(generate(), mimetype="text/plain")

    @app.route("/static-page")
    def static_page():
        return "no session"

    app.wsgi_app = SessionMiddleware(app.wsgi_app, make_config(), clock=clock)
    yield webtest.TestApp(app), app.wsgi_app
    app.wsgi_app.close()


def test_flask_counter(flask_client):
    client, _ = flask_client
    assert client.get("/").text == "1"
    assert client.get("/").text == "2"
    response = client.get("/")
    assert response.text == "3"
    assert "Set-Cookie" not in response.headers
    assert header_values(response, "Vary") == ["Cookie"]


def test_flask_separate_clients_have_separate_sessions(flask_client):
    client, middleware = flask_client
    client.get("/")
    client.get("/")
    other = webtest.TestApp(client.app)
    assert other.get("/").text == "1"
    assert middleware.store.count() == 2


def test_flask_login_renews_and_logout_destroys(flask_client):
    client, middleware = flask_client
    client.get("/")
    before = id_of(client.cookies["session"])
    response = client.post("/login", {"user": "alice"}).follow()
    assert response.json == {"count": 1, "user": "alice"}
    after = id_of(client.cookies["session"])
    assert after != before
    logout = client.get("/logout")
    assert set_cookies(logout)[0][0] == ""
    assert not middleware.advanced.exists(after)
    assert not middleware.advanced.exists(before)  # only the renewal's short-lived stub is left
    assert client.get("/read").json == {}


def test_flask_streamed_response_changes_are_saved(flask_client):
    client, _ = flask_client
    client.get("/")
    assert client.get("/stream").text == "ab"
    assert client.get("/read").json == {"count": 1, "streamed": True}


def test_flask_view_without_session_is_untouched(flask_client):
    client, middleware = flask_client
    response = client.get("/static-page")
    assert "Set-Cookie" not in response.headers
    assert "Vary" not in response.headers
    assert middleware.store.count() == 0


# -- Bottle -----------------------------------------------------------------------------------


@pytest.fixture
def bottle_client(make_middleware):
    app = bottle.Bottle()

    @app.route("/")
    def count():
        session = bottle.request.environ["session"]
        session["count"] = session.get("count", 0) + 1
        return str(session["count"])

    @app.route("/items/<item>")
    def add(item):
        session = bottle.request.environ["session"]
        session.setdefault("items", []).append(item)
        return {"items": session["items"]}

    @app.route("/logout")
    def logout():
        bottle.request.environ["session"].destroy()
        return "bye"

    middleware = make_middleware(app)
    return webtest.TestApp(middleware), middleware


def test_bottle_counter(bottle_client):
    client, _ = bottle_client
    assert [client.get("/").text for _ in range(4)] == ["1", "2", "3", "4"]


def test_bottle_nested_mutation(bottle_client):
    client, _ = bottle_client
    client.get("/items/tea")
    assert client.get("/items/milk").json == {"items": ["tea", "milk"]}


def test_bottle_logout(bottle_client):
    client, middleware = bottle_client
    client.get("/")
    client.get("/logout")
    assert middleware.store.count() == 0
    assert client.get("/").text == "1"


# -- Pyramid -----------------------------------------------------------------------------------


def pyramid_count(request):
    session = request.environ["session"]
    session["count"] = session.get("count", 0) + 1
    return Response(str(session["count"]), content_type="text/plain")


def pyramid_longterm(request):
    request.environ["session"].set_longterm(True)
    return Response("remembered", content_type="text/plain", headers={"Vary": "Accept-Language"})


@pytest.fixture
def pyramid_client(make_middleware):
    with Configurator() as config:
        config.add_route("count", "/")
        config.add_view(pyramid_count, route_name="count")
        config.add_route("longterm", "/remember")
        config.add_view(pyramid_longterm, route_name="longterm")
        app = config.make_wsgi_app()
    middleware = make_middleware(app)
    return webtest.TestApp(middleware), middleware


def test_pyramid_counter(pyramid_client):
    client, _ = pyramid_client
    assert [client.get("/").text for _ in range(3)] == ["1", "2", "3"]


def test_pyramid_longterm_and_vary_merge(pyramid_client):
    client, _ = pyramid_client
    client.get("/")
    response = client.get("/remember")
    [(_, attrs)] = set_cookies(response)
    assert attrs["max-age"] == str(60 * 86400)
    assert header_values(response, "Vary") == ["Accept-Language, Cookie"]
    assert client.get("/").text == "2"
