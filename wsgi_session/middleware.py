"""The WSGI middleware: puts a session in the environ and saves what changed.

Wrap any WSGI application; every request then finds a
:class:`~wsgi_session.session.Session` at ``environ["session"]``. The session
costs nothing until it is used, a visitor who never writes gets no cookie and
no stored row, and a response whose handler used the session says
``Vary: Cookie`` so no shared cache serves one user's page to another.

How a response is finished: the application's ``start_response`` call is held
back until the application has returned (or, for a lazy body, produced its
first chunk). Then the session's changes are committed — before anything
reaches the client — and the held-back headers go out with ``Set-Cookie`` and
``Vary`` added. Changes made while the body streams are committed when the
server closes the body; by then the headers are sent, so such late changes
cannot create, renew or destroy the client's token (see the README).

Unsafe to use: in front of a cache that ignores ``Vary``, or with
``bind_ip_sources`` naming a header that clients can set themselves.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import typing as t

from . import shutdown
from ._mypyc import mypyc_attr
from .exceptions import StoreUnavailable
from .manager import SessionManager
from .outcome import NOTHING
from .session import Session
from .stores.memory import MemoryStore

if t.TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .advanced import Advanced
    from .bloom import BloomStats
    from .config import SessionConfig
    from .flusher import FlushStats
    from .manager import Stats
    from .stores.base import Store

log = logging.getLogger("wsgi_session")

_PASS_THROUGH = (list, tuple)


# Compiled, still a plain class: shutdown holds it weakly, and users subclass it.
@mypyc_attr(native_class=False)
class SessionMiddleware:
    """Server-side sessions for a WSGI application.

    :param app: the WSGI application to wrap.
    :param config: a :class:`~wsgi_session.config.SessionConfig`.
    :param store: where sessions live; default a new
        :class:`~wsgi_session.stores.MemoryStore` sized by the config.
    :param clock: the time source in epoch seconds (tests move it).

    .. code-block:: python

        from wsgi_session import SessionMiddleware, SessionConfig
        app.wsgi_app = SessionMiddleware(app.wsgi_app, SessionConfig(secret_keys=[key]))
        # in a view: request.environ["session"]["count"] = 1

    Call :meth:`close` (or use the middleware as a context manager) at
    shutdown to commit pending writes and stop background threads.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        app: WSGIApplication,
        config: SessionConfig,
        store: Store | None = None,
        *,
        clock: t.Callable[[], float] | None = None,
    ) -> None:
        self.app = app
        self.config = config
        self.store = (
            store
            if store is not None
            else MemoryStore(max_entries=config.cache_max_entries, shards=config.cache_shards)
        )
        self.manager = SessionManager(config, self.store, clock or time.time)
        self._environ_key = config.environ_key
        self._vary = self.manager.transport.vary
        self._retry_after = str(max(1, int(config.retry_after.total_seconds())))
        self._closed = False
        shutdown.register(self)

    @property
    def advanced(self) -> Advanced:
        """Store-level operations (:class:`~wsgi_session.advanced.Advanced`)."""
        return self.manager.advanced

    @property
    def stats(self) -> Stats:
        """Counters of what the middleware did."""
        return self.manager.stats

    @property
    def flush_stats(self) -> FlushStats | None:
        """Counters of the flush machinery (``None`` with an in-process store):
        ``flushes``, ``flushed_diffs``, ``retries``, ``failures``,
        ``pending`` (diffs waiting now), ``lost`` (not saved at shutdown) and
        ``coalesced`` (queued diffs folded into an earlier one of their session)."""
        cached = self.manager.cached
        return None if cached is None else cached.flusher.stats

    def bloom_stats(self) -> BloomStats | None:
        """The bloom filter's size in bytes, element count, estimated
        false-positive rate and store lookups saved (``None`` when off)."""
        keystore = self.manager.keystore
        return None if keystore is None else keystore.stats()

    def counters(self) -> dict[str, int]:
        """Every counter in one flat dict, for metrics exporters."""
        values = self.manager.stats.as_dict()
        flush = self.flush_stats
        if flush is not None:
            values.update(dataclasses.asdict(flush))
        return values

    def close(self) -> None:
        """Stop background threads and release the store. Idempotent."""
        if not self._closed:
            self._closed = True
            self.manager.close()

    def __enter__(self) -> SessionMiddleware:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> t.Iterable[bytes]:
        self.manager.ensure_ready()
        session = Session(self.manager, environ)
        environ[self._environ_key] = session
        exchange = _Exchange(self, session, start_response)
        try:
            body = self.app(environ, exchange.start_response)
        except StoreUnavailable:
            if session._failure is None:
                raise
            return exchange.outage()
        if exchange.status is None:
            return _LazyBody(exchange, body)
        started_early = exchange.server_write is not None  # the app used write()
        complete = type(body) in _PASS_THROUGH
        exchange.final = complete and not started_early
        if not exchange.send_headers():
            _close(body)
            return exchange.outage()
        if complete:
            if started_early:
                exchange.finish_late()
            return body  # nothing can change after this
        return _ClosingBody(exchange, body)

    # -- used by _Exchange ---------------------------------------------------

    def finish(
        self,
        session: Session,
        headers: list[tuple[str, str]],
        late: bool,
        status: str = "",
        final: bool = False,
    ) -> None:
        """Commit the session's changes and add the headers they need.

        A server error (5xx) commits nothing, as Django does: the request
        failed, so its half-done changes are not kept. ``final`` says the
        body is complete (a list), so no second commit can follow.

        :raises StoreUnavailable: when the store cannot take the write.
        """
        manager = self.manager
        if not late and status[:1] == "5" and session._loaded:
            _add_vary(headers, self._vary)
            session._unsaved = True
            manager.stats.bump("discarded_on_error")
            return
        outcome = manager.finisher.finish(session, late)
        if outcome is None:
            return
        if not late:
            _add_vary(headers, self._vary)
        if outcome is NOTHING:
            return
        if session._failure is not None and not manager.fail_open:
            raise session._failure
        record = manager.commit(outcome)
        if session._destroyed:
            session._unsaved = True  # later changes in this request are discarded
        if late:
            return
        if not final:
            session._rebase(record)  # a second commit may follow while the body streams
        transport = manager.transport
        if outcome.send is not None:
            transport.send(headers, outcome.send, outcome.max_age)
        elif outcome.clear:
            transport.clear(headers)

    def outage_response(self, start_response: StartResponse, exc_info: OptExcInfo | None) -> list[bytes]:
        """The fail-closed answer: 503 with ``Retry-After``."""
        body = b"Service Unavailable: the session store cannot be reached. Please retry.\n"
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Retry-After", self._retry_after),
            ("Cache-Control", "no-store"),
        ]
        start_response("503 Service Unavailable", headers, exc_info)
        return [body]


