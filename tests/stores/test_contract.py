"""The Store contract (wsgi_session/stores/base.py), checked on every backend."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
import typing as t

import pytest

from wsgi_session.exceptions import BadStoredData
from wsgi_session.record import MOVED_KEY, SessionRecord, apply_diff, forwarding_stub
from wsgi_session.stores.base import UNCHANGED

if t.TYPE_CHECKING:
    from wsgi_session.stores.base import Store

    from .conftest import Backend

    MakeDiff = t.Callable[..., t.Any]


def test_missing_session(store: Store) -> None:
    assert store.load("nobody") is None
    assert store.version("nobody") is None
    assert not store.exists("nobody")
    assert store.count() == 0
    assert list(store.iter_ids()) == []
    assert store.apply([]) == []


def test_create_and_load(store: Store, make_diff: MakeDiff) -> None:
    diff = make_diff("s1", {"a": b"1", "b": b"\x00\xff binary"}, create=True, absolute=120, longterm=True)
    [record] = store.apply([diff])
    assert record is not None
    assert dict(record.values) == {"a": b"1", "b": b"\x00\xff binary"}
    assert (record.id, record.version, record.longterm) == ("s1", 1, True)
    assert (record.created, record.expires, record.absolute) == (diff.created, diff.expires, diff.absolute)
    assert store.load("s1") == record
    assert store.version("s1") == 1
    assert store.exists("s1")


def test_missing_session_is_not_created_without_create(store: Store, make_diff: MakeDiff) -> None:
    assert store.apply([make_diff("gone", {"a": b"1"})]) == [None]
    assert store.load("gone") is None
    assert store.count() == 0


def test_merge_changes_only_the_keys_the_diff_touched(store: Store, make_diff: MakeDiff) -> None:
    [first] = store.apply([make_diff("s1", {"a": b"1", "b": b"2", "c": b"3"}, create=True)])
    later = make_diff("s1", {"b": b"20", "d": b"4"}, delete={"c", "never-set"}, ttl=300, longterm=True)
    [record] = store.apply([later])
    assert record is not None
    assert first is not None
    assert dict(record.values) == {"a": b"1", "b": b"20", "d": b"4"}
    assert record.version == 2
    assert record.created == first.created
    assert (record.expires, record.longterm) == (later.expires, True)
    assert store.load("s1") == record


def test_absolute_deadline_is_kept_once_set(store: Store, make_diff: MakeDiff) -> None:
    [first] = store.apply([make_diff("s1", {"a": b"1"}, create=True, absolute=100)])
    [record] = store.apply([make_diff("s1", {"a": b"2"}, absolute=500)])
    assert first is not None
    assert record is not None
    assert record.absolute == first.absolute
    store.apply([make_diff("s2", {"a": b"1"}, create=True)])
    later = make_diff("s2", {}, absolute=500)
    [record] = store.apply([later])
    assert record is not None
    assert record.absolute == later.absolute


def test_defaults_fill_only_missing_keys(store: Store, make_diff: MakeDiff) -> None:
    store.apply([make_diff("s1", {"a": b"1", "d": b"old"}, create=True)])
    diff = make_diff("s1", {"c": b"3"}, defaults={"a": b"9", "b": b"2", "d": b"x"}, delete={"d"})
    [record] = store.apply([diff])
    assert record is not None
    assert dict(record.values) == {"a": b"1", "b": b"2", "c": b"3"}
    [created] = store.apply([make_diff("s2", {"a": b"1"}, defaults={"a": b"0", "b": b"0"}, create=True)])
    assert created is not None
    assert dict(created.values) == {"a": b"1", "b": b"0"}


def test_clear_drops_every_key_not_set(store: Store, make_diff: MakeDiff) -> None:
    store.apply([make_diff("s1", {"a": b"1", "b": b"2"}, create=True)])
    [record] = store.apply([make_diff("s1", {"c": b"3"}, clear=True, defaults={"a": b"0"})])
    assert record is not None
    assert dict(record.values) == {"c": b"3"}
    [emptied] = store.apply([make_diff("s1", clear=True)])
    assert emptied is not None
    assert dict(emptied.values) == {}
    assert emptied.version == 3
    assert store.load("s1") == emptied


def test_forwarding_stub_is_returned_unchanged(store: Store, make_diff: MakeDiff) -> None:
    store.apply([make_diff("old", {"a": b"1"}, create=True)])
    [stub] = store.apply([forwarding_stub("old", "new", time.time(), 30)])
    assert stub is not None
    assert stub.moved_to == "new"
    assert dict(stub.values) == {"a": b"1", MOVED_KEY: b"new"}
    [seen] = store.apply([make_diff("old", {"b": b"2"}, create=True)])
    assert seen == stub  # the caller follows it to "new"
    assert store.load("old") == stub
    assert store.load("new") is None


def test_delete_ignores_missing_ids(store: Store, make_diff: MakeDiff) -> None:
    store.apply([make_diff("s1", {"a": b"1"}, create=True), make_diff("s2", {"a": b"1"}, create=True)])
    store.delete(["s1", "missing"])
    store.delete([])
    assert store.load("s1") is None
    assert not store.exists("s1")
    assert store.load("s2") is not None


def test_delete_many(store: Store, make_diff: MakeDiff) -> None:
    ids = [f"s{index:04}" for index in range(1200)]
    store.apply([make_diff(session_id, {"k": b"v"}, create=True) for session_id in ids])
    assert store.count() == 1200
    store.delete(iter(ids[:1100]))
    assert sorted(store.iter_ids()) == ids[1100:]


def test_version_increments_on_every_write(store: Store, make_diff: MakeDiff) -> None:
    store.apply([make_diff("s1", {"n": b"0"}, create=True)])
    for number in range(1, 5):
        store.apply([make_diff("s1", {"n": str(number).encode()})])
    record = store.load("s1")
    assert record is not None
    assert record.version == 5 == store.version("s1")


def test_load_if_changed_answers_unchanged_a_newer_record_or_none(store: Store, make_diff: MakeDiff) -> None:
    """How a cached copy is validated: ``UNCHANGED`` while the stored version
    is the copy's, the stored record once another writer moved it on, and
    ``None`` for a session that is gone."""
    [first] = store.apply([make_diff("s1", {"a": b"1", "big": b"x" * 20_000}, create=True)])
    assert first is not None
    assert store.load_if_changed("s1", first.version) is UNCHANGED
    [second] = store.apply([make_diff("s1", {"a": b"2"})])
    assert second is not None
    assert second.version == first.version + 1
    assert store.load_if_changed("s1", first.version) == second == store.load("s1")
    assert store.load_if_changed("s1", second.version) is UNCHANGED
    assert store.load_if_changed("s1", second.version + 1) == second  # a copy ahead is not current either
    store.delete(["s1"])
    assert store.load_if_changed("s1", second.version) is None
    assert store.load_if_changed("nobody", 1) is None


def test_batch_results_are_in_order(store: Store, make_diff: MakeDiff) -> None:
    results = store.apply(
        [
            make_diff("s2", {"a": b"1"}, create=True),
            make_diff("s1", {"a": b"1"}, create=True),
            make_diff("s1", {"b": b"2"}),
            make_diff("missing", {"a": b"1"}),
            make_diff("s2", {"c": b"3"}),
        ]
    )
    summary = [None if r is None else (r.id, r.version, sorted(r.values)) for r in results]
    assert summary == [
        ("s2", 1, ["a"]),
        ("s1", 1, ["a"]),
        ("s1", 2, ["a", "b"]),
        None,
        ("s2", 2, ["a", "c"]),
    ]


def test_keys_and_values_are_binary_safe(store: Store, make_diff: MakeDiff) -> None:
    values = {"ключ": bytes(range(256)), "🍪 cookie": b"", "a:b*c?[d]": b"\r\n\x00"}
    store.apply([make_diff("s1", values, create=True)])
    record = store.load("s1")
    assert record is not None
    assert dict(record.values) == values


def test_count_and_iter_ids_in_batches(store: Store, make_diff: MakeDiff) -> None:
    ids = {f"session-{index}" for index in range(25)}
    store.apply([make_diff(session_id, {"k": b"v"}, create=True) for session_id in ids])
    assert store.count() == 25
    seen = list(store.iter_ids(batch_size=7))
    assert sorted(seen) == sorted(ids)


def test_purge_expired_is_bounded(store: Store, make_diff: MakeDiff) -> None:
    if store.expires_by_itself:
        pytest.skip("the backend deletes expired sessions by itself (test_deadlines_are_honoured)")
    store.apply([make_diff(f"idle{index}", {"k": b"v"}, ttl=5, create=True) for index in range(4)])
    store.apply([make_diff("absolute", {"k": b"v"}, ttl=500, absolute=5, create=True)])
    store.apply([make_diff("alive", {"k": b"v"}, ttl=500, create=True)])
    later = time.time() + 10
    purged = [store.purge_expired(later, limit=2) for _ in range(4)]
    assert [len(batch) for batch in purged] == [2, 2, 1, 0]
    assert sorted(i for batch in purged for i in batch) == ["absolute", "idle0", "idle1", "idle2", "idle3"]
    assert list(store.iter_ids()) == ["alive"]


def test_deadlines_are_honoured(store: Store, make_diff: MakeDiff) -> None:
    store.apply([make_diff("short", {"k": b"v"}, ttl=0.3, create=True)])
    store.apply([make_diff("capped", {"k": b"v"}, ttl=500, absolute=0.3, create=True)])
    time.sleep(0.5)
    for session_id in ("short", "capped"):
        record = store.load(session_id)
        if store.expires_by_itself:
            assert record is None
        else:  # stores return what they hold; the caller judges expiry
            assert record is not None
            assert record.is_expired(time.time())
    if not store.expires_by_itself:
        assert sorted(store.purge_expired(time.time())) == ["capped", "short"]
    assert store.count() == 0
    assert store.apply([make_diff("short", {"k": b"again"})]) == [None]


def test_clear_touches_only_this_store(backend: Backend, make_diff: MakeDiff) -> None:
    other = backend.sibling()
    other.setup()
    backend.store.apply([make_diff("mine", {"k": b"v"}, create=True)])
    other.apply([make_diff("theirs", {"k": b"v"}, create=True)])
    backend.store.clear()
    assert backend.store.count() == 0
    assert list(other.iter_ids()) == ["theirs"]
    assert backend.store.load("theirs") is None


def test_concurrent_writers_of_one_session_all_survive(store: Store, make_diff: MakeDiff) -> None:
    threads, writes = 8, 15
    store.apply([make_diff("shared", {"base": b"1"}, create=True)])
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        try:
            barrier.wait()
            for count in range(writes):
                store.apply([make_diff("shared", {f"writer{number}": str(count).encode()})])
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    record = store.load("shared")
    assert record is not None
    expected = {f"writer{n}": str(writes - 1).encode() for n in range(threads)}
    assert dict(record.values) == {"base": b"1", **expected}
    assert record.version == 1 + threads * writes


def test_concurrent_creators_of_one_session_merge(store: Store, make_diff: MakeDiff) -> None:
    threads = 8
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def creator(number: int) -> None:
        try:
            barrier.wait()
            store.apply([make_diff("fresh", {f"writer{number}": b"x"}, create=True)])
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=creator, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    record = store.load("fresh")
    assert record is not None
    assert sorted(record.values) == sorted(f"writer{n}" for n in range(threads))
    assert record.version == threads


def test_unreadable_stored_data_raises_bad_stored_data(backend: Backend, make_diff: MakeDiff) -> None:
    backend.store.apply([make_diff("s1", {"k": b"v"}, create=True)])
    backend.raw.corrupt("s1")
    with pytest.raises(BadStoredData):
        backend.store.load("s1")
    with pytest.raises(BadStoredData):  # a cached copy's check sees the damage too
        backend.store.load_if_changed("s1", 0)
    with pytest.raises(BadStoredData):
        backend.store.apply([make_diff("s1", {"k": b"w"})])


def test_apply_matches_record_apply_diff(store: Store, make_diff: MakeDiff) -> None:
    """Random diffs give exactly what wsgi_session.record.apply_diff gives:
    stores that merge on the server (Redis's script) cannot drift from it."""
    rng = random.Random(20240611)
    keys = ["a", "b", "c", "d"]
    model: dict[str, SessionRecord | None] = {"s1": None, "s2": None}

    def some_keys() -> dict[str, bytes]:
        return {key: rng.randbytes(3) for key in rng.sample(keys, rng.randint(0, 3))}

    for step in range(100):
        session_id = rng.choice(list(model))
        diff = make_diff(
            session_id,
            some_keys(),
            delete=rng.sample(keys, rng.randint(0, 2)),
            clear=rng.random() < 0.15,
            defaults=some_keys() if rng.random() < 0.3 else None,
            ttl=rng.uniform(30, 90),
            absolute=rng.choice([None, 100.0, 200.0]),
            longterm=rng.random() < 0.5,
            create=rng.random() < 0.6,
        )
        # Some stand for several writes (a flush's folded diffs): the version moves on by as many.
        diff = dataclasses.replace(diff, span=rng.choice([1, 1, 1, 4]))
        if rng.random() < 0.2:
            store.delete([session_id])
            model[session_id] = None
        expected = apply_diff(model[session_id], diff)
        [got] = store.apply([diff])
        assert got == expected, f"step {step}: {diff}"
        assert store.load(session_id) == expected
        model[session_id] = expected


def test_writes_with_the_writers_snapshot_match_record_apply_diff(store: Store, make_diff: MakeDiff) -> None:
    """The same with ``diff.base`` set the way the middleware sets it (the
    request's snapshot, its absolute deadline carried), sometimes current and
    sometimes stale: the stores' shortcuts for a current snapshot (Redis's
    short script path, SQL's single guarded UPDATE) give what apply_diff
    gives, and a stale one falls back to the full merge."""
    rng = random.Random(20261126)
    keys = ["a", "b", "c", "d"]
    model: dict[str, SessionRecord | None] = {"s1": None, "s2": None}
    history: dict[str, list[SessionRecord]] = {"s1": [], "s2": []}

    def some_keys() -> dict[str, bytes]:
        return {key: rng.randbytes(3) for key in rng.sample(keys, rng.randint(0, 3))}

    for step in range(120):
        session_id = rng.choice(list(model))
        current = model[session_id]
        diff = make_diff(
            session_id,
            some_keys(),
            delete=rng.sample(keys, rng.randint(0, 2)),
            clear=rng.random() < 0.1,
            ttl=rng.uniform(30, 90),
            absolute=rng.choice([None, 60.0]) if current is None else None,
            longterm=rng.random() < 0.5,
            create=current is None,
        )
        if current is not None:
            stale = history[session_id][:-1]
            base = rng.choice(stale) if stale and rng.random() < 0.25 else current
            diff = dataclasses.replace(diff, absolute=current.absolute, base=base, span=rng.choice([1, 1, 3]))
        expected = apply_diff(current, diff)
        [got] = store.apply([diff])
        assert got == expected, f"step {step}: {diff}"
        assert store.load(session_id) == expected
        model[session_id] = expected
        if expected is not None:
            history[session_id].append(expected)
