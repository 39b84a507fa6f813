"""A small Flask application that shows :mod:`wsgi_session` at work.

Run it with ``python -m example_app`` (see ``example_app/README.md``), or
under gunicorn as ``example_app.app:app``. :func:`~example_app.app.create_app`
builds a fresh application.
"""

from __future__ import annotations

from .app import create_app, make_store

__all__ = ["create_app", "make_store"]
