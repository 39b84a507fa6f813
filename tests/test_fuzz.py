"""Hostile input: arbitrary Cookie / token headers never cause a 500 and never
reveal another session's data; a validly signed but unknown id gets a fresh
session (strict mode)."""

from __future__ import annotations

import gc
import json
import tracemalloc

import pytest
from core_testkit import SECRET, build_environ, call_wsgi, id_of, set_cookies, view_app
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from werkzeug.http import parse_cookie

from wsgi_session.signing import Token, TokenSigner

VICTIM_SECRET = "VICTIM-SECRET-7f3a9c"
VICTIM_UA = "Victim-Browser/1.0"
HEADER = "X-Session-Token"

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def fuzz_view(session, environ):
    path = environ["PATH_INFO"]
    if path == "/login":
        session["secret"] = VICTIM_SECRET
    elif path == "/write":
        session["visits"] = session.get("visits", 0) + 1
    return {"data": dict(session), "new": session.is_new, "id": session.id}


class Target:
    """A middleware with a victim session already logged in."""

    def __init__(self, make_middleware, **fields):
        self.middleware = make_middleware(view_app(fuzz_view), **fields)
        self.header_mode = fields.get("transport") == "header"
        result = call_wsgi(self.middleware, path="/login", headers={"User-Agent": VICTIM_UA})
        self.victim_token = self._token(result)
        self.victim_id = id_of(self.victim_token)

    def _token(self, result):
        if self.header_mode:
            return dict(result.headers)[HEADER]
        [(token, _)] = set_cookies(result.headers)
        return token

    def request(self, path, raw_value, user_agent="Fuzzer/0.1"):
        """A request whose Cookie (or token) header is exactly ``raw_value``."""
        environ = build_environ(path=path)
        key = "HTTP_" + HEADER.upper().replace("-", "_") if self.header_mode else "HTTP_COOKIE"
        environ[key] = raw_value
        environ["HTTP_USER_AGENT"] = user_agent
        return call_wsgi(self.middleware, environ)

    def check(self, result):
        assert result.code == 200, result
        assert VICTIM_SECRET.encode() not in result.body
        body = json.loads(result.body)
        assert body["id"] != self.victim_id
        for key, value in result.headers:
            assert VICTIM_SECRET not in value
            if key.lower() == "set-cookie" or key == HEADER:
                assert self.victim_id not in value
        return body


def as_wsgi(text):
    """What a WSGI server puts in the environ for a header sent as UTF-8 bytes."""
    return text.encode("utf-8").decode("latin-1")


def mutations(token, chars):
    """Near misses of a real token: one character changed, inserted or removed,
    truncated, extended, re-cased, flag flipped, binding appended."""
    positions = st.integers(min_value=0, max_value=len(token) - 1)
    return st.one_of(
        st.builds(lambda i, c: token[:i] + c + token[i + 1 :], positions, chars),
        st.builds(lambda i, c: token[:i] + c + token[i:], positions, chars),
        st.builds(lambda i: token[:i] + token[i + 1 :], positions),
        st.builds(lambda i: token[:i], positions),
        st.builds(lambda s: token + s, st.text(alphabet=chars, min_size=1, max_size=20)),
        st.just(token.swapcase()),
        st.just(token + "\x1f" + VICTIM_UA),
        st.just(token + "\x00"),
        st.just(token.replace(".0.", ".1.", 1)),
    ).filter(lambda value: value.strip() != token)


#: Any text a browser can send, as the WSGI server hands it over (UTF-8 bytes
#: decoded as latin-1).
wsgi_text = st.text(max_size=300).map(as_wsgi)
#: Arbitrary bytes, including ones that are not UTF-8.
raw_bytes = st.binary(max_size=300).map(lambda raw: raw.decode("latin-1"))
utf8_chars = st.characters(codec="utf-8")
latin1_chars = st.characters(codec="latin-1")


@pytest.fixture
def cookie_target(make_middleware):
    return Target(make_middleware)


@pytest.fixture
def header_target(make_middleware):
    return Target(make_middleware, transport="header")


@pytest.fixture
def ua_target(make_middleware):
    return Target(make_middleware, bind_user_agent=True)


def test_victim_session_is_real(cookie_target, header_target, ua_target):
    # The fuzz tests below are only meaningful if the victim's own token works.
    cookie = f"session={cookie_target.victim_token}"
    assert VICTIM_SECRET.encode() in cookie_target.request("/", cookie).body
    assert VICTIM_SECRET.encode() in header_target.request("/", header_target.victim_token).body
    cookie = f"session={ua_target.victim_token}"
    assert VICTIM_SECRET.encode() in ua_target.request("/", cookie, user_agent=VICTIM_UA).body


