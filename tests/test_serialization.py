"""TaggedJSONSerializer: exact round-trips, clear errors, never pickle."""

from __future__ import annotations

import ast
import json
import pickle
import uuid
from collections import OrderedDict, defaultdict
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import Enum, IntEnum
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wsgi_session
from wsgi_session import TaggedJSONSerializer

S = TaggedJSONSerializer()


def canon(value):
    """A structure equal for two values only if they have the same types all
    the way down (``1 != 1.0 != True``, ``(1,) != [1]``), the same tz offset
    and the same float sign."""
    kind = type(value)
    if kind in (list, tuple):
        return (kind.__name__, [canon(item) for item in value])
    if kind in (set, frozenset):
        return (kind.__name__, sorted((canon(item) for item in value), key=repr))
    if kind is dict:
        return ("dict", [(key, canon(item)) for key, item in value.items()])
    if kind in (datetime, time):
        return (kind.__name__, value.isoformat(), str(value.utcoffset()))
    if kind is float:
        return ("float", repr(value))
    if kind is Decimal:
        return ("Decimal", str(value))
    return (kind.__name__, value)


def roundtrip(value):
    encoded = S.dumps(value)
    assert isinstance(encoded, bytes)
    return S.loads(encoded)


def assert_exact(value):
    result = roundtrip(value)
    assert canon(result) == canon(value)
    assert result == value


# -- fixed examples ------------------------------------------------------------------

PLAIN = [
    "",
    "héllo wörld \u2028 \U0001f600",
    0,
    -1,
    10**40,
    1.5,
    -0.0,
    float("inf"),
    float("-inf"),
    1e-300,
    True,
    False,
    None,
    [],
    [1, "a", None, [2.5, [True]]],
    {},
    {"a": 1, "b": {"c": [1, 2, {"d": None}]}},
    {"\x00a": 1, "b": 2},  # two keys: not a tag even though one starts with NUL
]

TAGGED = [
    datetime(2026, 11, 26, 12, 30, 45, 123456),
    datetime(2026, 11, 26, 12, 30, 45, 123456, tzinfo=UTC),
    datetime(2026, 3, 29, 1, 59, 59, 1, tzinfo=timezone(timedelta(hours=5, minutes=45))),
    datetime(1, 1, 1),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-11))),
    date(2026, 11, 26),
    date(1, 1, 1),
    time(12, 30),
    time(23, 59, 59, 999999),
    time(8, 0, 0, 5, tzinfo=timezone(timedelta(hours=-3, minutes=-30))),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    uuid.uuid4(),
    b"",
    b"\x00\xff binary \x80",
    (),
    (1, "a", (2, (3,))),
    set(),
    {1, 2, 3},
    {"b", "a", None, (1, 2)},
    frozenset(),
    frozenset({"x", 1.5}),
    Decimal("1.10"),
    Decimal("-0.000000000000000000001"),
    Decimal("123456789012345678901234567890.123456789"),
    Decimal("Infinity"),
    Decimal("1E+5"),
]

NESTED = [
    {"when": datetime(2026, 1, 1, tzinfo=UTC), "ids": [uuid.UUID(int=1), uuid.UUID(int=2)]},
    [(1, 2), {3, 4}, frozenset({5}), {"raw": b"\x01"}],
    {"cart": [{"sku": "A1", "price": Decimal("9.99"), "added": date(2026, 1, 2)}]},
    ({"a": (1, [2, {3}])}, [frozenset({(1, "x")})]),
    {"deep": [[[[[[[[[[{"x": (Decimal("1"),)}]]]]]]]]]]},
]


@pytest.mark.parametrize("value", PLAIN, ids=repr)
def test_plain_json_types_round_trip_exactly(value):
    assert_exact(value)


@pytest.mark.parametrize("value", TAGGED, ids=repr)
def test_tagged_types_round_trip_exactly(value):
    assert_exact(value)


@pytest.mark.parametrize("value", NESTED, ids=repr)
def test_nested_mixes_round_trip_exactly(value):
    assert_exact(value)


