"""Session values as tagged JSON: safe to load, exact to round-trip.

Every session key is encoded on its own, so stores can merge changes key by key
and a view's change can be detected by comparing encodings. Plain JSON types
are written as they are; the other types people keep in sessions are written as
a one-key object whose key starts with a NUL character, which no ordinary data
uses:

================  ==================================  ===========================
Python type       encoded as                          example
================  ==================================  ===========================
``datetime``      ``{"\\u0000dt": iso-8601}``          keeps tzinfo offset and µs
``date``          ``{"\\u0000d": "2026-11-26"}``
``time``          ``{"\\u0000t": "12:30:00"}``
``UUID``          ``{"\\u0000u": hex}``
``bytes``         ``{"\\u0000b": base64}``
``tuple``         ``{"\\u0000tu": [...]}``
``set``           ``{"\\u0000s": [...]}``                  elements in a stable order
``frozenset``     ``{"\\u0000fs": [...]}``
``Decimal``       ``{"\\u0000n": "1.10"}``                 exact digits
================  ==================================  ===========================

A user ``dict`` that itself has a single key starting with NUL has one more NUL
put in front of that key (``{"\\u0000x": 1}`` is written ``{"\\u0000\\u0000x": 1}``),
so it cannot be mistaken for a tag; loading takes the extra NUL off again. Dictionary keys
must be strings (JSON would silently turn ``1`` into ``"1"``), so a non-string
key is a :class:`TypeError`, as is any type not listed above.

Loading never executes code: there is no pickle, and no fallback to it. A
different format can be plugged in with any object that has ``dumps`` and
``loads`` (see :class:`Serializer`), e.g. a msgpack wrapper.
"""

from __future__ import annotations

import base64
import json
import typing as t
import uuid
from datetime import date, datetime, time
from decimal import Decimal

from ._mypyc import mypyc_attr

_TAG = "\x00"

#: Types whose values cannot change after they are read, so a read of such a
#: value never needs to be re-encoded to detect a change.
IMMUTABLE_TYPES: frozenset[type] = frozenset(
    {str, int, float, bool, type(None), bytes, Decimal, uuid.UUID, datetime, date, time}
)


class Serializer(t.Protocol):
    """What a session serializer provides. ``dumps`` raises :class:`TypeError`
    (or :class:`ValueError`) for a value it cannot encode."""

    def dumps(self, value: t.Any) -> bytes:
        """Encode one session value."""
        ...

    def loads(self, data: bytes) -> t.Any:
        """Decode what :meth:`dumps` produced. Raises :class:`ValueError` on
        malformed input."""
        ...


def _tag(value: t.Any) -> t.Any:
    """Turn ``value`` into plain JSON types, tagging what JSON cannot hold."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is list:
        return [_tag(item) for item in value]
    if kind is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"dict keys must be str, not {type(key).__name__}")
            out[key] = _tag(item)
        if len(out) == 1:
            (only,) = out
            if only.startswith(_TAG):
                return {_TAG + only: out[only]}
        return out
    if kind is tuple:
        return {_TAG + "tu": [_tag(item) for item in value]}
    if kind is set or kind is frozenset:
        items = sorted((_tag(item) for item in value), key=_stable_key)
        return {(_TAG + "s") if kind is set else (_TAG + "fs"): items}
    if kind is datetime:
        return {_TAG + "dt": value.isoformat()}
    if kind is date:
        return {_TAG + "d": value.isoformat()}
    if kind is time:
        return {_TAG + "t": value.isoformat()}
    if kind is uuid.UUID:
        return {_TAG + "u": value.hex}
    if kind is bytes:
        return {_TAG + "b": base64.b64encode(value).decode("ascii")}
    if kind is Decimal:
        return {_TAG + "n": str(value)}
    raise TypeError(f"{kind.__name__} is not supported by tagged JSON")


def _stable_key(item: t.Any) -> str:
    return json.dumps(item, sort_keys=True, separators=(",", ":"))


_UNTAG: dict[str, t.Callable[[t.Any], t.Any]] = {
    _TAG + "tu": tuple,
    _TAG + "s": set,
    _TAG + "fs": frozenset,
    _TAG + "dt": datetime.fromisoformat,
    _TAG + "d": date.fromisoformat,
    _TAG + "t": time.fromisoformat,
    _TAG + "u": uuid.UUID,
    _TAG + "b": lambda v: base64.b64decode(v.encode("ascii"), validate=True),
    _TAG + "n": Decimal,
}


def _untag(obj: dict[str, t.Any]) -> t.Any:
    if len(obj) == 1:
        key = next(iter(obj))
        if key.startswith(_TAG):
            if key.startswith(_TAG + _TAG):  # an escaped user key, not a tag
                return {key[1:]: obj[key]}
            convert = _UNTAG.get(key)
            if convert is None:
                raise ValueError(f"unknown tag {key[1:]!r}")
            return convert(obj[key])
    return obj


_encode_str = json.encoder.encode_basestring
#: The bytes JSON escapes in a string; and the length from which checking for
#: them beats the encoder.
_ESCAPED = bytes(range(0x20)) + b'"\\'
_LONG = 64
_CONSTANTS = {True: b"true", False: b"false", None: b"null"}


@mypyc_attr(allow_interpreted_subclasses=True)
class TaggedJSONSerializer:
    """The default serializer: compact tagged JSON, UTF-8 encoded.

    Instances are stateless and thread-safe.
    """

    _encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    _decode = json.JSONDecoder(object_hook=_untag).decode

    def dumps(self, value: t.Any) -> bytes:
        """Encode ``value``; raises :class:`TypeError` for unsupported types."""
        kind = type(value)
        if kind is int:
            return str(value).encode()  # what JSON writes for an int, without the encoder
        if kind is str:
            if len(value) > _LONG and value.isascii():
                # A long ASCII text with nothing to escape (no quote, backslash
                # or control character) is its JSON string as is, in quotes:
                # a C pass over the bytes instead of the encoder's per-character one.
                data: bytes = value.encode("ascii")
                if len(data.translate(None, _ESCAPED)) == len(data):
                    return b'"' + data + b'"'
            return _encode_str(value).encode()
        if kind is bool or value is None:
            return _CONSTANTS[value]
        return self._encode(_tag(value)).encode()

    def loads(self, data: bytes) -> t.Any:
        """Decode bytes written by :meth:`dumps`; raises :class:`ValueError`
        (which includes JSON and base64 errors) on malformed input."""
        if data.isdigit() and (len(data) == 1 or data[0] != 48):  # a plain int, not "007"
            return int(data)
        try:
            return self._decode(data.decode())
        except (TypeError, KeyError, AttributeError, ArithmeticError) as exc:  # bad tag contents
            raise ValueError(f"malformed tagged JSON: {exc}") from exc
