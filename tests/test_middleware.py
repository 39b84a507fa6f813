"""The WSGI flow: cookies only when needed, Vary, cookie attributes, bodies,
exceptions, bad tokens and store outages."""

from __future__ import annotations

import gc
import itertools
from datetime import timedelta

import pytest
import webtest
from core_testkit import (
    SECRET,
    build_environ,
    call_wsgi,
    counter_view,
    header_values,
    id_of,
    make_config,
    read_view,
    set_cookies,
    token_of,
    view_app,
)

from wsgi_session import SessionMiddleware, StoreUnavailable
from wsgi_session.signing import Token, TokenSigner
from wsgi_session.stores import MemoryStore


def untouched_view(session, environ):
    return "no session here"


def id_view(session, environ):
    return session.id


def unknown_token(session_id="U" * 32):
    return TokenSigner([SECRET.encode()]).dumps(Token(session_id, False, 1_800_000_000))


# -- no Set-Cookie noise ----------------------------------------------------------------


@pytest.mark.parametrize("view", [untouched_view, read_view, id_view, lambda s, e: "x" in s])
def test_visitor_who_never_writes_gets_no_cookie_and_no_row(make_client, view):
    client, middleware = make_client(view)
    for _ in range(3):
        response = client.get("/")
        assert response.status_int == 200
        assert "Set-Cookie" not in response.headers
    assert middleware.store.count() == 0
    assert middleware.stats.created == 0


def test_visitor_who_writes_gets_one_cookie_and_one_row(make_client):
    client, middleware = make_client(counter_view)
    response = client.get("/")
    assert len(header_values(response, "Set-Cookie")) == 1
    assert middleware.store.count() == 1
    token = token_of(response)
    assert middleware.store.load(id_of(token)).values == {"count": b"1"}


def test_reading_an_existing_session_sends_no_cookie_and_writes_nothing(make_client):
    client, middleware = make_client(lambda s, e: counter_view(s, e) if e["PATH_INFO"] == "/w" else dict(s))
    client.get("/w")
    version = middleware.store.load(id_of(client.cookies["session"])).version
    for _ in range(3):
        response = client.get("/r")
        assert response.json == {"count": 1}
        assert "Set-Cookie" not in response.headers
    assert middleware.store.count() == 1
    assert middleware.store.load(id_of(client.cookies["session"])).version == version


def test_writing_an_existing_session_sends_no_new_cookie(make_client):
    client, _ = make_client(counter_view)
    client.get("/")
    for expected in ("2", "3", "4"):
        response = client.get("/")
        assert response.text == expected
        assert "Set-Cookie" not in response.headers


# -- Vary -------------------------------------------------------------------------------


def test_no_vary_when_session_untouched(make_client):
    client, _ = make_client(untouched_view)
    assert "Vary" not in client.get("/").headers


@pytest.mark.parametrize("view", [read_view, id_view, counter_view, lambda s, e: len(s)])
def test_vary_cookie_when_session_touched(make_client, view):
    client, _ = make_client(view)
    response = client.get("/")
    assert header_values(response, "Vary") == ["Cookie"]


def _app_with_headers(headers, touch=True):
    def app(environ, start_response):
        if touch:
            environ["session"].get("x")
        start_response("200 OK", [("Content-Type", "text/plain"), *headers])
        return [b"ok"]

    return app


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ("Accept-Encoding", "Accept-Encoding, Cookie"),
        ("Accept-Encoding, Accept-Language", "Accept-Encoding, Accept-Language, Cookie"),
        ("Cookie", "Cookie"),
        ("cookie", "cookie"),
        ("Accept-Encoding, COOKIE", "Accept-Encoding, COOKIE"),
        ("*", "*"),
        ("Accept-Encoding, *", "Accept-Encoding, *"),
    ],
)
def test_vary_merged_into_existing_header(make_middleware, existing, expected):
    middleware = make_middleware(_app_with_headers([("Vary", existing)]))
    result = call_wsgi(middleware)
    assert header_values(result.headers, "Vary") == [expected]


def test_existing_vary_untouched_when_session_unused(make_middleware):
    middleware = make_middleware(_app_with_headers([("Vary", "Accept-Encoding")], touch=False))
    assert header_values(call_wsgi(middleware).headers, "Vary") == ["Accept-Encoding"]


