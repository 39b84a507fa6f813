"""What is measured: a :class:`Subject` builds a ready-to-call :class:`Target`.

A subject is one session implementation (or a baseline) around the apps of
:mod:`benchmarks.apps`, built from a :class:`~benchmarks.settings.Namespace`
so that everything it stores is named after the run. The same subjects run
in process (:mod:`benchmarks.inprocess`) and in gunicorn workers
(:mod:`benchmarks.serve`). This module holds the types, wsgi_session's
subjects and the registry; the other libraries' subjects are in
:mod:`benchmarks.peers`, the round-trip references in
:mod:`benchmarks.references`.
"""

from __future__ import annotations

import dataclasses
import time
import typing as t

from .apps import flask_app, wsgi_app
from .cleanup import delete_redis_keys, drop_postgres_tables, remove_sqlite_files
from .counting import Counters, counting_connect_args, counting_redis
from .settings import REDIS_URL, SECRET, Namespace

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from wsgi_session.stores.base import Store

Role = t.Literal["baseline", "session", "rtt"]


class Unavailable(Exception):
    """This subject cannot run here (a package, service or feature is missing)."""


def _nothing() -> None:
    return None


@dataclasses.dataclass
class Target:
    """A subject, built and ready to be called.

    :param app: the outermost WSGI callable.
    :param clear: forget every stored session (between runs of workloads
        that create sessions, so the store does not grow).
    :param close: release threads, connections and pools.
    :param counters: the store round trips it makes.
    :param settle: wait until writes that are still pending in the
        background (if any) have reached the store, and an invalidation
        listener (``coherence="notify"``) has subscribed.
    """

    app: WSGIApplication
    clear: t.Callable[[], None] = _nothing
    close: t.Callable[[], None] = _nothing
    counters: Counters = dataclasses.field(default_factory=Counters)
    settle: t.Callable[[], None] = _nothing


@dataclasses.dataclass(frozen=True)
class Subject:
    """One session implementation (or baseline) under test.

    :param name: shown in tables, e.g. ``"wsgi_session[redis]"``.
    :param slug: its identifier in key prefixes, table names, file names and
        the ``BENCH_SUBJECT`` variable of gunicorn workers.
    :param build: makes a :class:`Target` in the current process.
    :param role: ``"baseline"`` (no session: the limit), ``"session"``, or
        ``"rtt"`` (one plain store round trip, the unit of the RTT columns).
    :param family: ``"wsgi"`` (plain WSGI app) or ``"flask"``.
    :param store: ``"memory"``, ``"redis"``, ``"postgresql"``, ``"sqlite"``,
        ``"cookie"`` or ``""``; picks the RTT unit.
    :param unit: a round-trip reference (``role="rtt"``) that is its store's
        RTT unit; the others are compared under gunicorn only.
    :param ours: a wsgi_session subject (held to its "no Set-Cookie noise" promise).
    :param shared: its sessions are visible to every worker process (a
        per-process memory store's are not: its counters cannot be exact
        with 2 workers).
    :param lag: seconds a write may take to reach the store after the
        response (background writes).
    :param gunicorn: also run it under gunicorn.
    :param cleanup: remove everything it stored under a namespace (run in
        the parent process, also after a crash of the workers).
    """

    name: str
    slug: str
    build: t.Callable[[Namespace], Target]
    role: Role = "session"
    family: str = "wsgi"
    store: str = ""
    ours: bool = False
    unit: bool = True
    shared: bool = True
    lag: float = 0.0
    gunicorn: bool = False
    cleanup: t.Callable[[Namespace], object] = lambda namespace: None


# -- wsgi_session ------------------------------------------------------------------------------


def _make_store(
    store: str, namespace: Namespace, slug: str, counters: Counters
) -> tuple[Store | None, t.Any]:
    """Our store of kind ``store`` and the client or engine to close after it."""
    if store == "memory":
        return None, None
    if store == "redis":
        from wsgi_session.stores import RedisStore

        client = counting_redis(REDIS_URL, counters.redis)
        return RedisStore(client, prefix=namespace.redis_prefix(slug)), client
    import sqlalchemy as sa

    from wsgi_session.stores import SQLAlchemyStore

    url = namespace.postgres_url if store == "postgresql" else namespace.sqlite_url(slug)
    # The store's own autocommit pool is made with the same connect_args: its statements count too.
    connect_args = counting_connect_args(url, counters.sql_statements)
    if store == "postgresql":
        engine = sa.create_engine(url, pool_size=8, connect_args=connect_args)
    else:
        engine = sa.create_engine(url, connect_args=connect_args)
    return SQLAlchemyStore(engine, table_name=namespace.table(slug)), engine


def _cleanup_store(store: str, slug: str) -> t.Callable[[Namespace], None]:
    def cleanup(namespace: Namespace) -> None:
        if store == "redis":
            delete_redis_keys(namespace.redis_prefix(slug) + "*")
        elif store == "postgresql":
            drop_postgres_tables(namespace.table(slug))
        elif store == "sqlite":
            remove_sqlite_files(namespace.table(slug))

    return cleanup


