"""The lean Redis path (wsgi_session/stores/_resp.py): the RESP parser on
its own, then against a real Redis — replies equal redis-py's in RESP2 and
RESP3, pipelining, a connection per thread and per forked process, and a
connection killed by the server replaced without the caller noticing."""

from __future__ import annotations

import gc
import os
import socket
import threading
import typing as t

import pytest
import redis
import redis.exceptions as rex

from wsgi_session.stores import RedisStore, _resp
from wsgi_session.stores._resp import _INCOMPLETE, LeanPath, _Reader, pack, parse

if t.TYPE_CHECKING:
    from .conftest import Backend

# -- the parser on its own ---------------------------------------------------------------------

REPLIES = [
    (b"+OK\r\n", b"OK"),
    (b":-42\r\n", -42),
    (b"$5\r\nhe\r\nl\r\n", b"he\r\nl"),  # binary-safe: CRLF inside a bulk string
    (b"$0\r\n\r\n", b""),
    (b"$-1\r\n", None),
    (b"*-1\r\n", None),
    (b"*3\r\n:1\r\n*2\r\n$1\r\na\r\n$-1\r\n+x\r\n", [1, [b"a", None], b"x"]),
    (b"%2\r\n$1\r\nk\r\n$1\r\nv\r\n$1\r\nn\r\n:5\r\n", [b"k", b"v", b"n", 5]),  # RESP3 map, flat
    (b"_\r\n", None),  # RESP3 null
    (b"#t\r\n", True),
]


@pytest.mark.parametrize(("data", "value"), REPLIES)
def test_each_reply_type_parses_and_every_prefix_is_incomplete(data: bytes, value: object) -> None:
    assert parse(data) == (value, len(data))
    assert parse(b"junk" + data, 4) == (value, len(data) + 4)
    for cut in range(len(data)):
        assert parse(data[:cut])[0] is _INCOMPLETE, cut