def test_vary_on_responses_that_set_or_clear_cookies(make_client):
    client, _ = make_client(lambda s, e: s.destroy() if e["PATH_INFO"] == "/out" else counter_view(s, e))
    assert header_values(client.get("/"), "Vary") == ["Cookie"]
    assert header_values(client.get("/out"), "Vary") == ["Cookie"]


# -- cookie attributes ---------------------------------------------------------------------


def test_default_cookie_attributes(make_client):
    client, _ = make_client(counter_view)
    [(value, attrs)] = set_cookies(client.get("/"))
    assert value
    assert "httponly" in attrs
    assert attrs["path"] == "/"
    assert attrs["samesite"] == "Lax"
    assert "secure" not in attrs
    assert "domain" not in attrs
    assert "partitioned" not in attrs
    assert "max-age" not in attrs  # a browser-session cookie by default
    assert "expires" not in attrs


def test_configured_cookie_attributes(make_middleware):
    middleware = make_middleware(
        view_app(counter_view),
        cookie_name="sid",
        cookie_path="/app",
        cookie_domain="example.com",
        cookie_secure=True,
        cookie_http_only=False,
        cookie_same_site="None",
        cookie_partitioned=True,
    )
    result = call_wsgi(middleware, path="/app/page")
    assert set_cookies(result.headers, "session") == []
    [(_, attrs)] = set_cookies(result.headers, "sid")
    assert attrs["path"] == "/app"
    assert attrs["domain"].lstrip(".") == "example.com"
    assert "secure" in attrs
    assert "httponly" not in attrs
    assert attrs["samesite"] == "None"
    assert "partitioned" in attrs


def test_same_site_can_be_omitted(make_middleware):
    middleware = make_middleware(view_app(counter_view), cookie_same_site=None)
    [(_, attrs)] = set_cookies(call_wsgi(middleware).headers)
    assert "samesite" not in attrs


def test_host_prefix_cookie(make_middleware):
    middleware = make_middleware(view_app(counter_view), cookie_host_prefix=True, cookie_secure=True)
    first = call_wsgi(middleware)
    assert set_cookies(first.headers, "session") == []
    [(token, attrs)] = set_cookies(first.headers, "__Host-session")
    assert "secure" in attrs
    assert attrs["path"] == "/"
    assert "domain" not in attrs

    # The prefixed name is read back; the plain name is not accepted.
    assert call_wsgi(middleware, cookie=f"__Host-session={token}").body == b"2"
    plain = call_wsgi(middleware, cookie=f"session={token}")
    assert plain.body == b"1"


def test_secure_cookie_round_trip_over_https(make_client):
    client, _ = make_client(counter_view, cookie_secure=True, extra_environ={"wsgi.url_scheme": "https"})
    assert client.get("https://localhost/").text == "1"
    assert client.get("https://localhost/").text == "2"


def test_cookie_tossing_first_valid_value_wins(make_middleware):
    middleware = make_middleware(view_app(counter_view))
    token = set_cookies(call_wsgi(middleware).headers)[0][0]
    tossed = f"session=planted-by-sibling; other=1; session={token}"
    assert call_wsgi(middleware, cookie=tossed).body == b"2"
    assert call_wsgi(middleware, cookie=f"session={token}; session=junk").body == b"3"


# -- when a cookie is sent ----------------------------------------------------------------


def lifecycle_view(session, environ):
    action = environ["PATH_INFO"].strip("/")
    if action == "write":
        session["n"] = session.get("n", 0) + 1
    elif action == "renew":
        session.renew()
    elif action == "longterm":
        session.set_longterm(True)
    elif action == "shortterm":
        session.set_longterm(False)
    elif action == "destroy":
        session.destroy()
    return dict(session)


