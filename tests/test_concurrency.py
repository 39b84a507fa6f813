"""Threads hammering the middleware directly (webtest is not thread-safe):
exact counters, key-level merge, last-writer-wins without torn values."""

from __future__ import annotations

import functools
import threading

import pytest
from core_testkit import call_wsgi, id_of, run_in_threads, set_cookies, view_app

THREADS = 16
N = 160  # requests per thread (a multiple of THREADS)


def concurrent_view(session, environ):
    path = environ["PATH_INFO"].strip("/").split("/")
    if path[0] == "init":
        session["init"] = "intact"
    elif path[0] == "inc":
        key = path[1]
        session[key] = session.get(key, 0) + 1
    elif path[0] == "shared":
        writer, seq = int(path[1]), int(path[2])
        session["shared"] = {"writer": writer, "seq": seq, "payload": [writer] * 64}
        session["counter"] = session.get("counter", 0) + 1
    elif path[0] == "append":
        session.setdefault(path[1], []).append(int(path[2]))
    return "ok"


@pytest.fixture
def middleware(make_middleware):
    return make_middleware(view_app(concurrent_view))


def run_threads(count, target):
    """Start ``count`` threads at once on ``target(index)``; re-raise the first error."""
    barrier = threading.Barrier(count)

    def run(index):
        barrier.wait(10)
        target(index)

    run_in_threads([functools.partial(run, index) for index in range(count)])


def new_session(middleware):
    result = call_wsgi(middleware, path="/init")
    [(token, _)] = set_cookies(result.headers)
    return token


def request(middleware, path, token):
    result = call_wsgi(middleware, path=path, cookie=f"session={token}")
    assert result.code == 200, result
    assert set_cookies(result.headers) == []  # an existing session never gets a new token here
    return result


def test_each_thread_its_own_session_exact_counters(middleware):
    tokens = [new_session(middleware) for _ in range(THREADS)]

    def work(index):
        for _ in range(N):
            request(middleware, "/inc/count", tokens[index])

    run_threads(THREADS, work)
    for token in tokens:
        assert middleware.advanced.load(id_of(token)) == {"init": "intact", "count": N}
    assert middleware.store.count() == THREADS


def test_threads_spread_over_sixteen_sessions_exact_counters(middleware):
    tokens = [new_session(middleware) for _ in range(THREADS)]

    def work(index):
        for j in range(N):
            request(middleware, f"/inc/t{index}", tokens[(index + j) % THREADS])

    run_threads(THREADS, work)
    per_session = N // THREADS
    for token in tokens:
        data = middleware.advanced.load(id_of(token))
        assert data == {"init": "intact", **{f"t{i}": per_session for i in range(THREADS)}}
        assert middleware.store.load(id_of(token)).version == 1 + N


def test_eight_threads_one_session_own_keys_all_survive(middleware):
    token = new_session(middleware)
    threads = 8

    def work(index):
        for _ in range(N):
            request(middleware, f"/inc/k{index}", token)

    run_threads(threads, work)
    data = middleware.advanced.load(id_of(token))
    assert data == {"init": "intact", **{f"k{i}": N for i in range(threads)}}
    record = middleware.store.load(id_of(token))
    assert record.version == 1 + threads * N  # every request's write was applied


def test_eight_threads_one_session_appending_to_own_lists(middleware):
    token = new_session(middleware)
    threads = 8

    def work(index):
        for j in range(N // 2):
            request(middleware, f"/append/list{index}/{j}", token)

    run_threads(threads, work)
    data = middleware.advanced.load(id_of(token))
    for i in range(threads):
        assert data[f"list{i}"] == list(range(N // 2))


def test_same_key_last_writer_wins_without_corruption(middleware):
    token = new_session(middleware)
    threads = 8

    def work(index):
        for j in range(N):
            request(middleware, f"/shared/{index}/{j}", token)

    run_threads(threads, work)
    data = middleware.advanced.load(id_of(token))
    shared = data["shared"]
    writer = shared["writer"]
    assert 0 <= writer < threads
    assert shared["payload"] == [writer] * 64  # not torn between writers
    assert shared["seq"] == N - 1  # a writer's last write is the one that can win last
    assert 1 <= data["counter"] <= threads * N
    assert data["init"] == "intact"
    record = middleware.store.load(id_of(token))
    assert record.version == 1 + threads * N


def test_concurrent_new_sessions_get_distinct_ids(middleware):
    per_thread = 40
    tokens: list[list[str]] = [[] for _ in range(THREADS)]

    def work(index):
        for _ in range(per_thread):
            tokens[index].append(new_session(middleware))

    run_threads(THREADS, work)
    ids = {id_of(token) for batch in tokens for token in batch}
    assert len(ids) == THREADS * per_thread
    assert middleware.store.count() == THREADS * per_thread
    assert middleware.stats.created == THREADS * per_thread


def test_concurrent_readers_see_a_consistent_snapshot(make_middleware):
    def view(session, environ):
        if environ["PATH_INFO"].startswith("/write/"):
            value = int(environ["PATH_INFO"].rsplit("/", 1)[1])
            session.update(a=value, b=value, c=value)
            return "ok"
        snapshot = (session.get("a"), session.get("b"), session.get("c"))
        assert len(set(snapshot)) == 1, snapshot  # never a mix of two writes
        return "ok"

    middleware = make_middleware(view_app(view))
    token = set_cookies(call_wsgi(middleware, path="/write/0").headers)[0][0]

    def work(index):
        for j in range(N):
            if index % 2:
                call_wsgi(middleware, path=f"/write/{index * N + j}", cookie=f"session={token}")
            else:
                assert call_wsgi(middleware, path="/read", cookie=f"session={token}").code == 200

    run_threads(8, work)
