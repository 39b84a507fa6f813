"""Folding a session's queued diffs (wsgi_session.record.coalesce): applying
the folded diffs gives exactly what applying each diff in turn gives, for
any record (missing, a forwarding stub, with or without an absolute
deadline) and any chain of diffs, the version included."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from wsgi_session.record import MOVED_KEY, SessionDiff, SessionRecord, apply_diff, coalesce

KEYS = st.sampled_from(["a", "b", "c", "d"])
ENCODED = st.dictionaries(KEYS, st.binary(min_size=1, max_size=3), max_size=3)
#: Absolute deadlines before and after the idle ones (100 stored, 200-300 in diffs).
DEADLINE = st.one_of(st.none(), st.sampled_from([150.0, 500.0, 700.0]))


@st.composite
def records(draw: st.DrawFn) -> SessionRecord | None:
    kind = draw(st.sampled_from(["missing", "stored", "stub"]))
    if kind == "missing":
        return None
    values = {MOVED_KEY: b"elsewhere"} if kind == "stub" else draw(ENCODED)
    return SessionRecord(
        "s1",
        values,
        created=10.0,
        expires=100.0,
        absolute=draw(DEADLINE),
        longterm=draw(st.booleans()),
        version=draw(st.integers(1, 5)),
    )


@st.composite
def diffs(draw: st.DrawFn) -> SessionDiff:
    values = draw(ENCODED)
    if draw(st.integers(0, 9)) == 0:  # a forwarding stub's diff
        values = {MOVED_KEY: b"s2"}
    return SessionDiff(
        "s1",
        values,
        draw(st.frozensets(KEYS, max_size=2)),
        clear=draw(st.booleans()),
        expires=draw(st.floats(200.0, 300.0)),
        absolute=draw(DEADLINE),
        longterm=draw(st.booleans()),
        created=draw(st.floats(20.0, 30.0)),
        create=draw(st.booleans()),
        defaults=draw(st.one_of(st.none(), ENCODED)) if draw(st.integers(0, 4)) == 0 else None,
        local_only=draw(st.integers(0, 5)) == 0,
        span=draw(st.sampled_from([1, 1, 1, 3])),  # already folded ones fold again
    )


def applied(record: SessionRecord | None, chain: list[SessionDiff]) -> SessionRecord | None:
    for diff in chain:
        record = apply_diff(record, diff)
    return record


@settings(max_examples=600)
@given(record=records(), chain=st.lists(diffs(), min_size=1, max_size=6))
def test_folded_diffs_give_the_record_the_diffs_give_one_by_one(
    record: SessionRecord | None, chain: list[SessionDiff]
) -> None:
    folded = coalesce(chain)
    assert 1 <= len(folded) <= len(chain)
    assert sum(diff.span for diff in folded) == sum(diff.span for diff in chain)
    assert all(type(diff.delete) is frozenset for diff in folded)
    expected, got = applied(record, chain), applied(record, folded)
    assert got == expected  # values, deadlines, flags, created and version


def test_a_busy_sessions_plain_writes_fold_into_one() -> None:
    chain = [
        SessionDiff("s1", {"n": b"%d" % n}, frozenset(), False, 100.0 + n, None, False, 1.0)
        for n in range(50)
    ]
    [folded] = coalesce(chain)
    assert folded.set == {"n": b"49"}
    assert (folded.expires, folded.span) == (149.0, 50)


def test_folding_stops_where_a_diff_would_not_fold() -> None:
    plain = SessionDiff("s1", {"n": b"1"}, frozenset(), False, 100.0, None, False, 1.0)
    with_defaults = dataclasses.replace(plain, defaults={"old": b"1"})
    creating = dataclasses.replace(plain, create=True)
    stub = dataclasses.replace(plain, set={MOVED_KEY: b"s2"})
    other = dataclasses.replace(plain, id="s2")
    for chain in ([plain, with_defaults], [plain, creating], [plain, stub], [stub, plain], [plain, other]):
        assert coalesce(chain) == chain
    # A diff that may create the record takes later ones along.
    assert [d.span for d in coalesce([creating, plain, with_defaults, plain])] == [2, 2]
