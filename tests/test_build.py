"""Which build the suite is testing: pure Python, or compiled by mypyc.

``tests/compiled.sh`` runs the whole suite again on the compiled build and
says so with ``WSGI_SESSION_EXPECT_COMPILED=1``: if the compiled modules were
not the ones imported, that run would test pure Python twice and pass.
"""

from __future__ import annotations

import os
import typing as t

import wsgi_session
from wsgi_session._mypyc import COMPILED_MODULES, is_compiled
from wsgi_session.record import SessionRecord
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