def test_set_cookie_only_when_the_token_must_change(make_client, clock):
    client, _ = make_client(lifecycle_view, lifetime=timedelta(hours=1), cookie_persistent=True)

    def cookies(path):
        return set_cookies(client.get(path))

    [(first, attrs)] = cookies("/write")  # new
    assert attrs["max-age"] == "3600"
    assert cookies("/read") == []
    assert cookies("/write") == []

    [(renewed, _)] = cookies("/renew")  # renewed
    assert id_of(renewed) != id_of(first)
    assert cookies("/write") == []

    [(longterm, attrs)] = cookies("/longterm")  # long-term on
    assert attrs["max-age"] == str(int(timedelta(days=60).total_seconds()))
    assert id_of(longterm) == id_of(renewed)
    assert cookies("/longterm") == []  # no change, no cookie
    [(_, attrs)] = cookies("/shortterm")  # long-term off
    assert attrs["max-age"] == "3600"

    clock.advance(1000)
    assert cookies("/read") == []  # refresh not due yet
    clock.advance(900)  # more than half of Max-Age since issue
    [(refreshed, attrs)] = cookies("/read")
    assert attrs["max-age"] == "3600"
    assert id_of(refreshed) == id_of(renewed)
    assert cookies("/read") == []

    [(cleared, attrs)] = cookies("/destroy")  # destroyed
    assert cleared == ""
    assert attrs["max-age"] == "0"
    assert cookies("/read") == []  # no token, nothing to clear


def test_destroy_clears_cookie_with_the_same_attributes(make_middleware):
    fields = {
        "cookie_path": "/app",
        "cookie_domain": "example.com",
        "cookie_secure": True,
        "cookie_same_site": "Strict",
        "cookie_partitioned": True,
    }
    middleware = make_middleware(view_app(lifecycle_view), **fields)
    [(token, issued)] = set_cookies(call_wsgi(middleware, path="/write").headers)
    result = call_wsgi(middleware, path="/destroy", cookie=f"session={token}")
    [(value, cleared)] = set_cookies(result.headers)
    assert value == ""
    assert cleared["max-age"] == "0"
    assert "1970" in cleared["expires"]
    strip = {"max-age", "expires"}
    assert {k: v for k, v in cleared.items() if k not in strip} == {
        k: v for k, v in issued.items() if k not in strip
    }
    assert middleware.store.count() == 0


def test_destroy_with_host_prefix_clears_the_prefixed_cookie(make_middleware):
    middleware = make_middleware(view_app(lifecycle_view), cookie_host_prefix=True, cookie_secure=True)
    [(token, _)] = set_cookies(call_wsgi(middleware, path="/write").headers, "__Host-session")
    result = call_wsgi(middleware, path="/destroy", cookie=f"__Host-session={token}")
    [(value, attrs)] = set_cookies(result.headers, "__Host-session")
    assert value == ""
    assert attrs["max-age"] == "0"
    assert "secure" in attrs


def test_destroying_a_never_stored_session_sends_nothing(make_client):
    client, middleware = make_client(lambda s, e: s.destroy())
    response = client.get("/")
    assert "Set-Cookie" not in response.headers
    assert middleware.store.count() == 0


# -- bad tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cookie", ["garbage", "a.b.c.d", unknown_token(), "x" * 5000, unknown_token()[:-3] + "AAA"]
)
def test_invalid_or_unknown_token_without_write_clears_the_cookie(make_client, cookie):
    client, middleware = make_client(read_view)
    response = client.get("/", headers={"Cookie": f"session={cookie}"})
    assert response.status_int == 200
    assert response.json == {}
    [(value, attrs)] = set_cookies(response)
    assert value == ""
    assert attrs["max-age"] == "0"
    assert attrs["path"] == "/"
    assert middleware.store.count() == 0


def test_invalid_token_with_write_gets_a_new_session(make_client):
    client, middleware = make_client(counter_view)
    response = client.get("/", headers={"Cookie": f"session={unknown_token()}"})
    assert response.text == "1"
    token = token_of(response)
    assert id_of(token) != "U" * 32
    assert middleware.store.load(id_of(token)) is not None
    assert middleware.store.load("U" * 32) is None


def test_invalid_token_with_untouched_session_sends_nothing(make_client):
    client, _ = make_client(untouched_view)
    response = client.get("/", headers={"Cookie": "session=garbage"})
    assert "Set-Cookie" not in response.headers


def test_other_cookies_are_left_alone(make_client):
    client, _ = make_client(read_view)
    response = client.get("/", headers={"Cookie": "theme=dark; sessionid=abc; xsession=1"})
    assert response.json == {}
    assert "Set-Cookie" not in response.headers


# -- bodies ------------------------------------------------------------------------------------


