"""RedisStore beyond the contract: layout, TTLs, round trips, malformed
hashes, Cluster and Sentinel specifics, and an outage of a real server."""

from __future__ import annotations

import dataclasses
import typing as t
import uuid

import pytest
import redis
from redis.backoff import NoBackoff
from redis.connection import AbstractConnection
from redis.retry import Retry
from services import RedisServer

from wsgi_session.exceptions import BadStoredData, StoreUnavailable
from wsgi_session.stores import RedisStore
from wsgi_session.stores._redis_layout import _base_version
from wsgi_session.stores.base import UNCHANGED

if t.TYPE_CHECKING:
    from pathlib import Path

    from .conftest import Backend

    MakeDiff = t.Callable[..., t.Any]

REDIS_KINDS = [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
    pytest.param("sentinel", marks=pytest.mark.redis),
]
redis_kinds = pytest.mark.parametrize("backend", REDIS_KINDS, indirect=True)


def client_of(backend: Backend) -> t.Any:
    assert isinstance(backend.store, RedisStore)
    return backend.store.client


def test_decode_responses_is_refused() -> None:
    with pytest.raises(ValueError, match="decode_responses"):
        RedisStore(redis.Redis(decode_responses=True))


@redis_kinds
def test_layout_is_one_hash_per_session(backend: Backend, make_diff: MakeDiff) -> None:
    store = backend.store
    assert isinstance(store, RedisStore)
    diff = make_diff("s1", {"cart": b"[1]"}, create=True, absolute=100, longterm=True)
    store.apply([diff])
    fields = client_of(backend).hgetall(f"{store.prefix}s1")
    assert fields == {
        b"cart": b"[1]",
        b"\0v": b"1",
        b"\0c": repr(diff.created).encode(),
        b"\0e": repr(diff.expires).encode(),
        b"\0a": repr(diff.absolute).encode(),
        b"\0l": b"1",
    }


@redis_kinds
def test_key_ttl_is_the_remaining_lifetime(backend: Backend, make_diff: MakeDiff) -> None:
    client, store = client_of(backend), backend.store
    key = f"{t.cast('RedisStore', store).prefix}s1"
    store.apply([make_diff("s1", {"k": b"v"}, ttl=100, create=True)])
    assert client.pttl(key) == pytest.approx(100_000, abs=1500)
    store.apply([make_diff("s1", {}, ttl=300, absolute=40)])
    assert client.pttl(key) == pytest.approx(40_000, abs=1500)
    store.apply([make_diff("s1", {}, ttl=20, absolute=400)])  # absolute stays at 40
    assert client.pttl(key) == pytest.approx(20_000, abs=1500)
    store.apply([make_diff("s1", {}, ttl=100)])
    assert client.pttl(key) == pytest.approx(40_000, abs=1500)
    # The same through the script's fast path (the writer holds the stored
    # version): the deadline is still the earlier one, and the row complete.
    current = store.load("s1")
    assert current is not None
    assert current.absolute is not None
    for ttl, expected in ((10, 10_000), (100, 40_000)):
        diff = dataclasses.replace(
            make_diff("s1", {"k": b"w"}, ttl=ttl), absolute=current.absolute, base=current
        )
        assert _base_version(diff) == str(current.version).encode()  # the fast path is taken
        written = store.apply([diff])[0]
        assert written == store.load("s1")
        assert written is not None
        assert written.version == current.version + 1
        assert client.pttl(key) == pytest.approx(expected, abs=1500)
        current = written
    assert client.hget(key, b"\0a") == repr(current.absolute).encode()
    # A hash that lost its absolute deadline is not taken for the writer's
    # copy: the full merge writes the field back.
    client.hdel(key, b"\0a")
    diff = dataclasses.replace(make_diff("s1", {"k": b"x"}, ttl=100), absolute=current.absolute, base=current)
    store.apply([diff])
    assert client.hget(key, b"\0a") == repr(current.absolute).encode()
    repaired = store.load("s1")
    assert repaired is not None
    assert repaired.values["k"] == b"x"


@redis_kinds
def test_the_merge_script_is_reloaded_after_a_flush(backend: Backend, make_diff: MakeDiff) -> None:
    store = backend.store
    store.apply([make_diff("s1", {"a": b"1"}, create=True)])
    client_of(backend).script_flush()
    record, _ = store.apply([make_diff("s1", {"b": b"2"}), make_diff("s2", {"c": b"3"}, create=True)])
    assert record is not None
    assert dict(record.values) == {"a": b"1", "b": b"2"}


