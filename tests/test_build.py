"""Which build the suite is testing: pure Python, or compiled by mypyc.

``tests/compiled.sh`` runs the whole suite again on the compiled build and
says so with ``WSGI_SESSION_EXPECT_COMPILED=1``: if the compiled modules were
not the ones imported, that run would test pure Python twice and pass.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing as t
import weakref

from core_testkit import call_wsgi, counter_view, make_config, set_cookies, view_app

import wsgi_session
from wsgi_session import SessionMiddleware
from wsgi_session._mypyc import COMPILED_MODULES, is_compiled
from wsgi_session.record import SessionDiff, SessionRecord
from wsgi_session.serialization import TaggedJSONSerializer
from wsgi_session.stores import MemoryStore
from wsgi_session.transport import CookieTransport, HeaderTransport


def test_the_build_is_the_expected_one() -> None:
    expected = os.environ.get("WSGI_SESSION_EXPECT_COMPILED") == "1"
    assert is_compiled() is expected
    compiled = [
        name
        for name in COMPILED_MODULES
        if not __import__(f"wsgi_session.{name.replace('/', '.')}", fromlist=["_"]).__file__.endswith(".py")
    ]
    assert compiled == (list(COMPILED_MODULES) if expected else [])
    assert wsgi_session.__file__.endswith(".py")  # the package's root is never compiled


def test_public_classes_of_compiled_modules_can_be_subclassed_in_python(make_client: t.Any) -> None:
    """Compiled classes are closed to Python subclasses unless they allow them:
    the store, serializer and transports users may extend do, and an
    overriding method is the one the compiled middleware path calls."""
    for base in (MemoryStore, TaggedJSONSerializer, CookieTransport, HeaderTransport):
        subclass = type(f"My{base.__name__}", (base,), {})
        assert issubclass(subclass, base)

    class CountingStore(MemoryStore):
        loads = 0

        def load(self, session_id: str) -> SessionRecord | None:
            self.loads += 1
            return super().load(session_id)

    def count(session: t.Any, environ: t.Any) -> str:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    store = CountingStore()
    client, _ = make_client(count, store=store)
    assert [client.get("/").text for _ in range(3)] == ["1", "2", "3"]
    assert store.loads == 2  # the second and third request; the first had no cookie


def test_the_middleware_stays_a_python_class_that_subclasses_extend() -> None:
    """``SessionMiddleware`` is not compiled (a compiled class's methods take
    only that exact class): a subclass's override is the method the compiled
    request machinery calls, and the shutdown registry can hold it weakly."""

    class CountingMiddleware(SessionMiddleware):
        finished = 0

        def finish(self, *args: t.Any, **kwargs: t.Any) -> None:
            self.finished += 1
            super().finish(*args, **kwargs)

    middleware = CountingMiddleware(view_app(counter_view), make_config())
    assert SessionMiddleware.__module__ == "wsgi_session.middleware"
    assert __import__("wsgi_session.middleware", fromlist=["_"]).__file__.endswith(".py")
    assert weakref.ref(middleware)() is middleware
    response = call_wsgi(middleware)
    assert response.body == b"1"
    assert len(set_cookies(response.headers)) == 1
    assert middleware.finished == 1
    middleware.close()


def test_the_records_built_on_every_write_have_compiled_constructors() -> None:
    """A dataclass's generated ``__init__`` is Python made at import time,
    which the compiled build would run interpreted on every construction;
    the records write their own, which it compiles. Either way they build
    alike, by position or by keyword (as ``dataclasses.replace`` does)."""
    for cls in (SessionRecord, SessionDiff):
        assert isinstance(cls.__init__, types.FunctionType) is not is_compiled()
    record = SessionRecord("s" * 16, {"n": b"1"}, 1.0, 2.0)
    assert (record.absolute, record.longterm, record.version, record.memo) == (None, False, 1, {})
    assert SessionRecord("s" * 16, {}, 1.0, 2.0).memo is not record.memo  # a memo of its own
    moved = dataclasses.replace(record, expires=3.0, memo=record.memo)
    assert (moved.id, moved.values, moved.expires, moved.memo is record.memo) == (
        record.id,
        {"n": b"1"},
        3.0,
        True,
    )
    diff = SessionDiff("s" * 16, {"n": b"2"}, frozenset(), False, 2.0, None, False, 1.0)
    assert (diff.create, diff.defaults, diff.local_only, diff.base, diff.span) == (
        False,
        None,
        False,
        None,
        1,
    )
    assert dataclasses.replace(diff, create=True, span=2) == SessionDiff(
        "s" * 16, {"n": b"2"}, frozenset(), False, 2.0, None, False, 1.0, True, None, False, None, 2
    )