def test_changes_made_while_the_body_streams_are_saved(make_middleware):
    def app(environ, start_response):
        session = environ["session"]
        session["count"] = session.get("count", 0) + 1
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            yield b"streaming "
            session["streamed"] = session.get("streamed", 0) + 1
            session.setdefault("log", []).append("chunk")
            yield b"done"

        return body()

    middleware = make_middleware(app)
    client = webtest.TestApp(middleware)
    response = client.get("/")
    assert response.text == "streaming done"
    assert len(set_cookies(response)) == 1
    client.get("/")
    session_id = id_of(client.cookies["session"])
    data = middleware.advanced.load(session_id)
    assert data == {"count": 2, "streamed": 2, "log": ["chunk", "chunk"]}


def test_new_session_created_only_while_streaming_is_not_saved(make_middleware):
    # Documented: the headers are gone, so the new id cannot reach the client.
    def app(environ, start_response):
        session = environ["session"]
        session.get("x")
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            yield b"a"
            session["late"] = True

        return body()

    middleware = make_middleware(app)
    result = call_wsgi(middleware)
    assert set_cookies(result.headers) == []
    assert middleware.store.count() == 0
    assert middleware.stats.late_changes_dropped == 1


def test_app_that_calls_start_response_lazily_in_its_generator(make_middleware):
    def app(environ, start_response):
        session = environ["session"]
        session["before"] = session.get("before", 0) + 1
        start_response("200 OK", [("Content-Type", "text/plain"), ("Vary", "Accept")])
        yield b"first "
        session["after"] = session.get("after", 0) + 1
        yield b"second"

    middleware = make_middleware(app)
    client = webtest.TestApp(middleware)
    response = client.get("/")
    assert response.text == "first second"
    assert len(set_cookies(response)) == 1
    assert header_values(response, "Vary") == ["Accept, Cookie"]
    response = client.get("/")
    assert "Set-Cookie" not in response.headers
    data = middleware.advanced.load(id_of(client.cookies["session"]))
    assert data == {"before": 2, "after": 2}


def test_lazy_generator_without_start_response_is_an_error(make_middleware):
    def app(environ, start_response):
        environ["session"]["x"] = 1
        yield b"oops"

    middleware = make_middleware(app)
    with pytest.raises(RuntimeError, match="start_response"):
        call_wsgi(middleware)
    assert middleware.store.count() == 0


def test_legacy_write_callable(make_middleware):
    def app(environ, start_response):
        session = environ["session"]
        session["before_write"] = session.get("before_write", 0) + 1
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"hello ")
        session["after_write"] = session.get("after_write", 0) + 1
        return [b"world"]

    middleware = make_middleware(app)
    first = call_wsgi(middleware)
    assert first.body == b"hello world"
    [(token, _)] = set_cookies(first.headers)
    assert header_values(first.headers, "Vary") == ["Cookie"]
    second = call_wsgi(middleware, cookie=f"session={token}")
    assert set_cookies(second.headers) == []
    assert middleware.advanced.load(id_of(token)) == {"before_write": 2, "after_write": 2}


def test_legacy_write_through_webtest(make_middleware):
    def app(environ, start_response):
        environ["session"]["w"] = "ok"
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written")
        return []

    client = webtest.TestApp(make_middleware(app))
    response = client.get("/")
    assert response.text == "written"
    assert len(set_cookies(response)) == 1


class ClosingBody:
    def __init__(self, chunks):
        self.chunks = chunks
        self.closed = 0

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        self.closed += 1


@pytest.mark.parametrize("touch", [True, False])
def test_app_body_close_is_called_once(make_middleware, touch):
    bodies = []

    def app(environ, start_response):
        if touch:
            environ["session"]["x"] = 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        body = ClosingBody([b"a", b"b"])
        bodies.append(body)
        return body

    result = call_wsgi(make_middleware(app))
    assert result.body == b"ab"
    assert bodies[0].closed == 1


def test_untouched_list_body_passes_through(make_middleware):
    body = [b"plain"]

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    middleware = make_middleware(app)
    assert middleware(build_environ(), lambda *a: None) is body


