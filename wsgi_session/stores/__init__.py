"""Session backends.

:class:`MemoryStore` is built in. :class:`RedisStore` and
:class:`SQLAlchemyStore` need the ``redis`` and ``sqlalchemy`` extras and are
imported on first use, so the package works without them.
"""

from __future__ import annotations

import typing as t

from .base import Store
from .memory import MemoryStore

if t.TYPE_CHECKING:
    from .redis import RedisStore
    from .sqlalchemy import SQLAlchemyStore

__all__ = ["MemoryStore", "RedisStore", "SQLAlchemyStore", "Store"]


def __getattr__(name: str) -> t.Any:
    if name == "RedisStore":
        from .redis import RedisStore

        return RedisStore
    if name == "SQLAlchemyStore":
        from .sqlalchemy import SQLAlchemyStore

        return SQLAlchemyStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