def test_types_are_kept_apart():
    # JSON alone would turn every one of these into the same thing.
    assert type(roundtrip((1, 2))) is tuple
    assert type(roundtrip([1, 2])) is list
    assert type(roundtrip({1, 2})) is set
    assert type(roundtrip(frozenset({1, 2}))) is frozenset
    assert type(roundtrip(1)) is int
    assert type(roundtrip(1.0)) is float
    assert roundtrip(True) is True
    assert type(roundtrip(b"x")) is bytes
    assert type(roundtrip(datetime(2020, 1, 1))) is datetime
    assert type(roundtrip(date(2020, 1, 1))) is date


def test_aware_datetime_keeps_offset_and_microseconds():
    value = datetime(2026, 6, 1, 8, 15, 0, 999, tzinfo=timezone(timedelta(hours=-7)))
    result = roundtrip(value)
    assert result.utcoffset() == timedelta(hours=-7)
    assert result.microsecond == 999
    assert roundtrip(datetime(2026, 6, 1)).tzinfo is None


def test_decimal_keeps_exact_digits():
    assert str(roundtrip(Decimal("1.10"))) == "1.10"
    assert str(roundtrip(Decimal("0.1"))) == "0.1"


def test_set_encoding_is_stable_whatever_the_insertion_order():
    # Change detection compares encodings: equal sets must encode equally.
    a = {f"key{i}" for i in range(50)}
    b = set()
    for i in range(49, -1, -1):
        b.add(f"key{i}")
    assert a == b
    assert S.dumps(a) == S.dumps(b)
    assert S.dumps({"x", "y", (1, 2)}) == S.dumps({(1, 2), "y", "x"})


def test_encoding_is_compact_utf8_json():
    assert S.dumps({"a": [1, 2]}) == b'{"a":[1,2]}'
    assert S.dumps("é") == '"é"'.encode()


def test_dict_with_several_keys_starting_with_nul_is_not_taken_for_a_tag():
    value = {"\x00dt": "not a date", "\x00s": [1]}
    assert_exact(value)


@pytest.mark.parametrize(
    "value",
    [
        {"\x00s": [1, 2]},
        {"\x00custom": 1},
        {"\x00dict": 5},
        {"\x00dt": "2020-01-01"},
        [{"\x00b": "AA=="}],
        {"\x00": None},
        {"\x00\x00s": [1]},
        {"\x00a": {"\x00b": {"\x00tu": [1]}}},
        {"\x00set": {1, 2}},
        ({"\x00u": (1,)},),
    ],
    ids=repr,
)
def test_dict_with_single_nul_key_is_escaped_and_round_trips(value):
    # Regression: such dicts were wrapped as {"\x00dict": ...}, but the decoder
    # untags bottom-up, so the inner dict was taken for a tag (or refused).
    assert_exact(value)


# -- hypothesis round trip -------------------------------------------------------------------

fixed_offsets = st.builds(
    timezone, st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(lambda m: timedelta(minutes=m))
)
naive_or_aware = st.one_of(st.none(), fixed_offsets)

hashable_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(max_size=16),
    st.dates(),
    st.uuids(),
    st.decimals(allow_nan=False),
    st.datetimes(timezones=naive_or_aware),
    st.times(timezones=naive_or_aware),
)
hashables = st.recursive(hashable_scalars, lambda inner: st.tuples(inner, inner), max_leaves=4)
# Keys starting with NUL are included on purpose: they must be escaped.
keys = st.one_of(st.text(max_size=8), st.sampled_from(["\x00", "\x00s", "\x00dt", "\x00\x00n", "\x00dict"]))