# -- exceptions ---------------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_exception_in_app_propagates_and_saves_nothing(make_middleware):
    def app(environ, start_response):
        session = environ["session"]
        if environ["PATH_INFO"] == "/fail":
            session["half"] = "written"
            session["count"] = 999
            raise Boom("view failed")
        return view_app(counter_view)(environ, start_response)

    middleware = make_middleware(app)
    with pytest.raises(Boom):
        call_wsgi(middleware, path="/fail")
    assert middleware.store.count() == 0

    [(token, _)] = set_cookies(call_wsgi(middleware).headers)
    with pytest.raises(Boom):
        call_wsgi(middleware, path="/fail", cookie=f"session={token}")
    assert middleware.advanced.load(id_of(token)) == {"count": 1}


def test_exception_in_lazy_generator_before_first_chunk_saves_nothing(make_middleware):
    def app(environ, start_response):
        environ["session"]["x"] = 1
        raise Boom("before start_response")
        yield b"never"

    middleware = make_middleware(app)
    with pytest.raises(Boom):
        call_wsgi(middleware)
    assert middleware.store.count() == 0


def test_error_page_with_exc_info_still_works(make_middleware):
    def app(environ, start_response):
        environ["session"]["seen_error"] = True
        try:
            raise Boom("handled")
        except Boom:
            import sys

            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"error page"]

    middleware = make_middleware(app)
    result = call_wsgi(middleware)
    assert result.status.startswith("500")
    assert result.body == b"error page"


def test_environ_key_is_configurable(make_middleware):
    def app(environ, start_response):
        assert "session" not in environ
        environ["my.session"]["k"] = "v"
        start_response("200 OK", [])
        return [b""]

    middleware = make_middleware(app, environ_key="my.session")
    [(token, _)] = set_cookies(call_wsgi(middleware).headers)
    assert middleware.advanced.load(id_of(token)) == {"k": "v"}


# -- store outages --------------------------------------------------------------------------------


class FlakyStore(MemoryStore):
    def __init__(self):
        super().__init__()
        self.down = False

    def load(self, session_id):
        if self.down:
            raise StoreUnavailable("store down")
        return super().load(session_id)

    def apply(self, diffs):
        if self.down:
            raise StoreUnavailable("store down")
        return super().apply(diffs)


def test_store_outage_fails_closed_with_503(make_client):
    store = FlakyStore()
    client, middleware = make_client(counter_view, store=store, retry_after=timedelta(seconds=7))
    client.get("/")
    session_id = id_of(client.cookies["session"])
    store.down = True
    response = client.get("/", expect_errors=True)
    assert response.status_int == 503
    assert response.headers["Retry-After"] == "7"
    assert "Set-Cookie" not in response.headers
    store.down = False
    assert middleware.advanced.load(session_id) == {"count": 1}
    assert client.get("/").text == "2"


def test_a_subclass_answers_an_outage_its_own_way():
    """``outage_response`` overridden in a subclass is what the request path
    calls, in both builds (the compiled path calls the middleware's class)."""

    class Apologetic(SessionMiddleware):
        def outage_response(self, start_response, exc_info):
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")], exc_info)
            return (b"sorry",)  # any iterable, as WSGI allows

    store = FlakyStore()
    middleware = Apologetic(view_app(counter_view), make_config(), store=store)
    first = call_wsgi(middleware)
    store.down = True
    again = call_wsgi(middleware, cookie=f"session={set_cookies(first.headers)[0][0]}")
    assert again.status == "503 Service Unavailable"
    assert again.body == b"sorry"
    middleware.close()


def test_the_wrapped_app_can_be_replaced_and_a_mixin_override_is_called():
    calls = []

    class Auditing:
        def finish(self, session, headers, late, status="", final=False):
            calls.append(late)
            super().finish(session, headers, late, status, final)

    class AuditedMiddleware(Auditing, SessionMiddleware):
        pass

    middleware = AuditedMiddleware(view_app(lambda session, environ: "old"), make_config())
    middleware.app = view_app(counter_view)
    assert call_wsgi(middleware).body == b"1"
    assert calls == [False]
    middleware.close()


def test_store_outage_on_write_fails_closed(make_client):
    store = FlakyStore()
    client, _ = make_client(counter_view, store=store)
    client.get("/")

    original = store.apply

    def broken(diffs):
        raise StoreUnavailable("write failed")

    store.apply = broken
    response = client.get("/", expect_errors=True)
    assert response.status_int == 503
    store.apply = original
    assert client.get("/").text == "2"


