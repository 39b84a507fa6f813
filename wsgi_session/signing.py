"""Session tokens: the signed form in which an id travels to the client.

A token is ``<id>.<flags>.<issued>.<signature>``:

* ``id`` — the session id (16 to 128 URL-safe characters);
* ``flags`` — ``"1"`` if the user consented to storage (opt-in mode), else
  ``"0"``; signed, so a client cannot grant itself consent;
* ``issued`` — when the token was issued, hexadecimal epoch seconds; tells the
  middleware when a persistent cookie is due for a refresh;
* ``signature`` — HMAC-SHA256 (itsdangerous) over the rest *and* the client
  binding (IP address sources, user agent) when enabled. The binding is not in
  the token: a stolen token presented from elsewhere simply fails to verify.

Key rotation: tokens are signed with the newest of ``secret_keys`` and every
key verifies. The signing keys are derived from the secrets with a purpose
label, so the same secret can also feed encryption without key reuse.

Verifying is the costliest step of a request, so each verified
``(token, binding)`` pair is remembered in a bounded map: a token's HMAC is
computed once per process, not once per request.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
import typing as t

from itsdangerous import Signer
from itsdangerous.exc import BadSignature as _ItsBadSignature

from .config import MAX_TOKEN_BYTES
from .exceptions import BadSignature, MalformedToken

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .config import SessionConfig

_TOKEN = re.compile(r"([A-Za-z0-9_-]{16,128})\.([01])\.([0-9a-f]{1,12})\.([A-Za-z0-9_-]{20,100})\Z")
_ID = re.compile(r"[A-Za-z0-9_-]{16,128}\Z")
_VERIFIED_MAX = 65_536
_SIGN_PURPOSE = b"wsgi_session token signing v1"
_IP_HEADERS = {
    "REMOTE_ADDR": "REMOTE_ADDR",
    "X-Forwarded-For": "HTTP_X_FORWARDED_FOR",
    "Forwarded": "HTTP_FORWARDED",
    "X-Real-IP": "HTTP_X_REAL_IP",
}


class Token(t.NamedTuple):
    """A verified token's contents."""

    id: str
    consent: bool
    issued: int


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def urlsafe_b64(data: bytes) -> str:
    """``data`` in unpadded URL-safe base64 (RFC 4648 §5), as tokens carry
    it: what ``base64.urlsafe_b64encode(data).rstrip(b"=")`` gives, in two
    C calls instead of three Python-level ones (once per issued token)."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _canonical(signature: str) -> bool:
    """Whether ``signature`` is the one unpadded URL-safe base64 spelling of
    its bytes. A decoder ignores the spare low bits of the last character,
    so several spellings decode alike; only the one :func:`urlsafe_b64`
    writes is a token's."""
    raw = signature.encode("ascii").translate(_FROM_URLSAFE)
    try:
        data = binascii.a2b_base64(raw + b"=" * (-len(raw) % 4))
    except binascii.Error:
        return False
    return urlsafe_b64(data) == signature


def is_valid_id(session_id: str) -> bool:
    """Whether ``session_id`` has the shape of a session id."""
    return _ID.match(session_id) is not None


def derive_key(secret: bytes, purpose: bytes) -> bytes:
    """A 32-byte key for one ``purpose``, derived from a configured secret."""
    return hmac.digest(secret, purpose, hashlib.sha256)


class _HmacSha256:
    """HMAC-SHA256 under one fixed key, for signing many short messages.

    HMAC (RFC 2104) is ``H((K ^ opad) || H((K ^ ipad) || message))``. Both
    padded keys fill exactly one SHA-256 block, so the hash states after them
    are computed here once; a signature then costs two cheap state copies
    instead of a full HMAC set-up (``hmac.digest`` builds both states again
    on every call, about three times the cost). The result is byte for byte
    :func:`hmac.digest` (the tests check it).
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = hashlib.sha256().block_size
        if len(key) > block:
            key = hashlib.sha256(key).digest()
        key = key.ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in key))
        self._outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in key))

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class ClientBinding:
    """Reads the parts of a request a token is bound to.

    :param config: uses ``bind_ip``, ``bind_ip_sources`` and ``bind_user_agent``.
    """

    __slots__ = ("_keys", "enabled")

    def __init__(self, config: SessionConfig) -> None:
        keys = [_IP_HEADERS[source] for source in config.bind_ip_sources] if config.bind_ip else []
        if config.bind_user_agent:
            keys.append("HTTP_USER_AGENT")
        self._keys = tuple(keys)
        #: Whether tokens are bound to anything (when not, the fingerprint
        #: is always empty and callers can skip asking for it).
        self.enabled = bool(keys)

    def fingerprint(self, environ: WSGIEnvironment) -> str:
        """The binding material of this request (empty if binding is off)."""
        if not self._keys:
            return ""
        get = environ.get
        return "\x1f".join(str(get(key, "")) for key in self._keys)


class TokenSigner:
    """Signs and verifies session tokens with key rotation.

    :param secret_keys: the configured secrets, newest first.
    """

    def __init__(self, secret_keys: t.Sequence[bytes]) -> None:
        derived = [derive_key(secret, _SIGN_PURPOSE) for secret in secret_keys]
        # itsdangerous takes its keys oldest first and signs with the last.
        self._signer = Signer(
            list(reversed(derived)),
            salt=b"wsgi_session.token",
            key_derivation="none",
            digest_method=hashlib.sha256,
        )
        self._verified: dict[tuple[str, str], Token] = {}
        # Signing happens once per new or renewed session: a precomputed HMAC
        # gives itsdangerous's signature at a fraction of the cost of its
        # per-call HMAC object (tests check they are equal).
        self._sign = _HmacSha256(derived[0]).digest

    def dumps(self, token: Token, binding: str = "") -> str:
        """The signed token string for ``token`` (signed with the newest key)."""
        # Concatenation, not f-strings: the compiled build's f-strings made
        # this 1.33 µs against 1.10 (pure Python: 1.10-1.18 either way).
        session_id, consent, issued = token
        body = session_id + (".1." if consent else ".0.") + format(issued, "x")
        digest = self._sign((body + "\x1f" + binding).encode())
        return body + "." + urlsafe_b64(digest)

    def loads(self, value: str, binding: str = "") -> Token:
        """Verify ``value`` and return its contents.

        :raises MalformedToken: too long, or not of the token's shape.
        :raises BadSignature: signed with none of the keys, or for another
            client binding.
        """
        cache_key = (value, binding)
        cached = self._verified.get(cache_key)
        if cached is not None:
            return cached
        if len(value) > MAX_TOKEN_BYTES:
            raise MalformedToken("token too long", value)
        match = _TOKEN.match(value)
        if match is None:
            raise MalformedToken("token is not of the form id.flags.issued.signature", value)
        session_id, flags, issued, signature = match.groups()
        if not _canonical(signature):  # base64 spells each digest once: no look-alike tokens
            raise BadSignature("token signature is not canonical base64", value)
        body = value[: match.start(4) - 1]
        try:
            valid = self._signer.verify_signature(f"{body}\x1f{binding}", signature)
        except _ItsBadSignature:  # pragma: no cover - verify_signature returns False
            valid = False
        if not valid:
            raise BadSignature("token signature does not verify", value)
        token = Token(session_id, flags == "1", int(issued, 16))
        if len(self._verified) >= _VERIFIED_MAX:
            self._verified.clear()
        self._verified[cache_key] = token
        return token
