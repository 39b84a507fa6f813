"""Encryption at rest: the Sealer, and SealedStore over every backend."""

from __future__ import annotations

import time
import typing as t

import pytest

from wsgi_session.crypto import SealedStore, Sealer
from wsgi_session.exceptions import BadStoredData
from wsgi_session.record import MOVED_KEY, forwarding_stub
from wsgi_session.stores import MemoryStore
from wsgi_session.stores.base import UNCHANGED

if t.TYPE_CHECKING:
    from .conftest import Backend

    MakeDiff = t.Callable[..., t.Any]

OLD_KEY = b"old encryption key, 32 bytes or more"
NEW_KEY = b"new encryption key, 32 bytes or more"
SECRET = b'"a secret value: 4111 1111 1111 1111"'


def test_seal_round_trip_with_a_fresh_nonce() -> None:
    sealer = Sealer([NEW_KEY])
    first, second = sealer.seal("s1", "card", SECRET), sealer.seal("s1", "card", SECRET)
    assert first != second
    assert SECRET not in first
    assert len(first) == len(SECRET) + 1 + 4 + 12 + 16
    assert sealer.unseal("s1", "card", first) == sealer.unseal("s1", "card", second) == SECRET


@pytest.mark.parametrize(
    ("session_id", "field"),
    [("s2", "card"), ("s1", "other"), ("s1\0card", ""), ("s1", "card\0")],
)
def test_a_value_only_opens_in_its_own_session_and_key(session_id: str, field: str) -> None:
    sealer = Sealer([NEW_KEY])
    with pytest.raises(BadStoredData, match="does not decrypt"):
        sealer.unseal(session_id, field, sealer.seal("s1", "card", SECRET))


def test_any_change_is_detected() -> None:
    sealer = Sealer([NEW_KEY])
    sealed = sealer.seal("s1", "card", SECRET)
    for index in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[index] ^= 0x01
        with pytest.raises(BadStoredData):
            sealer.unseal("s1", "card", bytes(tampered))
    for cut in (sealed[:-1], sealed[:20], b"", SECRET):
        with pytest.raises(BadStoredData):
            sealer.unseal("s1", "card", cut)


def test_key_rotation() -> None:
    old_sealed = Sealer([OLD_KEY]).seal("s1", "card", SECRET)
    rotated = Sealer([NEW_KEY, OLD_KEY])
    assert rotated.unseal("s1", "card", old_sealed) == SECRET
    assert rotated.needs_rewrap(old_sealed)
    assert not rotated.needs_rewrap(rotated.seal("s1", "card", SECRET))
    with pytest.raises(BadStoredData):
        Sealer([NEW_KEY]).unseal("s1", "card", old_sealed)


@pytest.mark.parametrize("keys", [[], [b"short"], [NEW_KEY, b"x" * 31]])
def test_keys_are_checked(keys: list[bytes]) -> None:
    with pytest.raises(ValueError):
        Sealer(keys)


def test_sealed_store_keeps_the_inner_store_flags() -> None:
    sealed = SealedStore(MemoryStore(), Sealer([NEW_KEY]))
    assert sealed.is_local
    assert not sealed.expires_by_itself


def test_no_plaintext_at_rest(backend: Backend, make_diff: MakeDiff) -> None:
    store = SealedStore(backend.store, Sealer([NEW_KEY]))
    store.apply([make_diff("s1", {"card": SECRET}, create=True)])
    store.apply([make_diff("s1", {"again": SECRET}, defaults={"default": SECRET})])
    store.apply([make_diff("s2", {"other": b"x"}, defaults={"default": SECRET}, create=True)])
    for session_id in ("s1", "s2"):
        assert SECRET not in backend.raw.dump(session_id)
        # Any piece of it: "4111 1111" (not "4111" alone, which a row's timestamps may hold).
        assert b"4111 1111" not in backend.raw.dump(session_id)
        assert b"a secret value" not in backend.raw.dump(session_id)
    record = store.load("s1")
    assert record is not None
    assert dict(record.values) == {"card": SECRET, "again": SECRET, "default": SECRET}


