"""wsgi_session: server-side sessions for WSGI applications.

.. code-block:: python

    from wsgi_session import SessionMiddleware, SessionConfig

    app.wsgi_app = SessionMiddleware(app.wsgi_app, SessionConfig(secret_keys=[secret]))

Stores live in :mod:`wsgi_session.stores`.
"""

from __future__ import annotations

from .config import SessionConfig
from .exceptions import (
    BadData,
    BadSignature,
    BadStoredData,
    BadToken,
    MalformedToken,
    PartlyApplied,
    SessionError,
    SessionStateError,
    StoreError,
    StoreUnavailable,
    UnserializableValue,
)
from .middleware import SessionMiddleware
from .serialization import Serializer, TaggedJSONSerializer
from .session import Session

__version__ = "0.1.0"

__all__ = [
    "BadData",
    "BadSignature",
    "BadStoredData",
    "BadToken",
    "MalformedToken",
    "PartlyApplied",
    "Serializer",
    "Session",
    "SessionConfig",
    "SessionError",
    "SessionMiddleware",
    "SessionStateError",
    "StoreError",
    "StoreUnavailable",
    "TaggedJSONSerializer",
    "UnserializableValue",
]
