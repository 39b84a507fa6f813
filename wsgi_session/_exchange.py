"""A request's passage through :class:`~wsgi_session.middleware.SessionMiddleware`.

Private to the middleware: what it does on each request
(:class:`RequestPath`), the hold on ``start_response`` until the session's
changes are committed (:class:`Exchange`), the bodies that commit late
changes when the server closes them, and the ``Vary`` header. Kept apart
from the middleware class so that the compiled build compiles it (see
:mod:`wsgi_session._mypyc`) while ``SessionMiddleware`` stays a Python class:
a compiled class's methods accept only that exact class, so no subclass would
work, and the shutdown registry holds the middleware weakly.
"""

from __future__ import annotations

import logging
import typing as t

from .exceptions import StoreUnavailable
from .outcome import NOTHING
from .session import Session

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .manager import SessionManager

log = logging.getLogger("wsgi_session")


class Host(t.Protocol):
    """What an exchange calls on its middleware: the two methods of
    :class:`~wsgi_session.middleware.SessionMiddleware` (whose signatures
    they are) that a subclass may override."""

    def finish(self, *args: t.Any, **kwargs: t.Any) -> None: ...

    def outage_response(self, *args: t.Any, **kwargs: t.Any) -> t.Iterable[bytes]: ...


_PASS_THROUGH = (list, tuple)


class RequestPath:
    """What :class:`~wsgi_session.middleware.SessionMiddleware` does on each
    request: its ``__call__``, ``finish`` and ``outage_response`` delegate
    here. ``host`` is whose ``finish`` and ``outage_response`` an exchange
    calls: the middleware when its class overrides them (the overrides may
    call these through ``super()``), else this path itself.
    """

    def __init__(
        self,
        host: Host | None,
        app: WSGIApplication,
        manager: SessionManager,
        environ_key: str,
        retry_after: str,
    ) -> None:
        self.host: Host = host if host is not None else self
        self.app = app
        self.manager = manager
        self.environ_key = environ_key
        self.vary = manager.transport.vary
        self.retry_after = retry_after

    def serve(self, environ: WSGIEnvironment, start_response: StartResponse) -> t.Iterable[bytes]:
        """One request: the middleware's ``__call__``."""
        self.manager.ensure_ready()
        session = Session(self.manager, environ)
        environ[self.environ_key] = session
        exchange = Exchange(self.host, session, start_response)
        try:
            body = self.app(environ, exchange.start_response)
        except StoreUnavailable:
            if session._failure is None:
                raise
            return exchange.outage()
        if exchange.status is None:
            return LazyBody(exchange, body)
        started_early = exchange.server_write is not None  # the app used write()
        complete = type(body) in _PASS_THROUGH
        exchange.final = complete and not started_early
        if not exchange.send_headers():
            close_body(body)
            return exchange.outage()
        if complete:
            if started_early:
                exchange.finish_late()
            return body  # nothing can change after this
        return ClosingBody(exchange, body)

    def finish(
        self,
        session: Session,
        headers: list[tuple[str, str]],
        late: t.Any,
        status: t.Any = "",
        final: t.Any = False,
    ) -> None:
        """What :meth:`SessionMiddleware.finish <wsgi_session.middleware.SessionMiddleware.finish>` does."""
        manager = self.manager
        if not late and status[:1] == "5" and session._loaded:
            add_vary(headers, self.vary)
            session._unsaved = True
            manager.stats.bump("discarded_on_error")
            return
        outcome = manager.finisher.finish(session, late)
        if outcome is None:
            return
        if not late:
            add_vary(headers, self.vary)
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

    def outage_response(self, start_response: StartResponse, exc_info: t.Any) -> list[bytes]:
        """The fail-closed answer: 503 with ``Retry-After``."""
        body = b"Service Unavailable: the session store cannot be reached. Please retry.\n"
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Retry-After", self.retry_after),
            ("Cache-Control", "no-store"),
        ]
        start_response("503 Service Unavailable", headers, exc_info)
        return [body]


class Exchange:
    """One request's hold on ``start_response`` (not thread-shared).

    What the application passes in (status, headers, ``exc_info``, body
    chunks) is typed loosely and handed on as it came: compiled, a stricter
    annotation would be enforced, and refuse what servers accept (headers as
    a tuple, a ``bytearray`` chunk), which the pure build passes through.
    """

    __slots__ = (
        "committed",
        "exc_info",
        "final",
        "headers",
        "host",
        "server_start",
        "server_write",
        "session",
        "status",
    )  # fmt: skip

    def __init__(self, host: Host, session: Session, server_start: StartResponse) -> None:
        self.host = host
        self.session = session
        self.server_start = server_start
        self.status: t.Any = None
        self.headers: list[t.Any] = []
        self.exc_info: t.Any = None
        self.server_write: t.Callable[[t.Any], object] | None = None
        self.committed = False
        self.final = False

    def start_response(
        self, status: t.Any, headers: t.Iterable[t.Any], exc_info: t.Any = None
    ) -> t.Callable[[t.Any], None]:
        if exc_info is not None and self.server_write is not None:
            raise exc_info[1].with_traceback(exc_info[2])
        self.status, self.headers, self.exc_info = status, list(headers), exc_info
        return self.write

    def write(self, data: t.Any) -> None:
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
                self.host.finish(self.session, self.headers, False, self.status or "", self.final)
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
            self.host.finish(self.session, [], late=True)
        except StoreUnavailable:
            log.error("session store unavailable; changes made while streaming were not saved")

    def outage(self) -> t.Iterable[bytes]:
        return self.host.outage_response(self.server_start, None)


class ClosingBody:
    """The application's body, with a commit of late changes on ``close()``."""

    __slots__ = ("_body", "_exchange")

    def __init__(self, exchange: Exchange, body: t.Iterable[t.Any]) -> None:
        self._exchange = exchange
        self._body = body

    def __iter__(self) -> t.Iterator[t.Any]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close_body(self._body)
        finally:
            if self._exchange.session._loaded:
                self._exchange.finish_late()


class LazyBody(ClosingBody):
    """A body whose application calls ``start_response`` on first iteration."""

    __slots__ = ()

    def __iter__(self) -> t.Iterator[t.Any]:
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


def close_body(body: object) -> None:
    """Close a WSGI body that has a ``close()`` (PEP 3333 asks the server to)."""
    close = getattr(body, "close", None)
    if close is not None:
        close()


def add_vary(headers: list[tuple[str, str]], name: str) -> None:
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
