"""Helpers shared by the persistent stores: record validation, the packed
value format and backend error translation.

Kept private: the stores' storage layouts are documented on the stores, and
nothing outside :mod:`wsgi_session.stores` should depend on these names.
"""

from __future__ import annotations

import logging
import math
import struct
import typing as t

from ..exceptions import BadStoredData, PartlyApplied, StoreUnavailable
from ..record import SessionRecord

log = logging.getLogger(__name__)

#: First byte of a packed value map; a new layout gets a new number.
PACK_FORMAT = 1
_LENGTHS = struct.Struct(">II")


def make_record(
    session_id: str,
    values: t.Mapping[str, bytes],
    *,
    version: object,
    created: object,
    expires: object,
    absolute: object,
    longterm: object,
) -> SessionRecord:
    """Build a :class:`SessionRecord` from fields read back from a backend,
    checking each one.

    The fields arrive as whatever the backend returned (``bytes`` from Redis,
    native types from SQL), so each is converted here: a version that is not a
    positive integer, a deadline that is not a finite number, or a long-term
    flag that is neither true nor false raises
    :class:`~wsgi_session.exceptions.BadStoredData` instead of a ``TypeError``
    deep in the middleware.
    """
    number = _convert(int, "version", version)
    if number < 1:
        raise BadStoredData(f"stored session has version {number}; versions start at 1")
    if longterm not in (True, False, 0, 1, b"0", b"1"):
        raise BadStoredData("stored session has an invalid long-term flag", repr(longterm))
    return SessionRecord(  # by position: see wsgi_session.record
        session_id,
        values,
        _convert(_as_time, "created", created),
        _convert(_as_time, "expires", expires),
        None if absolute in (None, b"", "") else _convert(_as_time, "absolute", absolute),
        longterm in (True, 1, b"1"),
        number,
    )


T = t.TypeVar("T")


def _convert(convert: t.Callable[[t.Any], T], name: str, value: object) -> T:
    try:
        return convert(value)
    except (TypeError, ValueError) as exc:
        raise BadStoredData(f"stored session has an invalid {name}: {exc}") from exc


def _as_time(value: t.Any) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{number!r} is not a point in time")
    return number


def pack_values(values: t.Mapping[str, bytes]) -> bytes:
    """Encode a ``key -> bytes`` map as one binary-safe ``bytes`` value.

    The layout is a format byte (:data:`PACK_FORMAT`) followed, for each key,
    by the key's UTF-8 length and the value's length (two big-endian unsigned
    32-bit integers), the key and the value. Eight bytes of overhead per key,
    no escaping, and decoding is a linear walk.
    """
    parts = [bytes((PACK_FORMAT,))]
    for key, value in values.items():
        raw_key = key.encode()
        parts.append(_LENGTHS.pack(len(raw_key), len(value)))
        parts.append(raw_key)
        parts.append(value)
    return b"".join(parts)


def unpack_values(data: bytes) -> dict[str, bytes]:
    """Decode what :func:`pack_values` produced; raise
    :class:`~wsgi_session.exceptions.BadStoredData` for anything else
    (unknown format byte, truncated item, key that is not UTF-8)."""
    view = memoryview(data)
    if not view or view[0] != PACK_FORMAT:
        raise BadStoredData("stored session data has an unknown format", bytes(view[:8]))
    values: dict[str, bytes] = {}
    offset, end, header = 1, len(view), _LENGTHS.size
    try:
        while offset < end:
            key_length, value_length = _LENGTHS.unpack_from(view, offset)
            offset += header
            key_end = offset + key_length
            value_end = key_end + value_length
            if value_end > end:
                raise ValueError("item runs past the end")
            values[str(view[offset:key_end], "utf-8")] = bytes(view[key_end:value_end])
            offset = value_end
    except (struct.error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadStoredData(f"stored session data is truncated or corrupt: {exc}") from exc
    return values


Item = t.TypeVar("Item")


def each_or_partly(
    items: t.Sequence[Item],
    convert: t.Callable[[Item], T],
    refused: frozenset[int] = frozenset(),
    unavailable: frozenset[int] = frozenset(),
) -> list[T | None]:
    """``convert`` each result of a batch write that has been applied.

    An item that raises does not stop the others: they are applied already,
    and raising for the whole batch would get them sent again. A lone item
    raises its error; in a batch, an item that raises
    :class:`~wsgi_session.exceptions.StoreUnavailable` is *unavailable*
    (retry it), any other error *refused* (do not), and any of either (or
    ``refused`` and ``unavailable``, from a store below) makes the batch
    :class:`~wsgi_session.exceptions.PartlyApplied`, with every result."""
    results: list[T | None] = []
    first: Exception | None = None
    for index, item in enumerate(items):
        try:
            results.append(None if index in refused or index in unavailable else convert(item))
        except Exception as exc:
            if len(items) == 1:
                raise
            results.append(None)
            if isinstance(exc, StoreUnavailable):
                unavailable |= {index}
            else:
                refused |= {index}
            first = first or exc
    if refused or unavailable:
        message = str(first) if first is not None else "some stored sessions could not be written"
        raise PartlyApplied(message, results, refused, unavailable) from first
    return results


class unavailable_on:
    """Re-raise ``errors`` for which ``is_outage(exc)`` is true (all of them
    by default) as :class:`~wsgi_session.exceptions.StoreUnavailable`, the
    original chained as ``__cause__``; let everything else through.

    A plain class rather than :func:`contextlib.contextmanager` (a generator
    and a wrapper object per ``with``): it holds no state, so a store builds
    one and enters it around every call."""

    __slots__ = ("backend", "errors", "is_outage")

    def __init__(
        self,
        errors: tuple[type[BaseException], ...],
        backend: str,
        is_outage: t.Callable[[BaseException], bool] | None = None,
    ) -> None:
        self.errors = errors
        self.backend = backend
        self.is_outage = is_outage

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: t.Any
    ) -> t.Literal[False]:
        if exc is None or not isinstance(exc, self.errors):
            return False
        if self.is_outage is not None and not self.is_outage(exc):
            return False
        log.debug("%s unavailable: %r", self.backend, exc)
        raise StoreUnavailable(f"{self.backend} is unavailable: {exc}") from exc
