"""A small Flask shop that shows :mod:`wsgi_session` at work.

Run it with ``python -m example_app`` (see ``example_app/README.md``), or
under gunicorn with ``gunicorn -c example_app/gunicorn.conf.py``.
:func:`~example_app.app.create_app` builds a fresh application.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
