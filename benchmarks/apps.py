"""The tiny applications every subject runs: one plain WSGI app, one Flask app.

Both answer the same four paths, so a workload is just a path:

``/plain``
    never touches the session (the bare baseline, and the pass-through cost);
``/read``
    reads the counter and the 1 KB string; a visitor without a session gets
    one (``n = 0`` and the string), so a returning visitor's request is
    read-only;
``/read20k``
    the same with a 20 KB string;
``/inc``
    ``n += 1`` (adding the 1 KB string to a session that lacks it), so a new
    visitor's first request creates the standard session.

A session created by ``/read`` or ``/inc`` also gets a random 8-character
``tag``, so a session that is lost and re-created is told apart from the
original. Every answer is ``text/plain``: ``ok`` for ``/plain``, else
``n=<counter>;tag=<tag>``, which the load test's Lua script checks on every
response. The strings are random letters (fixed seed), so a compressing
cookie serializer gains nothing.
"""

from __future__ import annotations

import random
import secrets
import string
import typing as t

from .settings import SECRET

if t.TYPE_CHECKING:
    from collections.abc import MutableMapping

    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

#: Returns the request's session (how each library exposes it).
GetSession = t.Callable[["WSGIEnvironment"], "MutableMapping[str, t.Any]"]
#: Called after a write, for libraries that need an explicit save (Beaker).
Save = t.Callable[["MutableMapping[str, t.Any]"], None]

PATHS = ("/plain", "/read", "/read20k", "/inc")
#: The headers of the answer to ``/plain`` (the round-trip references send them too).
PLAIN_HEADERS = (("Content-Type", "text/plain"), ("Content-Length", "2"))


def make_blob(size: int, seed: int = 4) -> str:
    """``size`` pseudo-random ASCII letters and digits."""
    alphabet = string.ascii_letters + string.digits
    return "".join(random.Random(seed).choices(alphabet, k=size))


BLOB_1K = make_blob(1024)
BLOB_20K = make_blob(20 * 1024)
_BLOBS = {"/read": BLOB_1K, "/read20k": BLOB_20K, "/inc": BLOB_1K}


def session_view(path: str, session: MutableMapping[str, t.Any], save: Save | None) -> bytes:
    """What ``/read``, ``/read20k`` and ``/inc`` do with a session; the body."""
    if path == "/inc":
        count = session.get("n", 0) + 1
        session["n"] = count
        if "blob" not in session:  # a new visitor
            session["blob"] = _BLOBS[path]
            session["tag"] = secrets.token_hex(4)
    else:
        count = session.get("n")
        blob = session.get("blob")
        if count is None or blob is None:  # the priming request
            count = session["n"] = 0
            session["blob"] = _BLOBS[path]
            session["tag"] = secrets.token_hex(4)
        elif len(blob) < 1024:
            raise RuntimeError("the session lost its string")
        else:
            return b"n=%d;tag=%s" % (count, session["tag"].encode())
    if save is not None:
        save(session)
    return b"n=%d;tag=%s" % (count, session["tag"].encode())


def drained(body: t.Iterable[bytes]) -> bytes:
    """A WSGI response ``body`` joined, then closed as a server closes it
    (where a session middleware may finish its work)."""
    try:
        return b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def parse_body(body: bytes) -> tuple[int, str]:
    """The counter and the session's tag from a ``/read`` or ``/inc`` body."""
    count, _, tag = body.partition(b";tag=")
    if not count.startswith(b"n="):
        raise ValueError(f"not a counter: {body[:40]!r}")
    return int(count[2:]), tag.decode()


def wsgi_app(get_session: GetSession | None, save: Save | None = None) -> WSGIApplication:
    """The plain WSGI app; ``get_session=None`` serves ``/plain`` only."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/plain":
            start_response("200 OK", list(PLAIN_HEADERS))
            return [b"ok"]
        if get_session is None or path not in _BLOBS:
            start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
            return []
        body = session_view(path, get_session(environ), save)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def flask_app(get_session: t.Callable[[], MutableMapping[str, t.Any]] | None) -> t.Any:
    """The Flask app (a :class:`flask.Flask`), its views reading the session
    through ``get_session()``; ``None`` serves ``/plain`` only. Configure
    the session library on the returned app."""
    import flask

    app = flask.Flask("benchmark")
    app.config["SECRET_KEY"] = SECRET

    @app.get("/plain")
    def plain() -> tuple[bytes, int, dict[str, str]]:
        return b"ok", 200, {"Content-Type": "text/plain"}

    if get_session is not None:

        def view() -> tuple[bytes, int, dict[str, str]]:
            body = session_view(flask.request.path, get_session(), None)
            return body, 200, {"Content-Type": "text/plain"}

        for path in _BLOBS:
            app.add_url_rule(path, endpoint=path, view_func=view)
    return app
