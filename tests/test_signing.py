"""Signed tokens: shape, key rotation, rejection of bad tokens, client binding."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import string

import pytest
from core_testkit import (
    OLD_SECRET,
    OTHER_SECRET,
    SECRET,
    call_wsgi,
    counter_view,
    id_of,
    make_config,
    read_view,
    token_of,
    view_app,
)
from hypothesis import given
from hypothesis import strategies as st

from wsgi_session import BadSignature, BadToken, MalformedToken
from wsgi_session.config import MAX_TOKEN_BYTES
from wsgi_session.signing import ClientBinding, Token, TokenSigner, _HmacSha256, is_valid_id, urlsafe_b64
from wsgi_session.stores import MemoryStore

SESSION_ID = "A" * 16 + "b" * 16
TOKEN_SHAPE = re.compile(r"^([A-Za-z0-9_-]{16,128})\.([01])\.([0-9a-z]+)\.([A-Za-z0-9_-]{43})$")


def signer(*secrets):
    return TokenSigner([s.encode() for s in (secrets or (SECRET,))])


def make_token(*secrets, session_id=SESSION_ID, consent=False, issued=1_800_000_000, binding=""):
    return signer(*secrets).dumps(Token(session_id, consent, issued), binding)


# -- shape ------------------------------------------------------------------------


@given(key=st.binary(max_size=200), message=st.binary(max_size=300))
def test_precomputed_hmac_is_hmac_sha256(key, message):
    # Keys shorter than, equal to and longer than SHA-256's 64-byte block.
    assert _HmacSha256(key).digest(message) == hmac.digest(key, message, hashlib.sha256)


@given(data=st.binary(max_size=100))
def test_urlsafe_b64_is_the_standard_encoding_unpadded(data):
    # Every length modulo 3 (0, 1 or 2 padding characters dropped).
    assert urlsafe_b64(data) == base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def test_default_ids_are_32_url_safe_characters_and_distinct():
    from wsgi_session.manager import _default_id

    ids = {_default_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(is_valid_id(session_id) and len(session_id) == 32 for session_id in ids)


def test_tokens_carry_the_signature_itsdangerous_makes():
    from itsdangerous import Signer

    from wsgi_session.signing import _SIGN_PURPOSE, derive_key

    token = make_token(binding="10.0.0.1")
    body, _, signature = token.rpartition(".")
    reference = Signer(
        derive_key(SECRET.encode(), _SIGN_PURPOSE),
        salt=b"wsgi_session.token",
        key_derivation="none",
        digest_method=hashlib.sha256,
    )
    assert reference.get_signature(f"{body}\x1f10.0.0.1").decode() == signature


def test_token_shape_and_contents():
    token = make_token(issued=1_800_000_000)
    match = TOKEN_SHAPE.match(token)
    assert match, token
    session_id, flags, _issued, _signature = match.groups()
    assert session_id == SESSION_ID
    assert flags == "0"
    assert signer().loads(token) == Token(SESSION_ID, False, 1_800_000_000)


def test_consent_flag_is_in_the_token():
    token = make_token(consent=True)
    assert token.split(".")[1] == "1"
    assert signer().loads(token).consent is True


def test_issued_zero_encodes_as_zero():
    token = make_token(issued=0)
    assert token.split(".")[2] == "0"
    assert signer().loads(token).issued == 0


def test_issued_time_is_signed():
    token = make_token(issued=1_800_000_000)
    assert signer().loads(token).issued == 1_800_000_000
    session_id, flags, issued, signature = token.split(".")
    forged = f"{session_id}.{flags}.{int(issued, 16) + 1:x}.{signature}"
    with pytest.raises(BadSignature):
        signer().loads(forged)


def test_token_does_not_contain_the_secret_or_binding():
    token = make_token(binding="203.0.113.9")
    assert SECRET not in token
    assert "203.0.113.9" not in token


def test_middleware_issues_well_formed_tokens(make_client, clock):
    client, _ = make_client(counter_view)
    token = token_of(client.get("/"))
    match = TOKEN_SHAPE.match(token)
    assert match, token
    assert is_valid_id(match.group(1))
    assert signer().loads(token) == Token(match.group(1), False, int(clock()))


def test_ids_are_random_and_valid(make_client):
    client, _ = make_client(counter_view)
    ids = set()
    for _ in range(20):
        client.reset()
        ids.add(id_of(token_of(client.get("/"))))
    assert len(ids) == 20
    assert all(is_valid_id(session_id) and len(session_id) >= 32 for session_id in ids)


# -- key rotation ------------------------------------------------------------------------


def test_old_key_second_in_list_still_verifies():
    old_token = make_token(OLD_SECRET)
    assert signer(SECRET, OLD_SECRET).loads(old_token).id == SESSION_ID


def test_new_tokens_are_signed_with_the_first_key():
    rotated = signer(SECRET, OLD_SECRET)
    token = rotated.dumps(Token(SESSION_ID, False, 1))
    assert signer(SECRET).loads(token).id == SESSION_ID
    with pytest.raises(BadSignature):
        signer(OLD_SECRET).loads(token)


def test_removed_key_no_longer_verifies():
    old_token = make_token(OLD_SECRET)
    with pytest.raises(BadSignature):
        signer(SECRET).loads(old_token)


def test_unrelated_key_does_not_verify():
    with pytest.raises(BadSignature):
        signer(OTHER_SECRET).loads(make_token(SECRET))


def test_key_rotation_through_the_middleware(make_middleware):
    store = MemoryStore()
    app = view_app(counter_view)
    before = make_middleware(app, store=store, secret_keys=[OLD_SECRET])
    first = call_wsgi(before)
    cookie = dict(first.headers)["Set-Cookie"].split(";")[0]
    assert first.body == b"1"

    # Deploy with a new key in front: the old cookie still works, no new cookie needed.
    rotated = make_middleware(app, store=store, secret_keys=[SECRET, OLD_SECRET])
    second = call_wsgi(rotated, cookie=cookie)
    assert second.body == b"2"
    assert "Set-Cookie" not in dict(second.headers)

    # A session created after the rotation is signed with the new key only.
    fresh = call_wsgi(rotated)
    new_token = dict(fresh.headers)["Set-Cookie"].split(";")[0].split("=", 1)[1]
    assert signer(SECRET).loads(new_token)
    with pytest.raises(BadSignature):
        signer(OLD_SECRET).loads(new_token)

    # Drop the old key: its sessions end (fresh session, old data invisible).
    retired = make_middleware(app, store=store, secret_keys=[SECRET])
    third = call_wsgi(retired, cookie=cookie)
    assert third.body == b"1"


# -- bad tokens --------------------------------------------------------------------------


def _flip(char):
    return "B" if char != "B" else "C"


def tampered_variants(token):
    session_id, flags, issued, signature = token.split(".")
    return {
        "signature char": f"{session_id}.{flags}.{issued}.{_flip(signature[0])}{signature[1:]}",
        "last signature char": f"{session_id}.{flags}.{issued}.{signature[:-1]}{_flip(signature[-1])}",
        "id char": f"{_flip(session_id[0])}{session_id[1:]}.{flags}.{issued}.{signature}",
        "issued": f"{session_id}.{flags}.{issued}0.{signature}",
        "consent flag": f"{session_id}.1.{issued}.{signature}",
        "signature truncated": f"{session_id}.{flags}.{issued}.{signature[:-1]}",
        "signature from another id": f"{'Z' * 32}.{flags}.{issued}.{signature}",
    }


@pytest.mark.parametrize(
    "kind",
    [
        "signature char",
        "last signature char",
        "id char",
        "issued",
        "consent flag",
        "signature truncated",
        "signature from another id",
    ],
)
def test_tampered_token_raises_bad_signature(kind):
    token = make_token()
    bad = tampered_variants(token)[kind]
    assert bad != token
    with pytest.raises(BadSignature):
        signer().loads(bad)


@pytest.mark.parametrize(
    "cut",
    [lambda t: t[:20], lambda t: t.rsplit(".", 1)[0], lambda t: t.rsplit(".", 1)[0] + ".", lambda t: ""],
    ids=["prefix", "no signature", "empty signature", "empty"],
)
def test_truncated_token_is_malformed(cut):
    with pytest.raises(MalformedToken):
        signer().loads(cut(make_token()))


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "a.b.c.d",
        "...",
        "short.0.1." + "s" * 43,  # id under 16 characters
        "A" * 129 + ".0.1." + "s" * 43,  # id over 128
        SESSION_ID + ".2.1." + "s" * 43,  # flags other than 0/1
        SESSION_ID + ".0.ABC." + "s" * 43,  # issued not lowercase base36
        SESSION_ID + ".0.1." + "s" * 43 + "\n",
        " " + SESSION_ID + ".0.1." + "s" * 43,
        SESSION_ID + ".0.1." + "s" * 43 + ".extra",
        SESSION_ID + ".0.1." + "ś" * 43,
        SESSION_ID + "+/.0.1." + "s" * 43,
    ],
)
def test_malformed_tokens(value):
    with pytest.raises(MalformedToken):
        signer().loads(value)


def test_oversized_token_is_refused_before_parsing():
    token = make_token()
    oversized = token + "A" * (MAX_TOKEN_BYTES + 1 - len(token))
    assert len(oversized) == MAX_TOKEN_BYTES + 1
    with pytest.raises(MalformedToken, match="too long") as info:
        signer().loads(oversized)
    assert str(len(oversized)) in info.value.describe()
    assert oversized not in info.value.describe()  # log-safe: never the whole token


def test_errors_share_the_bad_token_base():
    assert issubclass(MalformedToken, BadToken)
    assert issubclass(BadSignature, BadToken)


def test_repeated_verification_is_stable():
    s = signer()
    token = make_token()
    assert s.loads(token) == s.loads(token)
    bad = tampered_variants(token)["signature char"]
    for _ in range(3):
        with pytest.raises(BadSignature):
            s.loads(bad)


# -- client binding -------------------------------------------------------------------------


def test_binding_must_match():
    s = signer()
    token = s.dumps(Token(SESSION_ID, False, 1), "198.51.100.7")
    assert s.loads(token, "198.51.100.7").id == SESSION_ID
    with pytest.raises(BadSignature):
        s.loads(token, "198.51.100.8")
    with pytest.raises(BadSignature):
        s.loads(token, "")


def test_binding_checked_after_a_cached_verification():
    s = signer()
    token = s.dumps(Token(SESSION_ID, False, 1), "198.51.100.7")
    s.loads(token, "198.51.100.7")  # now memoised
    with pytest.raises(BadSignature):
        s.loads(token, "203.0.113.1")


def test_memo_cannot_be_reached_with_a_forged_key():
    # Regression: the memo was keyed by f"{value}\x1f{binding}", so a stolen
    # token + "\x1f<victim binding>" with an empty binding hit the victim's entry.
    s = signer()
    token = s.dumps(Token(SESSION_ID, False, 1), "Victim/1.0")
    s.loads(token, "Victim/1.0")
    with pytest.raises(BadToken):
        s.loads(token + "\x1fVictim/1.0", "")


def test_client_binding_reads_configured_sources():
    environ = {
        "REMOTE_ADDR": "10.0.0.1",
        "HTTP_X_FORWARDED_FOR": "203.0.113.5, 10.0.0.1",
        "HTTP_X_REAL_IP": "203.0.113.5",
        "HTTP_FORWARDED": "for=203.0.113.5",
        "HTTP_USER_AGENT": "Agent/1",
    }
    assert not ClientBinding(make_config()).enabled
    assert ClientBinding(make_config()).fingerprint(environ) == ""
    ip = ClientBinding(make_config(bind_ip=True))
    assert ip.enabled
    assert ip.fingerprint(environ) == "10.0.0.1"
    both = ClientBinding(
        make_config(bind_ip=True, bind_ip_sources=["X-Forwarded-For", "X-Real-IP"], bind_user_agent=True)
    )
    fingerprint = both.fingerprint(environ)
    assert "203.0.113.5, 10.0.0.1" in fingerprint
    assert "Agent/1" in fingerprint
    assert fingerprint != "10.0.0.1"
    forwarded = ClientBinding(make_config(bind_ip=True, bind_ip_sources=["Forwarded"]))
    assert forwarded.fingerprint(environ) == "for=203.0.113.5"


@pytest.fixture
def bound_app(make_middleware):
    def build(**fields):
        return make_middleware(view_app(_secret_view), **fields)

    return build


def _secret_view(session, environ):
    if environ.get("PATH_INFO") == "/login":
        session["secret"] = "victim-only"
    return dict(session)


def _login(app, **environ):
    result = call_wsgi(app, path="/login", **environ)
    assert result.body == b'{"secret": "victim-only"}'
    return dict(result.headers)["Set-Cookie"].split(";")[0]


def test_ip_binding_through_the_middleware(bound_app):
    app = bound_app(bind_ip=True)
    cookie = _login(app, REMOTE_ADDR="198.51.100.7")
    assert b"victim-only" in call_wsgi(app, cookie=cookie, REMOTE_ADDR="198.51.100.7").body
    other = call_wsgi(app, cookie=cookie, REMOTE_ADDR="198.51.100.8")
    assert other.code == 200
    assert b"victim-only" not in other.body
    assert other.body == b"{}"


def test_forwarded_for_binding_through_the_middleware(bound_app):
    app = bound_app(bind_ip=True, bind_ip_sources=["X-Forwarded-For"])
    cookie = _login(app, headers={"X-Forwarded-For": "203.0.113.5"})
    same = call_wsgi(app, cookie=cookie, headers={"X-Forwarded-For": "203.0.113.5"}, REMOTE_ADDR="10.9.9.9")
    assert b"victim-only" in same.body
    moved = call_wsgi(app, cookie=cookie, headers={"X-Forwarded-For": "203.0.113.6"})
    assert moved.body == b"{}"


def test_user_agent_binding_through_the_middleware(bound_app):
    app = bound_app(bind_user_agent=True)
    cookie = _login(app, headers={"User-Agent": "Victim/1.0"})
    assert b"victim-only" in call_wsgi(app, cookie=cookie, headers={"User-Agent": "Victim/1.0"}).body
    assert call_wsgi(app, cookie=cookie, headers={"User-Agent": "Thief/2.0"}).body == b"{}"
    assert call_wsgi(app, cookie=cookie).body == b"{}"


def test_user_agent_binding_cannot_be_bypassed_through_the_memo(bound_app):
    app = bound_app(bind_user_agent=True)
    cookie = _login(app, headers={"User-Agent": "Victim/1.0"})
    assert b"victim-only" in call_wsgi(app, cookie=cookie, headers={"User-Agent": "Victim/1.0"}).body
    forged = call_wsgi(app, cookie=cookie + "\x1fVictim/1.0")
    assert b"victim-only" not in forged.body


def test_unbound_config_ignores_address(bound_app):
    app = bound_app()
    cookie = _login(app, REMOTE_ADDR="198.51.100.7")
    assert b"victim-only" in call_wsgi(app, cookie=cookie, REMOTE_ADDR="192.0.2.1").body


# -- consent flag -----------------------------------------------------------------------------


def test_consent_flip_fails_verification():
    token = make_token(consent=False)
    session_id, _, issued, signature = token.split(".")
    with pytest.raises(BadSignature):
        signer().loads(f"{session_id}.1.{issued}.{signature}")
    granted = make_token(consent=True)
    session_id, _, issued, signature = granted.split(".")
    with pytest.raises(BadSignature):
        signer().loads(f"{session_id}.0.{issued}.{signature}")


def test_consent_flip_through_the_middleware(make_middleware):
    def view(session, environ):
        if environ["PATH_INFO"] == "/write":
            session["data"] = "kept"
        return {"data": session.get("data"), "consented": session.consented}

    app = make_middleware(view_app(view), mode="opt_in")
    first = call_wsgi(app, path="/write")
    token = dict(first.headers)["Set-Cookie"].split(";")[0].split("=", 1)[1]
    assert token.split(".")[1] == "0"
    assert b'"data": "kept"' in call_wsgi(app, cookie=f"session={token}").body
    session_id, _, issued, signature = token.split(".")
    forged = call_wsgi(app, cookie=f"session={session_id}.1.{issued}.{signature}")
    assert forged.code == 200
    assert forged.body == b'{"consented": false, "data": null}'


def test_reading_view_never_sees_data_from_a_bad_token(make_client):
    client, _ = make_client(read_view)
    response = client.get("/", headers={"Cookie": f"session={make_token()}"})
    assert response.json == {}


def test_a_token_has_one_spelling():
    """The last base64 character of a signature carries spare bits that a
    decoder ignores, so other characters decoded to the same HMAC and
    verified: a look-alike of a real token. Only the canonical spelling is
    accepted now (the cookie fuzz test found it)."""
    signer = TokenSigner([b"k" * 40])
    token = signer.dumps(Token("a" * 24, False, 5))
    assert signer.loads(token).id == "a" * 24
    alphabet = string.ascii_letters + string.digits + "-_"
    for spelling in (token[:-1] + c for c in alphabet if c != token[-1]):
        with pytest.raises(BadSignature):
            signer.loads(spelling)