def _relaxations() -> dict[str, dict[str, str]]:
    """Each mode of the installed wsgi_session, by suffix: the default first,
    then each relaxed mode the config offers, then all relaxations together."""
    from wsgi_session import config

    modes: dict[str, dict[str, str]] = {"": {}}
    relaxed: dict[str, str] = {}
    if "background" in getattr(config, "WRITE_MODES", ()):
        modes["background"] = {"write_mode": "background"}
        relaxed["write_mode"] = "background"
    if "notify" in getattr(config, "COHERENCE_MODES", ()):
        modes["notify"] = {"coherence": "notify"}
        relaxed["coherence"] = "notify"
    if len(relaxed) > 1:
        modes["background+notify"] = relaxed
    return modes


def ours(store: str, mode: str = "", *, flask: bool = False, gunicorn: bool = False) -> Subject:
    """A wsgi_session subject: ``store`` in ``mode`` (a key of :func:`_relaxations`)."""
    options = _relaxations()[mode]
    label = store if not mode else f"{store}, {mode}"
    name = f"flask + wsgi_session[{label}]" if flask else f"wsgi_session[{label}]"
    short = {"memory": "mem", "postgresql": "pg"}.get(store, store)
    modes = mode.replace("background", "bg").replace("notify", "nt").replace("+", "-")
    slug = "-".join(filter(None, ["flask" if flask else "", "ws", short, modes]))

    def build(namespace: Namespace) -> Target:
        from wsgi_session import SessionConfig, SessionMiddleware

        counters = Counters()
        store_object, resource = _make_store(store, namespace, slug, counters)
        if options.get("coherence") == "notify" and not getattr(
            store_object, "supports_notifications", False
        ):
            raise Unavailable(f"{type(store_object).__name__} cannot announce changes (coherence='notify')")
        config = SessionConfig(secret_keys=[SECRET], **options)  # type: ignore[arg-type]
        if flask:
            import flask as flask_module

            from wsgi_session.contrib.flask import WsgiSession

            # The way a Flask app uses it: the extension, views on flask.session
            # (as for Flask-Session), so Flask's own cookie session is not opened.
            app = flask_app(lambda: flask_module.session)
            middleware = WsgiSession(config=config, store=store_object).init_app(app)
            outer: WSGIApplication = app
        else:
            middleware = SessionMiddleware(wsgi_app(lambda environ: environ["session"]), config, store_object)
            outer = middleware

        def close() -> None:
            middleware.close()
            if hasattr(resource, "dispose"):
                resource.dispose()
            elif resource is not None:
                resource.close()

        def settle() -> None:
            _wait_until_steady(middleware)

        return Target(
            outer, clear=middleware.advanced.clear_store, close=close, counters=counters, settle=settle
        )

    return Subject(
        name,
        slug,
        build,
        family="flask" if flask else "wsgi",
        store=store,
        ours=True,
        shared=store != "memory",
        lag=0.3 if "background" in mode else 0.0,
        gunicorn=gunicorn,
        cleanup=_cleanup_store(store, slug),
    )


def _wait_until_steady(middleware: t.Any, timeout: float = 2.0) -> None:
    """Wait (at most ``timeout`` seconds) until ``middleware`` is as the
    timed runs find it: no write pending for its flush thread, and its
    invalidation listener (``coherence="notify"``) subscribed, so that its
    reads are served from the cache rather than validated."""
    cached = middleware.manager.cached
    listener = cached.listener if cached is not None else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = middleware.flush_stats
        if (stats is None or not stats.pending) and (listener is None or listener.healthy):
            return
        time.sleep(0.005)


def bare(namespace: Namespace) -> Target:
    """The plain app, no middleware at all."""
    return Target(wsgi_app(None))


# -- the registry ------------------------------------------------------------------------------


def all_subjects() -> list[Subject]:
    """Every subject, in the order of the tables."""
    from . import peers, references

    relaxed = [mode for mode in _relaxations() if mode]
    subjects = [
        Subject("bare", "bare", bare, role="baseline", gunicorn=True),
        ours("memory", gunicorn=True),
    ]
    for store in ("redis", "postgresql", "sqlite"):
        for mode in ["", *relaxed]:
            if store == "sqlite" and "notify" in mode:
                continue  # SQLite has no way to announce changes
            on_gunicorn = (store == "redis" and mode in ("", "background", "notify")) or (
                store == "postgresql" and mode == ""
            )
            subjects.append(ours(store, mode, gunicorn=on_gunicorn))
    subjects += peers.wsgi_peers()
    subjects += [
        peers.flask_alone(),
        peers.flask_cookie(),
        ours("memory", flask=True),
        ours("redis", flask=True, gunicorn=True),
        ours("postgresql", flask=True, gunicorn=True),
        ours("redis", "background", flask=True, gunicorn=True),
        ours("postgresql", "background", flask=True, gunicorn=True),
    ]
    subjects += peers.flask_peers()
    subjects += references.round_trip_references()
    return subjects


def by_slug(slug: str) -> Subject:
    """The subject called ``slug``."""
    for subject in all_subjects():
        if subject.slug == slug:
            return subject
    raise KeyError(slug)
