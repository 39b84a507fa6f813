"""What the code needs to know of its optional compiled build.

A source install with ``WSGI_SESSION_COMPILE=1`` compiles the modules of the
request path with `mypyc <https://mypyc.readthedocs.io/>`_ (see ``setup.py``
and docs/performance.md); every other install is pure Python, and both behave
the same. Compiled classes are closed to subclasses written in Python unless
they say otherwise: the public ones that users may extend (a store, a
serializer, a transport) carry ``@mypyc_attr(allow_interpreted_subclasses=True)``,
which mypyc reads at build time and the pure-Python build ignores.
:class:`~wsgi_session.middleware.SessionMiddleware` itself is not compiled (a
compiled class's methods accept only that exact class, so no subclass would
work, and the shutdown registry holds it weakly); the per-request machinery it
drives, in ``_exchange``, is.
"""

from __future__ import annotations

import typing as t

if t.TYPE_CHECKING:
    from mypy_extensions import mypyc_attr
else:
    try:
        from mypy_extensions import mypyc_attr
    except ImportError:  # pure Python needs none of it: the decorator does nothing

        def mypyc_attr(*attrs, **named_attrs):
            return lambda cls: cls


#: The modules the compiled build compiles: the request path of the memory
#: store and of the cache in front of the others. ``setup.py`` reads it.
COMPILED_MODULES = (
    "_exchange",
    "session",
    "outcome",
    "record",
    "cache",
    "manager",
    "signing",
    "serialization",
    "transport",
    "stores/memory",
)


def is_compiled() -> bool:
    """Whether this install runs the compiled build (its modules are
    extension modules, not ``.py`` files)."""
    from . import session

    return not (session.__file__ or "").endswith(".py")


__all__ = ["COMPILED_MODULES", "is_compiled", "mypyc_attr"]