@redis_kinds
def test_the_check_script_is_reloaded_after_a_flush(backend: Backend, make_diff: MakeDiff) -> None:
    """A cached copy's check survives a restarted Redis or ``SCRIPT FLUSH``:
    the lean path loads the script again, redis-py's ``Script`` (cluster) too."""
    store = backend.store
    store.apply([make_diff("s1", {"a": b"1"}, create=True)])
    client_of(backend).script_flush()
    assert store.load_if_changed("s1", 1) is UNCHANGED
    [second] = store.apply([make_diff("s1", {"b": b"2"})])
    client_of(backend).script_flush()
    assert store.load_if_changed("s1", 1) == second


@redis_kinds
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ({b"\0v": b"many"}, "version"),
        ({b"\0e": b"soon"}, "expires"),
        ({b"\0l": b"maybe"}, "long-term"),
        ({b"\0a": b"nan"}, "point in time"),
        ({b"\xff\xfe": b"x"}, "UTF-8"),
    ],
)
def test_malformed_hash_is_bad_stored_data(
    backend: Backend, make_diff: MakeDiff, damage: dict[bytes, bytes], message: str
) -> None:
    store = backend.store
    store.apply([make_diff("s1", {"k": b"v"}, create=True)])
    client_of(backend).hset(f"{t.cast('RedisStore', store).prefix}s1", mapping=damage)
    with pytest.raises(BadStoredData, match=message):
        store.load("s1")
    with pytest.raises(BadStoredData, match=message):  # a stale copy's check reads the hash
        store.load_if_changed("s1", 0)


@redis_kinds
def test_merging_into_a_malformed_hash_is_bad_stored_data(backend: Backend, make_diff: MakeDiff) -> None:
    store, client = backend.store, client_of(backend)
    prefix = t.cast("RedisStore", store).prefix
    store.apply([make_diff("s1", {"k": b"v"}, create=True)])
    client.hset(f"{prefix}s1", b"\0v", b"garbage")
    with pytest.raises(BadStoredData):
        store.apply([make_diff("s1", {"k": b"w"})])
    with pytest.raises(BadStoredData):
        store.version("s1")
    client.set(f"{prefix}s2", b"a plain string")

    calls = (
        lambda: store.load("s2"),
        lambda: store.load_if_changed("s2", 1),
        lambda: store.apply([make_diff("s2", {"k": b"v"})]),
    )
    for call in calls:
        with pytest.raises(BadStoredData, match=r"not a hash|malformed"):
            call()
    assert client.get(f"{prefix}s2") == b"a plain string"  # left untouched


def test_metadata_field_names_are_reserved(make_diff: MakeDiff) -> None:
    store = RedisStore(redis.Redis(port=1))  # never connects: the diff is refused first
    with pytest.raises(ValueError, match="reserved"):
        store.apply([make_diff("s1", {"\0v": b"1"}, create=True)])


@redis_kinds
def test_prefix_is_matched_literally(backend: Backend, make_diff: MakeDiff) -> None:
    client, base = client_of(backend), f"wsgi-test:{uuid.uuid4().hex}"
    starry, plain = RedisStore(client, prefix=f"{base}*["), RedisStore(client, prefix=f"{base}x[")
    try:
        starry.apply([make_diff("s1", {"k": b"v"}, create=True)])
        plain.apply([make_diff("s2", {"k": b"v"}, create=True)])
        assert list(starry.iter_ids()) == ["s1"]
        starry.clear()
        assert list(plain.iter_ids()) == ["s2"]
    finally:
        starry.clear()
        plain.clear()


