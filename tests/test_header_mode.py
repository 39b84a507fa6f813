"""REST mode: the token travels in a request/response header instead of a cookie."""

from __future__ import annotations

from datetime import timedelta

import pytest
import webtest
from core_testkit import SECRET, header_values, id_of, view_app

from wsgi_session.signing import Token, TokenSigner

HEADER = "X-Session-Token"


def api_view(session, environ):
    path = environ["PATH_INFO"]
    if path == "/inc":
        session["n"] = session.get("n", 0) + 1
    elif path == "/renew":
        session.renew()
    elif path == "/destroy":
        session.destroy()
    elif path == "/longterm":
        session.set_longterm(True)
    elif path == "/untouched":
        return "untouched"
    return dict(session)


@pytest.fixture
def api(make_middleware):
    def build(**fields):
        fields.setdefault("transport", "header")
        middleware = make_middleware(view_app(api_view), **fields)
        return webtest.TestApp(middleware), middleware

    return build


def test_token_returned_in_the_header_for_a_new_session(api):
    client, middleware = api()
    response = client.get("/inc")
    assert response.json == {"n": 1}
    [token] = header_values(response, HEADER)
    assert middleware.advanced.verify(token) == id_of(token)
    assert "Set-Cookie" not in response.headers


def test_token_read_from_the_request_header(api):
    client, _ = api()
    token = client.get("/inc").headers[HEADER]
    response = client.get("/inc", headers={HEADER: token})
    assert response.json == {"n": 2}
    assert client.get("/", headers={HEADER: token}).json == {"n": 2}


def test_token_surrounded_by_whitespace_is_accepted(api):
    client, _ = api()
    token = client.get("/inc").headers[HEADER]
    assert client.get("/", headers={HEADER: f"  {token} "}).json == {"n": 1}


def test_header_returned_only_when_the_token_changes(api):
    client, _ = api()
    token = client.get("/inc").headers[HEADER]
    for path in ("/", "/inc", "/"):
        response = client.get(path, headers={HEADER: token})
        assert header_values(response, HEADER) == []
    renewed = client.get("/renew", headers={HEADER: token}).headers[HEADER]
    assert id_of(renewed) != id_of(token)
    assert client.get("/", headers={HEADER: renewed}).json == {"n": 2}
    assert client.get("/", headers={HEADER: token}).json == {}  # old token: fresh session
    longterm = client.get("/longterm", headers={HEADER: renewed})
    assert id_of(longterm.headers[HEADER]) == id_of(renewed)


def test_vary_names_the_token_header(api):
    client, _ = api()
    response = client.get("/inc")
    assert header_values(response, "Vary") == [HEADER]
    token = response.headers[HEADER]
    assert header_values(client.get("/", headers={HEADER: token}), "Vary") == [HEADER]
    assert header_values(client.get("/untouched"), "Vary") == []


def test_custom_header_name(api):
    client, _ = api(header_name="X-Auth-Session")
    response = client.get("/inc")
    token = response.headers["X-Auth-Session"]
    assert header_values(response, HEADER) == []
    assert header_values(response, "Vary") == ["X-Auth-Session"]
    assert client.get("/inc", headers={"X-Auth-Session": token}).json == {"n": 2}
    assert client.get("/inc", headers={HEADER: token}).json == {"n": 1}  # the default name is ignored


def test_destroy_returns_an_empty_header(api):
    client, middleware = api()
    token = client.get("/inc").headers[HEADER]
    response = client.get("/destroy", headers={HEADER: token})
    assert header_values(response, HEADER) == [""]
    assert middleware.store.count() == 0
    assert client.get("/", headers={HEADER: token}).json == {}


def test_invalid_token_without_write_gets_an_empty_header(api):
    client, _ = api()
    forged = TokenSigner([SECRET.encode()]).dumps(Token("F" * 32, False, 0))
    for bad in ("garbage", forged):
        response = client.get("/", headers={HEADER: bad})
        assert response.json == {}
        assert header_values(response, HEADER) == [""]


def test_invalid_token_with_write_gets_a_new_token(api):
    client, _ = api()
    response = client.get("/inc", headers={HEADER: "garbage"})
    [token] = header_values(response, HEADER)
    assert token != ""
    assert client.get("/", headers={HEADER: token}).json == {"n": 1}


def test_cookies_are_ignored_in_header_mode(api, make_middleware):
    client, _ = api()
    token = client.get("/inc").headers[HEADER]
    response = client.get("/", headers={"Cookie": f"session={token}"})
    assert response.json == {}
    assert "Set-Cookie" not in response.headers
    assert header_values(response, HEADER) == []  # nothing presented, nothing to clear

    # And a token minted by a cookie-mode app is not read from a cookie either.
    cookie_client = webtest.TestApp(make_middleware(view_app(api_view)))
    cookie_token = cookie_client.get("/inc").headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    assert client.get("/", headers={"Cookie": f"session={cookie_token}"}).json == {}


def test_header_mode_never_sets_cookies(api, clock):
    client, _ = api(cookie_persistent=True, lifetime=timedelta(hours=1))
    token = client.get("/inc").headers[HEADER]
    responses = [client.get("/longterm", headers={HEADER: token})]
    token = responses[0].headers[HEADER]
    responses.append(client.get("/renew", headers={HEADER: token}))
    clock.advance(40 * 86400)
    responses.append(client.get("/", headers={HEADER: responses[-1].headers[HEADER]}))
    responses.append(client.get("/destroy", headers={HEADER: responses[-1].headers[HEADER]}))
    for response in responses:
        assert "Set-Cookie" not in response.headers