values = st.recursive(
    hashables,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_round_trip_property(value):
    result = roundtrip(value)
    assert canon(result) == canon(value)


@settings(max_examples=100, deadline=None)
@given(values)
def test_encoding_is_deterministic(value):
    assert S.dumps(value) == S.dumps(value)
    assert S.dumps(roundtrip(value)) == S.dumps(value)


# -- errors -------------------------------------------------------------------------------


class Colour(Enum):
    RED = 1


class Level(IntEnum):
    HIGH = 1


class MyStr(str):
    pass


UNSUPPORTED = [
    object(),
    object,
    len,
    lambda: None,
    1 + 2j,
    bytearray(b"x"),
    memoryview(b"x"),
    Colour.RED,
    Level.HIGH,
    MyStr("x"),
    OrderedDict(a=1),
    defaultdict(list),
    timedelta(seconds=1),
    range(3),
    iter([1]),
    Path("/tmp"),
]


@pytest.mark.parametrize("value", UNSUPPORTED, ids=lambda v: type(v).__name__)
def test_unsupported_types_raise_type_error(value):
    with pytest.raises(TypeError, match="not supported by tagged JSON"):
        S.dumps(value)


@pytest.mark.parametrize(
    "value",
    [[object()], {"a": {"b": [1, object()]}}, (1, object()), {1, Colour.RED}, frozenset({Level.HIGH})],
    ids=repr,
)
def test_unsupported_types_nested_raise_type_error(value):
    with pytest.raises(TypeError):
        S.dumps(value)


@pytest.mark.parametrize("key", [1, 1.5, None, (1, 2), b"k", True, uuid.UUID(int=0)], ids=repr)
def test_non_str_dict_keys_raise_type_error(key):
    with pytest.raises(TypeError, match="dict keys must be str"):
        S.dumps({key: 1})
    with pytest.raises(TypeError, match="dict keys must be str"):
        S.dumps([{"ok": {key: 1}}])


MALFORMED = [
    b"",
    b"{",
    b"[1, 2",
    b"not json",
    b"\xff\xfe",
    b'"unterminated',
    b'{"\\u0000zz": 1}',  # unknown tag
    b'{"\\u0000dt": "not a date"}',
    b'{"\\u0000dt": 5}',
    b'{"\\u0000d": []}',
    b'{"\\u0000t": "25:99"}',
    b'{"\\u0000u": "xyz"}',
    b'{"\\u0000u": 5}',
    b'{"\\u0000b": "!!!"}',
    b'{"\\u0000b": 5}',
    b'{"\\u0000tu": 5}',
    b'{"\\u0000s": [[1]]}',  # unhashable element
    b'{"\\u0000fs": [{"a": 1}]}',
    b'{"\\u0000n": null}',
    b'{"\\u0000n": {}}',
]


@pytest.mark.parametrize("data", MALFORMED, ids=repr)
def test_malformed_input_raises_value_error(data):
    with pytest.raises(ValueError):
        S.loads(data)


@pytest.mark.parametrize("data", [b'{"\\u0000n": "abc"}', b'{"\\u0000n": ""}'], ids=repr)
def test_malformed_decimal_raises_value_error(data):
    # Regression: decimal.InvalidOperation is an ArithmeticError, not a ValueError.
    with pytest.raises(ValueError):
        S.loads(data)


# -- no pickle -------------------------------------------------------------------------------

_side_effects: list[str] = []


def _record_call(what):
    _side_effects.append(what)
    return what


class Exploit:
    def __reduce__(self):
        return (_record_call, ("executed",))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_payload_is_refused_and_not_executed(protocol):
    _side_effects.clear()
    payloads = [pickle.dumps({"a": 1}, protocol=protocol), pickle.dumps(Exploit(), protocol=protocol)]
    for payload in payloads:
        with pytest.raises(ValueError):
            S.loads(payload)
    assert _side_effects == []


def test_no_module_of_the_package_imports_pickle():
    forbidden = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "jsonpickle"}
    package_dir = Path(wsgi_session.__file__).parent
    files = sorted(package_dir.rglob("*.py"))
    assert files
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not names & forbidden, f"{path} imports {names & forbidden}"


@given(
    st.one_of(
        st.text(),
        st.text(alphabet=st.characters(max_codepoint=127), min_size=60, max_size=300),
        st.text(alphabet='ab"\\\x00\x1f\x7f ', min_size=60, max_size=120),
        st.text(alphabet="ab ~\x7f", min_size=65, max_size=120),  # nothing to escape
    )
)
def test_strings_encode_as_the_json_encoder_writes_them(text):
    """Long ASCII strings take a shortcut when nothing needs escaping; the
    bytes are the JSON encoder's, escaped or not."""
    expected = json.dumps(text, ensure_ascii=False, separators=(",", ":")).encode()
    assert S.dumps(text) == expected
    assert S.loads(expected) == text
