"""Carriers that move the session token between client and server.

:class:`CookieTransport` (the default) reads the token from the ``Cookie``
request header and sets it with ``Set-Cookie``, with every attribute from the
configuration. When the browser sends several cookies of the same name (a
sibling subdomain can plant one: "cookie tossing") every value is offered, in
order, and the first that verifies wins.

:class:`HeaderTransport` ("REST mode") reads the token from a request header
(``X-Session-Token`` by default) and returns a new or changed token in the
same response header; an empty value tells the client to drop its token.
"""

from __future__ import annotations

import time
import typing as t
from datetime import UTC, datetime

from werkzeug.http import dump_cookie, http_date, parse_cookie

from ._mypyc import mypyc_attr

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .config import SessionConfig

Headers = list[tuple[str, str]]

# The parsed-header memo holds at most this many headers of at most this
# length: 2,048 x 2 KiB, so a client sending ever new headers pins <= 4 MiB.
_MEMO_ENTRIES = 2048
_MEMO_HEADER_MAX = 2048


class Transport(t.Protocol):
    """What the middleware needs from a carrier."""

    #: The request header whose value selects the session (for ``Vary``).
    vary: str

    def read(self, environ: WSGIEnvironment) -> t.Sequence[str]:
        """Candidate tokens sent by the client, most likely first."""
        ...

    def send(self, headers: Headers, token: str, max_age: int | None) -> None:
        """Add the headers that give the client ``token``; ``max_age`` in
        seconds, or ``None`` for a browser-session cookie."""
        ...

    def clear(self, headers: Headers) -> None:
        """Add the headers that make the client drop its token."""
        ...


@mypyc_attr(allow_interpreted_subclasses=True)
class CookieTransport:
    """The token in a cookie.

    :param config: the cookie settings (name, path, domain, secure, httponly,
        samesite, partitioned, ``__Host-`` prefix).
    """

    def __init__(self, config: SessionConfig) -> None:
        self.name = config.effective_cookie_name
        self.vary = "Cookie"
        self._needle = self.name + "="
        #: Cookie header -> our cookie's values. Browsers send the same header
        #: again and again, so parsing is remembered (bounded: see _MEMO_*).
        self._parsed: dict[str, tuple[str, ...]] = {}
        self._attributes: dict[str, t.Any] = {
            "path": config.cookie_path,
            "domain": config.cookie_domain,
            "secure": config.cookie_secure,
            "httponly": config.cookie_http_only,
            "samesite": config.cookie_same_site,
            "partitioned": config.cookie_partitioned,
        }
        rendered = dump_cookie(self.name, "x", **self._attributes)
        self._suffix = rendered[len(self.name) + 2 :]  # "; HttpOnly; Path=/; ..."

    def read(self, environ: WSGIEnvironment) -> t.Sequence[str]:
        header = environ.get("HTTP_COOKIE")
        if not header:
            return ()
        found = self._parsed.get(header)
        if found is None:
            found = self._parse(header)
            if len(header) <= _MEMO_HEADER_MAX:
                if len(self._parsed) >= _MEMO_ENTRIES:
                    self._parsed.clear()
                self._parsed[header] = found
        return found

    def _parse(self, header: str) -> tuple[str, ...]:
        needle = self._needle
        start = header.find(needle)
        if start == -1:
            return ()
        # Fast path: one plain occurrence at a cookie boundary.
        if (start == 0 or header[start - 1] in "; ") and header.find(needle, start + 1) == -1:
            value_start = start + len(needle)
            end = header.find(";", value_start)
            value = (header[value_start:] if end == -1 else header[value_start:end]).strip()
            if not value.startswith('"'):
                return (value,) if value else ()
        try:
            cookies = parse_cookie(header)
        except (UnicodeError, ValueError):
            return ()  # undecodable bytes (maybe a cookie planted by a sibling domain)
        return tuple(value for value in cookies.getlist(self.name) if value)

    def send(self, headers: Headers, token: str, max_age: int | None) -> None:
        # Tokens hold only URL-safe base64 and dots, which need no quoting, so
        # the cookie is the name, the token, the expiry and the attributes
        # werkzeug rendered once in __init__.
        if max_age is None:
            cookie = f"{self.name}={token}{self._suffix}"
        else:
            expires = http_date(time.time() + max_age)
            cookie = f"{self.name}={token}; Expires={expires}; Max-Age={max_age}{self._suffix}"
        headers.append(("Set-Cookie", cookie))

    def clear(self, headers: Headers) -> None:
        headers.append(
            (
                "Set-Cookie",
                dump_cookie(
                    self.name,
                    "",
                    max_age=0,
                    expires=datetime(1970, 1, 1, tzinfo=UTC),
                    **self._attributes,
                ),
            )
        )


@mypyc_attr(allow_interpreted_subclasses=True)
class HeaderTransport:
    """The token in a request and response header.

    :param config: uses ``header_name``.
    """

    def __init__(self, config: SessionConfig) -> None:
        self.name = config.header_name
        self.vary = config.header_name
        self._environ_key = "HTTP_" + config.header_name.upper().replace("-", "_")

    def read(self, environ: WSGIEnvironment) -> t.Sequence[str]:
        value = environ.get(self._environ_key)
        return (value.strip(),) if value and value.strip() else ()

    def send(self, headers: Headers, token: str, max_age: int | None) -> None:
        headers.append((self.name, token))

    def clear(self, headers: Headers) -> None:
        headers.append((self.name, ""))


def make_transport(config: SessionConfig) -> Transport:
    """The carrier that ``config.transport`` names."""
    if config.transport == "header":
        return HeaderTransport(config)
    return CookieTransport(config)