def test_a_stale_copy_is_checked_and_replaced_with_opened_values(
    backend: Backend, make_diff: MakeDiff
) -> None:
    """``load_if_changed`` passes ``UNCHANGED`` through and opens the record
    it gets for a stale copy."""
    store = SealedStore(backend.store, Sealer([NEW_KEY]))
    store.apply([make_diff("s1", {"card": SECRET}, create=True)])
    store.apply([make_diff("s1", {"n": b"2"})])
    assert store.load_if_changed("s1", 2) is UNCHANGED
    record = store.load_if_changed("s1", 1)
    assert record is not None
    assert record is not UNCHANGED
    assert dict(record.values) == {"card": SECRET, "n": b"2"}


def test_a_write_with_the_writers_snapshot_stays_sealed(backend: Backend, make_diff: MakeDiff) -> None:
    """The middleware hands the store the request's snapshot (``diff.base``,
    plaintext as the SealedStore opened it) as a write hint: the write must
    neither store that plaintext nor fail to open what it wrote."""
    store = SealedStore(backend.store, Sealer([NEW_KEY]))
    store.apply([make_diff("s1", {"card": SECRET, "n": b"1"}, create=True)])
    for n in (b"2", b"3"):
        snapshot = store.load("s1")
        assert snapshot is not None
        diff = make_diff("s1", {"n": n})
        diff.base = snapshot
        [written] = store.apply([diff])
        assert written is not None
        assert dict(written.values) == {"card": SECRET, "n": n}
        assert SECRET not in backend.raw.dump("s1")
        assert b"4111" not in backend.raw.dump("s1")
    record = store.load("s1")
    assert record is not None
    assert dict(record.values) == {"card": SECRET, "n": b"3"}


def test_values_moved_between_sessions_or_keys_do_not_open(backend: Backend, make_diff: MakeDiff) -> None:
    raw = backend.raw
    store = SealedStore(backend.store, Sealer([NEW_KEY]))
    store.apply([make_diff("victim", {"role": b'"admin"'}, create=True)])
    store.apply([make_diff("attacker", {"role": b'"guest"', "note": b'""'}, create=True)])
    stolen = raw.values("victim")["role"]
    raw.put_value("attacker", "role", stolen)
    with pytest.raises(BadStoredData):
        store.load("attacker")
    raw.put_value("victim", "note", stolen)
    with pytest.raises(BadStoredData):
        store.load("victim")


def test_forwarding_pointer_is_stored_as_is(backend: Backend, make_diff: MakeDiff) -> None:
    store = SealedStore(backend.store, Sealer([NEW_KEY]))
    store.apply([make_diff("old", {"k": SECRET}, create=True)])
    [stub] = store.apply([forwarding_stub("old", "new", time.time(), 30)])
    assert stub is not None
    assert stub.moved_to == "new"
    assert stub.values["k"] == SECRET
    assert backend.raw.values("old")[MOVED_KEY] == b"new"
    assert store.apply([make_diff("old", {"k": b"late"})]) == [stub]


def test_rotation_rewraps_on_write(backend: Backend, make_diff: MakeDiff) -> None:
    raw = backend.raw
    before = SealedStore(backend.store, Sealer([OLD_KEY]))
    before.apply([make_diff("s1", {"a": b"1", "b": b"2"}, create=True)])
    rotated = SealedStore(backend.store, Sealer([NEW_KEY, OLD_KEY]))
    record = rotated.load("s1")
    assert record is not None
    assert dict(record.values) == {"a": b"1", "b": b"2"}
    assert rotated.needs_rewrap("s1")
    rotated.apply([make_diff("s1", {"a": b"1"})])
    assert Sealer([NEW_KEY]).unseal("s1", "a", raw.values("s1")["a"]) == b"1"
    assert rotated.needs_rewrap("s1")  # "b" was not written yet
    rotated.apply([make_diff("s1", {"b": b"2"})])
    assert not rotated.needs_rewrap("s1")
    assert not rotated.needs_rewrap("missing")
    record = SealedStore(backend.store, Sealer([NEW_KEY])).load("s1")
    assert record is not None
    assert dict(record.values) == {"a": b"1", "b": b"2"}