paths = st.sampled_from(["/", "/write"])
layouts = st.sampled_from(
    [
        "session={}",
        "other=1; session={}",
        'session="{}"',
        "session={0}; session={0}",
        "xsession=1; session={}",
    ]
)


@FUZZ
@given(cookie=wsgi_text, path=paths)
def test_arbitrary_cookie_header(cookie_target, cookie, path):
    cookie_target.check(cookie_target.request(path, cookie))


@FUZZ
@given(value=wsgi_text, path=paths, layout=layouts)
def test_arbitrary_session_cookie_value(cookie_target, value, path, layout):
    cookie_target.check(cookie_target.request(path, layout.format(value)))


@FUZZ
@given(data=st.data(), path=paths, layout=layouts)
def test_mutated_victim_token_in_cookie(cookie_target, data, path, layout):
    # No backslashes or quotes: inside a quoted cookie value '\\x' means 'x', so those
    # would be the victim's own token, spelled differently, not a near miss.
    chars = utf8_chars.filter(lambda c: c not in '\\"')
    bad = data.draw(mutations(cookie_target.victim_token, chars).map(as_wsgi))
    header = layout.format(bad)
    # Nor cookie syntax around the intact token (``token;``, ``token ,x``):
    # a header the cookie parser reads as the victim's token is not a near miss.
    assume(cookie_target.victim_token not in parse_cookie(header).getlist("session"))
    cookie_target.check(cookie_target.request(path, header))


NON_UTF8_COOKIES = [
    'session="\x80"',
    "xsession=\xff; session=abc",
    "session=a; session=\xe9",
    'theme=\xff; other=1; session="x"',
]


@pytest.mark.parametrize("cookie", NON_UTF8_COOKIES, ids=repr)
def test_non_utf8_cookie_header_is_not_a_500(cookie_target, cookie):
    cookie_target.check(cookie_target.request("/", cookie))


@FUZZ
@example(cookie='session="\x80"')
@given(cookie=raw_bytes)
def test_arbitrary_cookie_bytes(cookie_target, cookie):
    cookie_target.check(cookie_target.request("/", cookie))


@FUZZ
@given(value=st.one_of(raw_bytes, wsgi_text), path=paths)
def test_arbitrary_token_header(header_target, value, path):
    header_target.check(header_target.request(path, value))


@FUZZ
@given(data=st.data(), path=paths)
def test_mutated_victim_token_in_header(header_target, data, path):
    bad = data.draw(mutations(header_target.victim_token, latin1_chars))
    header_target.check(header_target.request(path, bad))


@FUZZ
@given(user_agent=st.text(max_size=40).map(as_wsgi), suffix=st.sampled_from(["", "\x1f" + VICTIM_UA, " "]))
def test_stolen_token_with_other_user_agent(ua_target, user_agent, suffix):
    assume(user_agent != VICTIM_UA)
    cookie = f"session={ua_target.victim_token}{suffix}"
    ua_target.check(ua_target.request("/", cookie, user_agent=user_agent))


ids = st.from_regex(r"[A-Za-z0-9_-]{16,128}", fullmatch=True)


@FUZZ
@given(session_id=ids, consent=st.booleans(), issued=st.integers(0, 2**40))
def test_valid_signature_unknown_id_gets_a_fresh_session(cookie_target, session_id, consent, issued):
    assume(session_id != cookie_target.victim_id)
    token = TokenSigner([SECRET.encode()]).dumps(Token(session_id, consent, issued))
    read = cookie_target.check(cookie_target.request("/", f"session={token}"))
    assert read["new"] is True
    assert read["data"] == {}
    assert read["id"] != session_id  # strict: a client-chosen id is never adopted

    result = cookie_target.request("/write", f"session={token}")
    written = cookie_target.check(result)
    [(new_token, _)] = set_cookies(result.headers)
    assert id_of(new_token) not in (session_id, cookie_target.victim_id)
    assert written["data"] == {"visits": 1}
    assert not cookie_target.middleware.advanced.exists(session_id)


def test_distinct_cookie_headers_do_not_pin_memory(cookie_target):
    def hit(n):
        result = cookie_target.request("/", f"tracking={n:08d}{'x' * 4000}")
        assert result.code == 200

    for n in range(50):  # warm-up: first-use allocations
        hit(n)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(50, 2050):
            hit(n)
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 2,000 distinct 4 KB headers are 8 MB if they are all kept.
    assert retained < 1_000_000, f"{retained} bytes retained after 2,000 requests"
