"""Real gunicorn workers (-w 3 --threads 4 --preload) sharing a real store.

Each client opens a new connection per request, so its requests land on
different worker processes; every counter must still be exact (read-your-writes
across workers), and different keys of one session written from several
workers at once must all survive (key-level merge).
"""

from __future__ import annotations

import json
import threading
import typing as t

import pytest

from .conftest import Client, Server, SharedBackend, start_gunicorn, stop

pytestmark = [pytest.mark.gunicorn, pytest.mark.slow]

CLIENTS = 6
REQUESTS = 40


@pytest.fixture
def server(shared: SharedBackend) -> t.Iterator[Server]:
    running = start_gunicorn(shared.url, shared.namespace)
    yield running
    output = stop(running)
    assert "Traceback" not in output, output


def test_counters_exact_across_workers(server: Server) -> None:
    clients = [Client(server.port) for _ in range(CLIENTS)]
    errors: list[str] = []

    def run(client: Client) -> None:
        for expected in range(1, REQUESTS + 1):
            status, body = client.get("/inc?key=n")
            if status != 200 or json.loads(body)["n"] != expected:
                errors.append(f"status {status}, body {body!r}, expected n={expected}")
                return

    threads = [threading.Thread(target=run, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for client in clients:
        status, body = client.get("/get")
        assert status == 200
        assert json.loads(body) == {"n": REQUESTS}
    served_by = set().union(*(client.workers for client in clients))
    assert len(served_by) >= 2, f"requests were not spread over workers: {served_by}"


def test_different_keys_from_several_workers_all_survive(server: Server) -> None:
    first = Client(server.port)
    assert first.get("/inc?key=seed")[0] == 200
    keys = [f"k{i}" for i in range(6)]
    errors: list[str] = []

    def run(key: str) -> None:
        client = Client(server.port)
        client.cookie = first.cookie
        for _ in range(REQUESTS // 2):
            status, _ = client.get(f"/inc?key={key}")
            if status != 200:
                errors.append(f"{key}: status {status}")

    threads = [threading.Thread(target=run, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    status, body = first.get("/get")
    assert status == 200
    data = json.loads(body)
    assert data == {"seed": 1, **dict.fromkeys(keys, REQUESTS // 2)}