class _Exchange:
    """One request's hold on ``start_response`` (not thread-shared)."""

    __slots__ = (
        "committed",
        "exc_info",
        "final",
        "headers",
        "middleware",
        "server_start",
        "server_write",
        "session",
        "status",
    )  # fmt: skip

    def __init__(self, middleware: SessionMiddleware, session: Session, server_start: StartResponse) -> None:
        self.middleware = middleware
        self.session = session
        self.server_start = server_start
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.exc_info: OptExcInfo | None = None
        self.server_write: t.Callable[[bytes], object] | None = None
        self.committed = False
        self.final = False

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
    ) -> t.Callable[[bytes], object]:
        if exc_info is not None and self.server_write is not None:
            raise exc_info[1].with_traceback(exc_info[2])  # type: ignore[union-attr]
        self.status, self.headers, self.exc_info = status, list(headers), exc_info
        return self.write

    def write(self, data: bytes) -> None:
        """The legacy ``write()`` callable: sends the headers first."""
        if self.server_write is None and not self.send_headers():
            # Nothing was sent yet: the middleware answers 503 once the app lets go.
            failure = StoreUnavailable("session store unavailable")
            self.session._failure = failure
            raise failure
        assert self.server_write is not None
        self.server_write(data)

    def send_headers(self) -> bool:
        """Commit and start the real response; ``False`` on a store outage
        (nothing has been sent, so the caller can answer 503)."""
        if self.server_write is not None:
            return True
        if self.session._loaded:  # a request that never used its session has nothing to do
            try:
                self.middleware.finish(self.session, self.headers, False, self.status or "", self.final)
            except StoreUnavailable:
                log.warning("session store unavailable; answering 503", exc_info=True)
                return False
        self.committed = True
        assert self.status is not None
        self.server_write = self.server_start(self.status, self.headers, self.exc_info)
        return True

    def finish_late(self) -> None:
        """Commit changes made while the body streamed."""
        if not self.committed:
            return
        try:
            self.middleware.finish(self.session, [], late=True)
        except StoreUnavailable:
            log.error("session store unavailable; changes made while streaming were not saved")

    def outage(self) -> list[bytes]:
        return self.middleware.outage_response(self.server_start, None)


class _ClosingBody:
    """The application's body, with a commit of late changes on ``close()``."""

    __slots__ = ("_body", "_exchange")

    def __init__(self, exchange: _Exchange, body: t.Iterable[bytes]) -> None:
        self._exchange = exchange
        self._body = body

    def __iter__(self) -> t.Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            _close(self._body)
        finally:
            if self._exchange.session._loaded:
                self._exchange.finish_late()


class _LazyBody(_ClosingBody):
    """A body whose application calls ``start_response`` on first iteration."""

    __slots__ = ()

    def __iter__(self) -> t.Iterator[bytes]:
        exchange = self._exchange
        iterator = iter(self._body)
        first = next(iterator, None)
        if exchange.status is None:
            raise RuntimeError("the application returned without calling start_response")
        if not exchange.send_headers():
            yield from exchange.outage()
            return
        if first is not None:
            yield first
        yield from iterator


def _close(body: object) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        close()


def _add_vary(headers: list[tuple[str, str]], name: str) -> None:
    """Add ``name`` to the ``Vary`` header (merging, never duplicating)."""
    # Typed loosely: PEP 3333 asks for tuples, but applications also pass lists,
    # which a compiled loop over tuples would refuse.
    entries: list[t.Any] = headers
    for header in entries:  # no enumerate(): most responses have no Vary yet
        key, value = header
        if len(key) == 4 and key.lower() == "vary":
            tokens = {part.strip().lower() for part in value.split(",")}
            if "*" not in tokens and name.lower() not in tokens:
                # The first header equal to this one is this one: the loop stops at the first Vary.
                headers[headers.index(header)] = (key, f"{value}, {name}")
            return
    headers.append(("Vary", name))
