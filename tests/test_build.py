"""Which build the suite is testing: pure Python, or compiled by mypyc.

``tests/compiled.sh`` runs the whole suite again on the compiled build and
says so with ``WSGI_SESSION_EXPECT_COMPILED=1``: if the compiled modules were
not the ones imported, that run would test pure Python twice and pass.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import pickle
import types
import typing as t
import weakref

import pytest
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
    the records write their own, which it compiles."""
    for cls in (SessionRecord, SessionDiff):
        assert isinstance(cls.__init__, types.FunctionType) is not is_compiled()


_RECORD = SessionRecord("r" * 16, {"v": b"1"}, 1.0, 2.0)
#: A distinct value of the right type for each field, in declaration order.
_SAMPLES = {
    SessionRecord: [["i" * 16, {"v": b"1"}, 1.5, 2.0, 3.0, True, 7, {"m": 1}]],
    # Two sets, so that every pair of the four flags differs in one of them.
    SessionDiff: [
        [
            *("i" * 16, {"s": b"1"}, frozenset({"d"}), flags[0], 2.0, 3.0, flags[1], 4.0),
            *(flags[2], {"f": b"2"}, flags[3], _RECORD, 5),
        ]
        for flags in ((True, False, True, False), (True, True, False, False))
    ],
}


@pytest.mark.parametrize("cls", [SessionRecord, SessionDiff])
def test_a_record_takes_its_fields_in_order_with_their_declared_defaults(cls: type) -> None:
    """The written ``__init__`` matches the declared fields: by position, by
    keyword (as ``dataclasses.replace`` passes them) and in its defaults."""
    fields = dataclasses.fields(cls)
    for values in _SAMPLES[cls]:
        by_name = {field.name: value for field, value in zip(fields, values, strict=True)}
        for built in (cls(*values), cls(**by_name)):
            got = {name: getattr(built, name) for name in by_name}
            assert {name: (type(value), value) for name, value in got.items()} == {
                name: (type(value), value) for name, value in by_name.items()
            }
    values = _SAMPLES[cls][0]
    required = [value for field, value in zip(fields, values, strict=True) if _no_default(field)]
    first, second = cls(*required), cls(*required)
    for field in fields[len(required) :]:
        if field.default is not dataclasses.MISSING:
            assert getattr(first, field.name) == field.default, field.name
        else:  # a default factory: a fresh value for each record
            assert getattr(first, field.name) == field.default_factory()
            assert getattr(first, field.name) is not getattr(second, field.name)


def _no_default(field: dataclasses.Field[t.Any]) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def test_records_survive_copy_and_pickle() -> None:
    """A compiled class with its own ``__init__`` cannot be made bare, which
    is how copy and pickle rebuild objects unless told otherwise."""
    record = SessionRecord("s" * 16, {"n": b"1"}, 1.0, 2.0, 3.0, True, 7, {"n": 1})
    diff = SessionDiff(
        "s" * 16, {"n": b"2"}, frozenset({"x"}), True, 2.0, None, True, 1.0, True, None, True, record, 3
    )
    for original in (record, diff):
        for clone in (copy.copy(original), copy.deepcopy(original), pickle.loads(pickle.dumps(original))):
            assert type(clone) is type(original)
            assert clone == original  # every field but the memo and the base (not compared)
    for clone in (copy.copy(diff), copy.deepcopy(diff), pickle.loads(pickle.dumps(diff))):
        assert clone.base == record
    # The memo, a cache of decoded values, starts empty in a copy.
    assert copy.copy(record).memo == {}
    assert copy.copy(record).memo is not record.memo
