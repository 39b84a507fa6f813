"""Background mode folds a busy session's queued writes into one
(wsgi_session.record.coalesce), on every persistent store: the store ends
with exactly what one write per request would have left, the same version
included, and the process's cached copy agrees with it."""

from __future__ import annotations

import typing as t

import pytest

from wsgi_session import SessionConfig, SessionMiddleware

from .conftest import PERSISTENT_BACKENDS

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from .conftest import Backend

REQUESTS = 200


def counter(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    session = environ["session"]
    session["n"] = session.get("n", 0) + 1
    session[f"k{session['n'] % 3}"] = session["n"]  # a few keys, changed in turn
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d" % session["n"]]


def call(app: SessionMiddleware, cookie: str) -> tuple[bytes, str]:
    environ: dict[str, t.Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.url_scheme": "http"}
    if cookie:
        environ["HTTP_COOKIE"] = cookie
    sent: list[tuple[str, str]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: t.Any = None) -> t.Any:
        sent.extend(headers)

    body = b"".join(app(environ, start_response))
    for name, value in sent:
        if name == "Set-Cookie":
            cookie = value.split(";", 1)[0]
    return body, cookie


@pytest.mark.parametrize("backend", PERSISTENT_BACKENDS, indirect=True)
def test_a_busy_sessions_queued_writes_become_one(backend: Backend) -> None:
    config = SessionConfig(secret_keys=["coalescing-" + "k" * 32], write_mode="background")
    app = SessionMiddleware(counter, config, backend.store)
    try:
        cookie = ""
        for n in range(1, REQUESTS + 1):
            body, cookie = call(app, cookie)
            assert body == b"%d" % n  # the writing process reads its own writes
        session_id = cookie.split("=", 1)[1].split(".", 1)[0]
        cached = app.manager.cached
        assert cached is not None
        stats = app.flush_stats
        assert stats is not None
        # The flush thread stops (after its batch in flight, as at shutdown);
        # flushes never run side by side, or two batches of one session could
        # land out of order.
        cached.flusher._task.stop()
        assert cached.flusher.flush_pending(force=True)
        # The first request created the session at once; the others were
        # queued, and a flush every 50 ms took many of them at a time.
        assert stats.flushed_diffs == REQUESTS
        assert stats.coalesced >= (REQUESTS - 1) // 2
        stored = backend.store.load(session_id)
        assert stored is not None
        assert stored.version == REQUESTS  # one version per request, as if written one by one
        assert backend.raw.values(session_id) == {
            "n": b"200",
            "k0": b"198",
            "k1": b"199",
            "k2": b"200",
        }
        entry = cached.cache.peek(session_id)
        assert entry is not None
        assert entry.record == stored  # the cached copy took the store's, version and all
    finally:
        app.close()
