"""The lock-sharded cache (wsgi_session/cache.py) under threads: reads that
take no lock while writers put, pop, evict and sweep, and which reads still
take the shard lock."""

from __future__ import annotations

import sys
import threading
import time
import typing as t

import pytest
from core_testkit import run_in_threads

from wsgi_session import cache
from wsgi_session.cache import ShardedCache

KEYS = [f"session-{n:04d}" for n in range(64)]


@pytest.fixture
def fast_switching() -> t.Iterator[None]:
    """Let the GIL change hands every microsecond, between almost any two
    bytecodes, so that the races below happen in every run."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def hammer(workers: list[t.Callable[[], None]], seconds: float = 1.0) -> None:
    """Run each worker in a loop on its own thread for ``seconds``; re-raise
    the first error any of them hit (which stops them all)."""
    stop = threading.Event()

    def looping(work: t.Callable[[], None]) -> t.Callable[[], None]:
        def loop() -> None:
            try:
                while not stop.is_set():
                    work()
            finally:
                stop.set()

        return loop

    timer = threading.Timer(seconds, stop.set)
    timer.start()
    try:
        run_in_threads([looping(work) for work in workers])
    finally:
        timer.cancel()


@pytest.mark.usefixtures("fast_switching")
def test_lock_free_reads_meet_puts_pops_evictions_and_sweeps() -> None:
    """Readers see either nothing or a value put for their key, never an
    error, while writers replace and remove entries, a small bound evicts
    the least recently used, and a sweep runs Python code over each shard."""
    store: ShardedCache[tuple[str, int]] = ShardedCache(shards=2, max_entries=48)
    assert store._lock_free_reads
    seen: list[int] = [0, 0]  # reads that found a value, reads that found none
    wrong: list[tuple[str, object]] = []
    counter = iter(range(10**9))

    def read() -> None:
        for key in KEYS:
            value = store.get(key)
            if value is None:
                seen[1] += 1
            elif value[0] != key:
                wrong.append((key, value))
            else:
                seen[0] += 1

    def write() -> None:
        for key in KEYS:
            store.put(key, (key, next(counter)))

    def merge() -> None:
        for key in KEYS[::3]:
            store.update(key, lambda current, k: (k, -1) if current is None else current, key)

    def remove() -> None:
        for key in KEYS[::5]:
            store.pop(key)

    def matches(value: tuple[str, int]) -> bool:
        time.sleep(0)  # hand the GIL over mid-walk, every time
        return value[1] % 7 == 0

    def sweep() -> None:
        store.remove_where(matches, limit=10)

    hammer([read, read, write, merge, remove, sweep])
    assert wrong == []
    assert seen[0] > 1000  # both outcomes happened, many times
    assert seen[1] > 1000
    assert len(store) <= 48
    left = [store.peek(key) for key in KEYS]
    assert all(value is None or value[0] == key for key, value in zip(KEYS, left, strict=True))


def reads_through_a_held_lock(store: ShardedCache[str], key: str, wait: float) -> bool:
    """Whether ``store.get(key)`` answers within ``wait`` seconds while
    another thread holds the key's shard lock. No timing guess either way: a
    read that takes no lock answers as soon as it runs (give it long), and
    one that takes the lock cannot answer until the lock is released (a
    short wait proves it as well as a long one); after the release it must."""
    answered = threading.Event()
    shard = store._shards[hash(key) & store._mask]

    def read() -> None:
        store.get(key)
        answered.set()

    reader = threading.Thread(target=read, daemon=True)
    with shard.lock:
        reader.start()
        through = answered.wait(wait)
    assert answered.wait(10)  # a locking read goes on once the lock is free
    reader.join(10)
    return through


def test_a_read_takes_the_lock_only_with_an_idle_bound() -> None:
    plain: ShardedCache[str] = ShardedCache(shards=2)
    plain.put("a", "1")
    assert reads_through_a_held_lock(plain, "a", wait=10)
    idle: ShardedCache[str] = ShardedCache(shards=2, idle_seconds=60)
    idle.put("a", "1")
    assert not reads_through_a_held_lock(idle, "a", wait=0.2)


def test_without_the_gil_every_read_takes_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A free-threaded CPython running without its GIL makes no single dict
    operation atomic with respect to others: there reads lock (simulated by
    the flag the module reads from ``sys._is_gil_enabled()`` at import)."""
    monkeypatch.setattr(cache, "_GIL_ENABLED", False)
    store: ShardedCache[str] = ShardedCache(shards=2)
    store.put("a", "1")
    assert not reads_through_a_held_lock(store, "a", wait=0.2)
