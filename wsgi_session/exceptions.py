"""Every exception wsgi_session raises, in one place.

Two families:

* :class:`BadData` and its subclasses describe *input* that was rejected: a
  token that is tampered with, truncated or too long, or a stored row that
  cannot be decrypted or decoded. The middleware never lets these reach the
  WSGI server; it answers them with a fresh session and a rate-limited log
  line. They are public so that code using the advanced API can catch them.
* :class:`StoreError` and :class:`StoreUnavailable` describe a *backend* that
  failed. The middleware turns an unavailable store into the configured
  outage answer (503 with ``Retry-After`` by default).

Programming errors keep their builtin types: a bad configuration value is a
:class:`ValueError`, a value the serializer cannot encode a :class:`TypeError`
(:class:`UnserializableValue`, which names the session key).
"""

from __future__ import annotations

import typing as t


class SessionError(Exception):
    """Base class of every exception defined by wsgi_session."""


class BadData(SessionError):
    """Input that failed validation. ``payload`` is what failed, if known.

    The payload is kept for debugging but is never written to logs in full:
    use :meth:`describe` for a log-safe summary.
    """

    def __init__(self, message: str, payload: str | bytes | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.payload = payload

    def describe(self) -> str:
        """A log-safe description: the message plus the payload's length and
        first few characters, never the whole token or row."""
        if self.payload is None:
            return self.message
        text = self.payload if isinstance(self.payload, str) else repr(self.payload)
        return f"{self.message} (length {len(self.payload)}, starts {text[:8]!r})"


class BadToken(BadData):
    """A session token (cookie or header value) that cannot be used."""


class MalformedToken(BadToken):
    """The token is not of the form ``id.flags.issued.signature``, is too long
    or holds characters that a token never holds."""


class BadSignature(BadToken):
    """The token's signature matches none of the ``secret_keys`` for this
    client (also raised when a bound IP address or user agent changed)."""


class BadStoredData(BadData):
    """A stored session that cannot be decrypted or decoded. The row is left
    untouched; the client gets a fresh session."""


class PartlyApplied(BadStoredData):
    """A batch of writes of which the store applied some and not others:
    ``refused`` holds the indexes of the diffs it refused (their stored
    sessions cannot be merged into or read back; retrying will not help),
    ``unavailable`` those it could not take now (an outage for them alone,
    such as Redis out of memory; retry them later). Raised for batches only
    (a lone write raises its own error), so that nobody sends the applied
    ones again: ``results`` holds every diff's result in order (``None``
    where it was not applied)."""

    def __init__(
        self,
        message: str,
        results: list[t.Any],
        refused: frozenset[int],
        unavailable: frozenset[int] = frozenset(),
    ) -> None:
        super().__init__(message)
        self.results = results
        self.refused = refused
        self.unavailable = unavailable


class UnserializableValue(TypeError, SessionError):
    """A value that the session serializer cannot encode.

    Raised from ``session[key] = value`` so the view that set it fails, not a
    later request that would have to read it.
    """

    def __init__(self, key: str, value: object, reason: str) -> None:
        super().__init__(f"session[{key!r}]: cannot serialize {type(value).__name__} value: {reason}")
        self.key = key
        self.value = value


class StoreError(SessionError):
    """A backend operation failed."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached (or has too many writes pending). The
    middleware answers with the configured outage policy."""


class SessionStateError(RuntimeError, SessionError):
    """An operation that the session's state does not allow, such as writing
    to a manual-mode session before ``create_data()``."""
