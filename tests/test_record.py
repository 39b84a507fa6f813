"""apply_diff's decoded-value memo: carried into the merged record only
where it still describes the merged record's values."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wsgi_session.record import SessionDiff, SessionRecord, apply_diff
from wsgi_session.serialization import TaggedJSONSerializer

SERIALIZER = TaggedJSONSerializer()
KEYS = st.sampled_from(["a", "b", "c", "d"])
VALUES = st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.none())
ENCODED = st.dictionaries(KEYS, VALUES.map(SERIALIZER.dumps), max_size=4)


@given(
    stored=st.dictionaries(KEYS, VALUES, max_size=4),
    memoised=st.sets(KEYS),
    changed=ENCODED,
    deleted=st.frozensets(KEYS, max_size=2),
    clear=st.booleans(),
    defaults=st.one_of(st.none(), ENCODED),
)
def test_every_memo_entry_decodes_from_the_merged_values(stored, memoised, changed, deleted, clear, defaults):
    record = SessionRecord(
        id="s" * 16,
        values={key: SERIALIZER.dumps(value) for key, value in stored.items()},
        created=0.0,
        expires=100.0,
        memo={key: stored[key] for key in memoised if key in stored},
    )
    diff = SessionDiff(
        id=record.id,
        set=changed,
        delete=deleted,
        clear=clear,
        expires=200.0,
        absolute=None,
        longterm=False,
        created=0.0,
        defaults=defaults,
    )
    merged = apply_diff(record, diff)
    assert merged is not None
    for key, value in merged.memo.items():
        assert SERIALIZER.loads(merged.values[key]) == value
    assert record.memo == {key: stored[key] for key in memoised if key in stored}  # not mutated


def test_unchanged_values_stay_decoded_across_a_write():
    record = SessionRecord("s" * 16, {"n": b"1", "tag": b'"x"'}, 0.0, 100.0, memo={"n": 1, "tag": "x"})
    diff = SessionDiff(record.id, {"n": b"2"}, frozenset(), False, 200.0, None, False, 0.0)
    merged = apply_diff(record, diff)
    assert merged is not None
    assert merged.memo == {"tag": "x"}
    assert merged.version == 2


def test_memo_carry_over_while_other_threads_add_to_the_memo():
    """Requests reading a cached record add decoded values to its memo from
    other threads while a writer merges into it: the merge never trips over
    the memo changing size under it."""
    import sys
    import threading

    record = SessionRecord(
        "s" * 16, {f"k{i}": b"1" for i in range(50)}, 0.0, 100.0, memo={f"k{i}": 1 for i in range(50)}
    )
    diff = SessionDiff(record.id, {"k0": b"2"}, frozenset(), False, 200.0, None, False, 0.0)
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            for i in range(50, 60):
                record.memo[f"x{i}"] = i
            for i in range(50, 60):
                record.memo.pop(f"x{i}", None)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(20_000):
            merged = apply_diff(record, diff)
            assert merged is not None
            assert "k0" not in merged.memo
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