def test_store_outage_fail_open_serves_an_empty_unsaved_session(make_client):
    store = FlakyStore()
    client, middleware = make_client(counter_view, store=store, outage_policy="fail_open")
    client.get("/")
    session_id = id_of(client.cookies["session"])
    store.down = True
    response = client.get("/")
    assert response.status_int == 200
    assert response.text == "1"  # an empty session
    assert "Set-Cookie" not in response.headers
    store.down = False
    assert middleware.advanced.load(session_id) == {"count": 1}


@pytest.mark.parametrize("policy", ["fail_closed", "fail_open"])
def test_a_view_that_swallows_the_outage_keeps_a_usable_empty_session(make_client, policy):
    # The session stays a complete (empty) mapping after the failed load:
    # fail closed still answers 503, fail open answers the view's page; neither
    # lets the write made after the failure reach the stored session.
    store = FlakyStore()
    seen = []

    def view(session, environ):
        try:
            count = session.get("count", 0)
        except StoreUnavailable:
            seen.append((session.get("count", "absent"), "count" in session, len(session)))
            session["count"] = 100
            return "swallowed"
        session["count"] = count + 1
        return str(count + 1)

    client, middleware = make_client(view, store=store, outage_policy=policy)
    client.get("/")
    session_id = id_of(client.cookies["session"])
    store.down = True
    response = client.get("/", expect_errors=True)
    store.down = False
    if policy == "fail_closed":
        assert seen == [("absent", False, 0)]
        assert response.status_int == 503
    else:
        assert seen == []  # fail open: the load answers an empty session instead of raising
        assert (response.status_int, response.text) == (200, "1")
    assert "Set-Cookie" not in response.headers
    assert middleware.advanced.load(session_id) == {"count": 1}


def test_vary_merged_into_a_header_given_as_a_list():
    # PEP 3333 asks for tuples, but lists are common enough to be accepted.
    middleware = SessionMiddleware(_app_with_headers([["Vary", "Accept"]]), make_config())
    assert header_values(call_wsgi(middleware).headers, "Vary") == ["Accept, Cookie"]


def _eager_app(environ, start_response):
    environ["session"]["n"] = 1
    write = start_response("200 OK", (("Content-Type", "text/plain"),), None)
    write(bytearray(b"a"))
    return iter([bytearray(b"b"), memoryview(b"c")])


def _lazy_app(environ, start_response):
    environ["session"]["n"] = 1
    start_response("200 OK", (("Content-Type", "text/plain"),))
    yield bytearray(b"a")
    yield memoryview(b"bc")


@pytest.mark.parametrize("app", [_eager_app, _lazy_app])
def test_what_the_app_hands_over_goes_to_the_server_as_it_came(app):
    """Headers as a tuple, chunks that are not ``bytes`` (through ``write()``,
    first of a lazy body, later ones): servers take them, and so does the
    middleware, compiled or not (a compiled annotation would refuse them)."""
    response = call_wsgi(SessionMiddleware(app, make_config()))
    assert response.status == "200 OK"
    assert response.body == b"abc"
    assert header_values(response.headers, "Vary") == ["Cookie"]
    assert len(set_cookies(response.headers)) == 1


def test_middleware_is_a_context_manager_and_close_is_idempotent():
    config = make_config()
    with SessionMiddleware(view_app(counter_view), config) as middleware:
        assert call_wsgi(middleware).body == b"1"
    middleware.close()
    assert isinstance(middleware.store, MemoryStore)


# -- id collisions ---------------------------------------------------------------------------------


def test_new_session_never_joins_an_existing_id(make_middleware):
    ids = itertools.chain(["A" * 32, "A" * 32], (f"{n:032d}" for n in itertools.count()))

    def view(session, environ):
        if environ["PATH_INFO"] == "/victim":
            session["secret"] = "victim-only"
        else:
            session["visitor"] = 2
        return dict(session)

    middleware = make_middleware(view_app(view), id_generator=lambda: next(ids))
    victim = set_cookies(call_wsgi(middleware, path="/victim").headers)[0][0]
    other = call_wsgi(middleware, path="/other")
    [(token, _)] = set_cookies(other.headers)
    assert id_of(token) != id_of(victim)
    assert b"victim-only" not in call_wsgi(middleware, cookie=f"session={token}").body
    assert middleware.advanced.load(id_of(victim)) == {"secret": "victim-only"}


