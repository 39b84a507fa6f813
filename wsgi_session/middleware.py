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

The per-request machinery lives in :mod:`wsgi_session._exchange` (compiled in
the compiled build); this class holds the configuration and delegates.
"""

from __future__ import annotations

import dataclasses
import time
import typing as t

from . import shutdown
from ._exchange import RequestPath
from .manager import SessionManager
from .stores.memory import MemoryStore

if t.TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .advanced import Advanced
    from .bloom import BloomStats
    from .config import SessionConfig
    from .flusher import FlushStats
    from .manager import Stats
    from .session import Session
    from .stores.base import Store


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
        self.config = config
        self.store = (
            store
            if store is not None
            else MemoryStore(max_entries=config.cache_max_entries, shards=config.cache_shards)
        )
        self.manager = SessionManager(config, self.store, clock or time.time)
        overrides = _overrides(self)
        self._path = RequestPath(
            self if overrides else None,
            app,
            self.manager,
            config.environ_key,
            str(max(1, int(config.retry_after.total_seconds()))),
        )
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
        return self._path.serve(environ, start_response)

    @property
    def app(self) -> WSGIApplication:
        """The wrapped application (assignable)."""
        return self._path.app

    @app.setter
    def app(self, app: WSGIApplication) -> None:
        path = self.__dict__.get("_path")
        if path is not None:  # else ``__init__`` has yet to run, and sets it
            path.app = app

    # -- called during a request; a subclass may override them (looked up once, when
    # the middleware is built) ----------------------------------------------------------

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
        self._path.finish(session, headers, late, status, final)

    def outage_response(
        self, start_response: StartResponse, exc_info: OptExcInfo | None
    ) -> t.Iterable[bytes]:
        """The fail-closed answer: 503 with ``Retry-After``."""
        return self._path.outage_response(start_response, exc_info)


_BASE_METHODS = {name: getattr(SessionMiddleware, name) for name in ("finish", "outage_response")}


def _overrides(middleware: SessionMiddleware) -> bool:
    """Whether ``middleware`` answers ``finish`` or ``outage_response`` with
    its own (a subclass's, a mixin's, or one set on the instance)."""
    return any(
        name in vars(middleware) or getattr(type(middleware), name) is not base
        for name, base in _BASE_METHODS.items()
    )
