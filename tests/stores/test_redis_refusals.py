"""Redis error replies, sorted by what they mean to a visitor's session.

``WRONGTYPE`` and a malformed hash blame the stored session (a new session,
tested in ``test_redis.py``); ``BUSY``, ``NOPERM`` and their kind are Redis
refusing to serve (:class:`StoreUnavailable`: the outage policy answers, the
visitor keeps the session); any other error reply (``ERR ...``) is a bug to
be seen and is raised as redis-py's own error. The refusals are real faults
of a private ``redis-server``: a client's endless script, an ACL user.
"""

from __future__ import annotations

import contextlib
import threading
import time
import typing as t

import pytest
import redis
from services import RedisServer

from wsgi_session.exceptions import StoreUnavailable
from wsgi_session.stores import RedisStore
from wsgi_session.stores._redis_replies import blames_the_stored_session, is_outage

if t.TYPE_CHECKING:
    from pathlib import Path

    MakeDiff = t.Callable[..., t.Any]

pytestmark = pytest.mark.redis
PATHS = pytest.mark.parametrize("lean", [True, False], ids=["lean path", "redis-py path"])


@pytest.mark.parametrize(
    ("reply", "outage", "blamed"),
    [
        (redis.ResponseError("BUSY Redis is busy running a script."), True, False),
        (redis.ResponseError("MISCONF Redis is configured to save RDB snapshots"), True, False),
        (redis.ResponseError("NOREPLICAS Not enough good replicas to write."), True, False),
        (redis.exceptions.NoPermissionError("this user has no permissions"), True, False),
        (redis.exceptions.NoScriptError("No matching script."), True, False),
        (redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"), False, True),
        (redis.ResponseError("ERR wrong number of arguments for 'hget' command"), False, False),
        (redis.ResponseError("ERR Error running script (call to f_0): attempt to index nil"), False, False),
    ],
    ids=["BUSY", "MISCONF", "NOREPLICAS", "NOPERM", "NOSCRIPT", "WRONGTYPE", "ERR args", "ERR script"],
)
def test_what_an_error_reply_means(reply: Exception, outage: bool, blamed: bool) -> None:
    assert is_outage(reply) is outage
    assert blames_the_stored_session(reply) is blamed


@PATHS
def test_busy_redis_is_an_outage_and_the_session_is_kept(
    tmp_path: Path, make_diff: MakeDiff, lean: bool
) -> None:
    server = RedisServer(tmp_path / "busy").start()
    client = redis.Redis(port=server.port)
    store = _store(client, lean)
    try:
        store.setup()
        [stored] = store.apply([make_diff("s1", {"k": b"v"}, create=True)])
        client.config_set("lua-time-limit", 50)  # busy-reply-threshold since Redis 7
        with _a_script_keeps_redis_busy(client, server.port):
            for call in _every_call(store, make_diff):
                with pytest.raises(StoreUnavailable, match="BUSY"):
                    call()
        assert store.load("s1") == stored
    finally:
        client.close()
        server.stop()


@PATHS
def test_a_client_without_permissions_is_an_outage(tmp_path: Path, make_diff: MakeDiff, lean: bool) -> None:
    server = RedisServer(tmp_path / "acl").start()
    client = redis.Redis(port=server.port)
    store = RedisStore(client)
    client.acl_setuser(
        "limited", enabled=True, nopass=True, keys=["*"], commands=["+@all", "-hgetall", "-hget", "-evalsha"]
    )
    limited = _store(redis.Redis(port=server.port, username="limited"), lean)
    try:
        [stored] = store.apply([make_diff("s1", {"k": b"v"}, create=True)])
        for call in _every_call(limited, make_diff):
            with pytest.raises(StoreUnavailable, match=r"NOPERM|permission"):
                call()
        assert store.load("s1") == stored
    finally:
        limited.client.close()
        client.close()
        server.stop()


def _store(client: redis.Redis, lean: bool) -> RedisStore:
    store = RedisStore(client)
    if not lean:  # the path of a Cluster client, or one with client-side caching
        store.lean = None
    else:
        assert store.lean is not None
    return store


def _every_call(store: RedisStore, make_diff: MakeDiff) -> list[t.Callable[[], object]]:
    """The request path's calls on session ``s1``."""
    return [
        lambda: store.load("s1"),
        lambda: store.version("s1"),
        lambda: store.load_if_changed("s1", 0),
        lambda: store.apply([make_diff("s1", {"k": b"w"})]),
    ]


@contextlib.contextmanager
def _a_script_keeps_redis_busy(client: redis.Redis, port: int) -> t.Iterator[None]:
    """Another client runs an endless Lua loop until ``SCRIPT KILL``; yields
    once Redis answers ``BUSY``."""
    ended: list[BaseException] = []

    def loop() -> None:
        busy = redis.Redis(port=port)
        try:
            busy.eval("while true do end", 0)
        except redis.RedisError as exc:
            ended.append(exc)
        finally:
            busy.close()

    script = threading.Thread(target=loop, daemon=True)
    script.start()
    try:
        _wait_for_busy(client)
        yield
    finally:
        with contextlib.suppress(redis.ResponseError):  # NOTBUSY: never got busy; that failure shows
            client.script_kill()
        script.join(10)
    assert ended, "the script did not end"
    assert "killed" in str(ended[0]).lower()


def _wait_for_busy(client: redis.Redis) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
        except redis.ResponseError as exc:
            if str(exc).startswith("BUSY"):
                return
            raise
        assert time.monotonic() < deadline, "Redis never got busy"
        time.sleep(0.01)
