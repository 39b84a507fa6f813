"""How the cache in front of a persistent store checks its copies: by the
version while they are seldom stale, in one round trip once they often are."""

from __future__ import annotations

import typing as t

import pytest

from wsgi_session import SessionConfig
from wsgi_session.coherence import ONE_TRIP_ABOVE_STALE_SHARE, CachedStore
from wsgi_session.stores.base import UNCHANGED

from .conftest import PERSISTENT_BACKENDS

if t.TYPE_CHECKING:
    from .conftest import Backend

    MakeDiff = t.Callable[..., t.Any]

CONFIG = SessionConfig(secret_keys=["stale-checks-" + "k" * 32])


def spy_calls(cache: CachedStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the cache's read calls to the inner store, in order (a
    spy: each call still goes to the real store; a call the store makes to
    itself, as the default ``load_if_changed`` does to ``load``, is not
    the cache's)."""
    calls: list[str] = []
    depth = [0]
    inner = cache.inner
    for name in ("version", "load", "load_if_changed"):
        real = getattr(inner, name)

        def spy(*args: t.Any, _real: t.Any = real, _name: str = name) -> t.Any:
            if not depth[0]:
                calls.append(_name)
            depth[0] += 1
            try:
                return _real(*args)
            finally:
                depth[0] -= 1

        monkeypatch.setattr(inner, name, spy)
    return calls


@pytest.mark.parametrize("backend", PERSISTENT_BACKENDS, indirect=True)
def test_a_cache_whose_copies_are_often_stale_checks_in_one_call(
    backend: Backend, make_diff: MakeDiff, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker writes between this cache's reads: the first checks ask
    for the version and then load; once more than a fifth of the recent
    checks found a stale copy, one ``load_if_changed`` does both. A run of
    current copies brings the version check back."""
    store = backend.store
    cache = CachedStore(store, CONFIG)
    try:
        store.apply([make_diff("s1", {"n": b"0"}, create=True)])
        assert cache.load("s1") is not None  # cached at version 1
        calls = spy_calls(cache, monkeypatch)
        paths = []
        for n in range(1, 9):
            store.apply([make_diff("s1", {"n": str(n).encode()})])  # another worker's write
            calls.clear()
            record = cache.load("s1")
            assert record is not None
            assert record.values["n"] == str(n).encode()  # never the stale copy
            paths.append(tuple(calls))
        stale_checks = [("version", "load")] * 5 + [("load_if_changed",)] * 3
        assert paths == stale_checks  # the share after k stale checks is 1 - 0.95**k: above 0.2 at k = 5
        assert cache.stale_share > ONE_TRIP_ABOVE_STALE_SHARE
        paths.clear()
        for _ in range(40):  # nobody else writes now
            calls.clear()
            assert cache.load("s1") is not None
            paths.append(tuple(calls))
        assert paths[0] == ("load_if_changed",)
        assert paths[-1] == ("version",)
        assert cache.stale_share <= ONE_TRIP_ABOVE_STALE_SHARE
    finally:
        cache.close()


@pytest.mark.parametrize("backend", PERSISTENT_BACKENDS, indirect=True)
def test_a_stale_check_of_a_session_deleted_meanwhile_drops_the_copy(
    backend: Backend, make_diff: MakeDiff
) -> None:
    store = backend.store
    cache = CachedStore(store, CONFIG)
    try:
        for share in (0.0, 1.0):  # by version, then by the one-call check
            store.apply([make_diff("s1", {"n": b"0"}, create=True)])
            assert cache.load("s1") is not None
            cache.stale_share = share
            store.delete(["s1"])
            assert cache.load("s1") is None
            assert cache.cache.peek("s1") is None
    finally:
        cache.close()


def test_the_default_check_loads_and_compares(make_diff: MakeDiff) -> None:
    """A store without its own ``load_if_changed`` loads the record: one call
    either way, ``UNCHANGED`` when the versions match."""
    from wsgi_session.stores import MemoryStore

    store = MemoryStore()
    [record] = store.apply([make_diff("s1", {"n": b"0"}, create=True)])
    assert record is not None
    assert store.load_if_changed("s1", record.version) is UNCHANGED
    assert store.load_if_changed("s1", record.version - 1) == record
    assert store.load_if_changed("nobody", 1) is None