@pytest.mark.redis
@pytest.mark.parametrize("backend", ["redis"], indirect=True)
def test_one_round_trip_per_call(
    backend: Backend, make_diff: MakeDiff, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = backend.store
    store.apply([make_diff(f"s{n}", {"k": b"v"}, create=True) for n in range(10)])  # warm up
    sent: list[bytes] = []
    real_send = AbstractConnection.send_packed_command

    def counting_send(self: AbstractConnection, command: t.Any, check_health: bool = True) -> None:
        sent.append(command)  # a spy: the real send still happens
        real_send(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting_send)

    counts = {}
    for name, call in {
        "apply 10 diffs": lambda: store.apply([make_diff(f"s{n}", {"k": b"w"}) for n in range(10)]),
        "apply 1 diff": lambda: store.apply([make_diff("s1", {"k": b"x"})]),
        "load": lambda: store.load("s1"),
        "version": lambda: store.version("s1"),
        "exists": lambda: store.exists("s1"),
        "check a current copy": lambda: store.load_if_changed("s1", 3),  # created, then 2 writes
        "check a stale copy": lambda: store.load_if_changed("s1", 1),
        "delete 10": lambda: store.delete([f"s{n}" for n in range(10)]),
    }.items():
        sent.clear()
        call()
        counts[name] = len(sent)
    assert counts == dict.fromkeys(counts, 1)


@pytest.mark.redis
@pytest.mark.cluster
@pytest.mark.parametrize("backend", ["cluster"], indirect=True)
def test_cluster_sessions_spread_over_every_primary(backend: Backend, make_diff: MakeDiff) -> None:
    store, client = backend.store, client_of(backend)
    ids = [f"spread-{n}" for n in range(60)]
    store.apply([make_diff(session_id, {"k": b"v"}, create=True) for session_id in ids])
    sizes = [client.dbsize(target_nodes=node) for node in client.get_primaries()]
    assert len(sizes) == 3
    assert all(size > 0 for size in sizes)
    assert store.count() == 60
    assert sorted(store.iter_ids(batch_size=5)) == sorted(ids)
    store.delete(ids[:30])
    assert sorted(store.iter_ids()) == sorted(ids[30:])


@pytest.mark.redis
def test_outage_raises_store_unavailable_and_recovers(tmp_path: Path, make_diff: MakeDiff) -> None:
    server = RedisServer(tmp_path / "outage").start()
    restarted = RedisServer(tmp_path / "outage", port=server.port)
    no_retry = Retry(NoBackoff(), 0)  # redis-py's default retries take seconds per call
    client = redis.Redis(port=server.port, socket_timeout=1, socket_connect_timeout=1, retry=no_retry)
    store = RedisStore(client)
    try:
        store.setup()
        store.apply([make_diff("s1", {"k": b"v"}, create=True)])
        server.stop()
        calls = {
            "apply": lambda: store.apply([make_diff("s1", {"k": b"w"})]),
            "load": lambda: store.load("s1"),
            "version": lambda: store.version("s1"),
            "delete": lambda: store.delete(["s1"]),
            "count": store.count,
            "setup": store.setup,
        }
        for name, call in calls.items():
            with pytest.raises(StoreUnavailable) as info:
                call()
            assert isinstance(info.value.__cause__, redis.ConnectionError), name
        restarted.start()
        [record] = store.apply([make_diff("s1", {"k": b"again"}, create=True)])
        assert record is not None
        assert store.load("s1") == record  # nothing persisted: a fresh record
    finally:
        client.close()
        server.stop()
        restarted.stop()


@redis_kinds
def test_a_writer_holding_the_stored_version_gets_a_short_reply(
    backend: Backend, make_diff: MakeDiff
) -> None:
    """``diff.base`` at the stored version: the script answers only the new
    version and the store merges the writer's copy itself, with the same
    result as the full reply; a stale base gets the full hash back."""
    store = backend.store
    created = store.apply([make_diff("s1", {"a": b"1", "b": b"2"}, create=True)])[0]
    assert created is not None
    diff = make_diff("s1", {"a": b"10"}, delete=["b"])
    diff.base = created
    merged = store.apply([diff])[0]
    assert merged == store.load("s1")
    assert merged is not None
    assert dict(merged.values) == {"a": b"10"}
    assert merged.version == created.version + 1
    stale = make_diff("s1", {"c": b"3"})
    stale.base = created  # two versions behind now
    assert store.apply([stale])[0] == store.load("s1")
    assert dict(store.load("s1").values) == {"a": b"10", "c": b"3"}  # type: ignore[union-attr]


@pytest.mark.redis
def test_a_cached_copy_is_checked_while_redis_is_out_of_memory(tmp_path: Path, make_diff: MakeDiff) -> None:
    """Out of memory (``maxmemory`` reached, a real fault), Redis refuses
    writes but still runs the check script, which only reads: cached
    copies are validated and reloaded as with ``HGET``, so reads go on."""
    server = RedisServer(tmp_path / "oom").start()
    client = redis.Redis(port=server.port)
    store = RedisStore(client)
    try:
        store.setup()
        [first] = store.apply([make_diff("s1", {"k": b"v"}, create=True)])
        [second] = store.apply([make_diff("s1", {"k": b"w"})])
        client.config_set("maxmemory", 1)
        with pytest.raises(StoreUnavailable, match="maxmemory"):
            store.apply([make_diff("s1", {"k": b"x"})])
        assert store.load_if_changed("s1", 2) is UNCHANGED
        assert store.load_if_changed("s1", 1) == second
        assert first is not None
        assert second is not None
        assert second.version == first.version + 1
    finally:
        client.close()
        server.stop()