def test_error_replies_are_redis_py_exceptions() -> None:
    no_script, after = parse(b"-NOSCRIPT No matching script.\r\n")
    assert isinstance(no_script, rex.NoScriptError)
    assert after == 31
    wrong_type, _ = parse(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
    assert type(wrong_type) is rex.ResponseError
    assert "wrong kind" in str(wrong_type)
    loading, _ = parse(b"-LOADING Redis is loading the dataset in memory\r\n")
    assert isinstance(loading, rex.BusyLoadingError)  # an outage, as redis-py says


def test_the_reader_skips_push_frames_and_reads_arrays_across_many_reads() -> None:
    ours, theirs = socket.socketpair()
    try:
        fields = b"".join(b"$3\r\nk%02d\r\n$5\r\nvalue\r\n" % (n % 100) for n in range(20_000))
        theirs.sendall(b">2\r\n$7\r\ninvalid\r\n*0\r\n:5\r\n")  # a RESP3 push, then the reply
        reader = _Reader(ours)
        assert reader.reply() == 5
        sender = threading.Thread(target=theirs.sendall, args=(b"*40000\r\n" + fields,))
        sender.start()  # about 300 KB: the reader gets it in many pieces
        items = reader.reply()
        sender.join()
        assert len(items) == 40_000
        assert items[:4] == [b"k00", b"value", b"k01", b"value"]
        assert reader.position == len(reader.data)
    finally:
        ours.close()
        theirs.close()


def test_pack_is_a_resp_array_of_bulk_strings() -> None:
    assert pack([b"HGET", b"k", b"\x00v"]) == b"*3\r\n$4\r\nHGET\r\n$1\r\nk\r\n$2\r\n\x00v\r\n"


# -- against a real Redis --------------------------------------------------------------------------


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def client(request: pytest.FixtureRequest, redis_client: t.Any) -> t.Iterator[redis.Redis]:
    url = redis_client.connection_pool.connection_kwargs
    client = redis.Redis(host=url["host"], port=url["port"], db=url.get("db", 0), protocol=request.param)
    yield client
    client.close()


@pytest.mark.redis
def test_replies_equal_redis_py_s(client: redis.Redis) -> None:
    lean = LeanPath.for_client(client)
    assert lean is not None
    client.delete(b"lean:h")
    big = os.urandom(300_000)  # a reply that arrives in several reads
    client.hset(b"lean:h", mapping={b"a": b"1", b"\x00v": b"7", b"bin": bytes(range(256)), b"big": big})
    try:
        hget, missing, everything, script, error = lean.call(
            [
                (b"HGET", b"lean:h", b"\x00v"),
                (b"HGET", b"lean:h", b"nope"),
                (b"HGETALL", b"lean:h"),
                (b"EVAL", b"return {1, 'x', false}", b"0"),
                (b"HGET", b"lean:h", b"a", b"extra-argument"),
            ]
        )
        assert hget == client.hget(b"lean:h", b"\x00v") == b"7"
        assert missing is None
        assert dict(zip(everything[::2], everything[1::2], strict=True)) == client.hgetall(b"lean:h")
        assert dict(zip(everything[::2], everything[1::2], strict=True))[b"big"] == big
        assert script == [1, b"x", None]
        assert isinstance(error, rex.ResponseError)  # in place: the other replies are intact
    finally:
        client.delete(b"lean:h")
        lean.close()


@pytest.fixture
def lean(redis_client: t.Any) -> t.Iterator[LeanPath]:
    """A lean path on the suite's Redis; its connections and the test's
    ``review:*`` keys are gone afterwards."""
    path = LeanPath(redis_client.connection_pool)
    yield path
    path.close()
    for key in redis_client.scan_iter(match=b"review:*"):
        redis_client.delete(key)


def client_id(lean: LeanPath) -> int:
    """The server's id of this thread's lean connection."""
    return int(lean.call([(b"CLIENT", b"ID")])[0])


def fault_once(
    monkeypatch: pytest.MonkeyPatch,
    fault: t.Callable[[_Reader, list[t.Any] | None], list[t.Any]],
    read_first: bool = True,
) -> None:
    """Fault injection: the next round trip reads its replies for real (or,
    with ``read_first=False``, leaves them in the socket), then
    ``fault(reader, replies)`` decides what the caller gets (or raises)."""
    real_receive = _resp._receive

    def faulty(reader: _Reader, count: int) -> list[t.Any]:
        monkeypatch.setattr(_resp, "_receive", real_receive)
        return fault(reader, real_receive(reader, count) if read_first else None)

    monkeypatch.setattr(_resp, "_receive", faulty)


@pytest.mark.redis
def test_a_read_on_a_connection_killed_by_the_server_is_sent_again(
    lean: LeanPath, redis_client: t.Any
) -> None:
    redis_client.hset(b"review:h", b"f", b"1")
    first = client_id(lean)
    assert redis_client.client_kill_filter(_id=first) == 1
    assert lean.call([(b"HGET", b"review:h", b"f")]) == [b"1"]
    second = client_id(lean)
    assert second != first


@pytest.mark.redis
def test_a_script_the_caller_says_only_reads_is_sent_again_on_a_killed_connection(
    lean: LeanPath, redis_client: t.Any
) -> None:
    """The store's check of a cached copy is a script: ``read_only`` makes
    it as safe to send again as ``HGET``; without it, it may have written."""
    redis_client.hset(b"review:h", b"f", b"1")
    script = (b"EVAL", b"return redis.call('HGET', KEYS[1], 'f')", b"1", b"review:h")
    redis_client.client_kill_filter(_id=client_id(lean))
    with pytest.raises(redis.ConnectionError):
        lean.call([script])
    redis_client.client_kill_filter(_id=client_id(lean))
    assert lean.call([script], read_only=True) == [b"1"]


@pytest.mark.redis
def test_a_write_is_never_sent_twice_but_an_idle_closed_connection_is_replaced_first(
    lean: LeanPath, redis_client: t.Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    incr = (b"INCR", b"review:n")
    first = client_id(lean)
    redis_client.client_kill_filter(_id=first)
    with pytest.raises(redis.ConnectionError):  # it may have run: an outage, not a retry
        lean.call([incr])
    assert lean.call([incr]) == [1]  # a new connection; the failed write never ran
    second = client_id(lean)
    redis_client.client_kill_filter(_id=second)
    monkeypatch.setattr(_resp, "_IDLE_CHECK", 0.0)  # as if a second had passed
    assert lean.call([incr]) == [2]  # the close was seen before writing


@pytest.mark.redis
def test_bytes_after_the_last_reply_keep_the_replies_but_not_the_connection(
    lean: LeanPath, monkeypatch: pytest.MonkeyPatch
) -> None:
    def with_a_notice_behind(reader: _Reader, replies: list[t.Any] | None) -> list[t.Any]:
        reader.data += b">2\r\n$7\r\nMOVING\r\n:1\r\n"  # a server notice behind the reply
        assert replies is not None
        return replies

    before = client_id(lean)
    fault_once(monkeypatch, with_a_notice_behind)
    assert lean.call([(b"PING",)]) == [b"PONG"]
    after = client_id(lean)
    assert after != before


@pytest.mark.redis
def test_a_read_interrupted_mid_reply_never_hands_its_reply_to_the_next_call(
    lean: LeanPath, redis_client: t.Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_client.set(b"review:a", b"111")
    redis_client.set(b"review:b", b"222")

    def interrupted(reader: _Reader, replies: list[t.Any] | None) -> list[t.Any]:
        raise KeyboardInterrupt  # as a timeout signal or gevent.Timeout would

    fault_once(monkeypatch, interrupted, read_first=False)  # the reply stays in the socket
    with pytest.raises(KeyboardInterrupt):
        lean.call([(b"GET", b"review:a")])
    assert lean.call([(b"GET", b"review:b")]) == [b"222"]


@pytest.mark.redis
def test_only_the_commands_answered_readonly_are_sent_again(
    lean: LeanPath, redis_client: t.Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second answer becomes a replica's READONLY (a failover demoted the
    # server); a real one needs a replica and a failover.
    readonly = rex.ReadOnlyError("You can't write against a read only replica.")
    fault_once(monkeypatch, lambda reader, replies: [replies[0], readonly] if replies else [])
    assert lean.call([(b"INCR", b"review:c"), (b"INCR", b"review:d")]) == [1, 2]
    assert redis_client.get(b"review:c") == b"1"  # ran once: not sent again


@pytest.mark.redis
def test_each_thread_has_its_own_connection_and_close_ends_them_all(redis_client: t.Any) -> None:
    lean = LeanPath(redis_client.connection_pool)
    ids: list[int] = []
    threads = [threading.Thread(target=lambda: ids.append(client_id(lean))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids.append(client_id(lean))
    assert len(set(ids)) == 4
    lean.close()
    alive = {int(entry["id"]) for entry in redis_client.client_list()}
    assert not alive & set(ids)


@pytest.mark.redis
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_uses_its_parent_s_connection(lean: LeanPath) -> None:
    parent = client_id(lean)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its connection's id, never return into pytest
        try:
            child = client_id(lean)
            os.write(writer, str(child).encode())
        finally:
            os._exit(0)
    os.close(writer)
    os.waitpid(pid, 0)
    child_id = int(os.read(reader, 64))
    os.close(reader)
    assert child_id != parent
    assert client_id(lean) == parent  # the parent's connection survived the child


@pytest.mark.redis
def test_connections_close_with_their_threads_and_stay_out_of_the_pool_s_count(redis_client: t.Any) -> None:
    kwargs = redis_client.connection_pool.connection_kwargs
    client = redis.Redis(host=kwargs["host"], port=kwargs["port"], max_connections=2)
    lean = LeanPath(client.connection_pool)
    ids: list[int] = []
    try:
        for _ in range(5):  # more threads than max_connections, one after another
            thread = threading.Thread(target=lambda: ids.append(client_id(lean)))
            thread.start()
            thread.join()
        gc.collect()
        alive = {int(entry["id"]) for entry in redis_client.client_list()}
        assert len(set(ids)) == 5
        assert not alive & set(ids)  # each closed when its thread ended
        assert client.ping()  # the pool's own connections are all still available
    finally:
        lean.close()
        client.close()


@pytest.mark.redis
def test_client_side_caching_keeps_redis_py_s_path() -> None:
    from redis.cache import CacheConfig

    client = redis.Redis(protocol=3, cache_config=CacheConfig())
    assert LeanPath.for_client(client) is None
    assert LeanPath.for_client(redis.Redis()) is not None


REDIS_KINDS = [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
    pytest.param("sentinel", marks=pytest.mark.redis),
]


@pytest.mark.parametrize("backend", REDIS_KINDS, indirect=True)
def test_the_store_takes_the_lean_path_except_on_a_cluster(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    store = backend.store
    assert isinstance(store, RedisStore)
    assert (store.lean is None) == (request.node.callspec.params["backend"] == "cluster")