def test_custom_id_generator_is_used(make_middleware):
    ids = (f"custom-{n:024d}" for n in itertools.count())
    middleware = make_middleware(view_app(counter_view), id_generator=lambda: next(ids))
    [(token, _)] = set_cookies(call_wsgi(middleware).headers)
    assert id_of(token) == "custom-" + "0" * 24


# -- server errors ------------------------------------------------------------------------------


def test_server_error_response_saves_nothing(make_middleware):
    def app(environ, start_response):
        session = environ["session"]
        session["n"] = session.get("n", 0) + 1
        status = "500 Internal Server Error" if environ["PATH_INFO"] == "/fail" else "200 OK"
        start_response(status, [("Content-Type", "text/plain")])
        return [str(session["n"]).encode()]

    middleware = make_middleware(app)
    first = call_wsgi(middleware)
    [(token, _)] = set_cookies(first.headers)
    failed = call_wsgi(middleware, path="/fail", cookie=f"session={token}")
    assert failed.status.startswith("500")
    assert failed.body == b"2"  # the view saw its own change...
    assert set_cookies(failed.headers) == []
    assert header_values(failed.headers, "Vary") == ["Cookie"]
    assert middleware.advanced.load(id_of(token)) == {"n": 1}  # ...but it was not kept
    assert middleware.stats.discarded_on_error == 1
    brand_new = call_wsgi(middleware, path="/fail")
    assert set_cookies(brand_new.headers) == []  # no session created by a failed request


def _plain_request(middleware, cookie, address="10.0.0.1"):
    """One GET straight through ``middleware`` (no test client, which keeps
    objects of its own): the body, and the cookie to send next."""
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": address, "wsgi.url_scheme": "http"}
    if cookie:
        environ["HTTP_COOKIE"] = cookie
    sent = []
    body = b"".join(middleware(environ, lambda status, headers, exc_info=None: sent.extend(headers)))
    cookies = [value.split(";", 1)[0] for name, value in sent if name == "Set-Cookie"]
    return body, cookies[0] if cookies else cookie


@pytest.mark.parametrize("bound", [False, True])
def test_a_request_that_uses_its_session_leaves_no_reference_cycle(make_middleware, bound):
    """``environ`` holds the session, and the session lets go of ``environ``
    when it loads: a request's objects (the environ and all it refers to)
    are freed when the request ends, not left to the cyclic garbage
    collector (which gunicorn workers ran once every ~40 requests for it).
    A token bound to the client is still bound to this request's."""

    def app(environ, start_response):
        session = environ["session"]
        session["n"] = session.get("n", 0) + 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d" % session["n"]]

    middleware = make_middleware(app, bind_ip=bound)

    def call(cookie, address="10.0.0.1"):
        return _plain_request(middleware, cookie, address)

    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        body, cookie = call("")  # a new visitor
        assert (body, call(cookie)[0], call(cookie)[0]) == (b"1", b"2", b"3")  # increments
        gc.collect()
        left = [
            type(thing).__name__ for thing in gc.garbage if type(thing).__module__.startswith("wsgi_session")
        ]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []
    if bound:  # the token names the client it was issued to
        assert call(cookie, address="10.0.0.2")[0] == b"1"


def test_a_new_token_is_bound_to_what_the_request_was_verified_with(make_middleware):
    """The client binding of a new token is the request's at the session's
    first access, the one its token was checked against: a middleware that
    rewrites ``REMOTE_ADDR`` further in (a proxy fix inside ours) after the
    session was first touched does not make the next request's token fail.
    (A token issued with the rewritten address was rejected every time.)"""

    def app(environ, start_response):
        session = environ["session"]
        session["n"] = session.get("n", 0) + 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d" % session["n"]]

    def rewrite_address(environ, start_response):
        environ["REMOTE_ADDR"] = "10.9.9.9"
        return app(environ, start_response)

    def touch_first(environ, start_response):
        environ["session"].get("n")
        return rewrite_address(environ, start_response)

    middleware = make_middleware(touch_first, bind_ip=True)

    def call(cookie):
        return _plain_request(middleware, cookie)

    body, cookie = call("")
    assert body == b"1"
    assert call(cookie)[0] == b"2"
