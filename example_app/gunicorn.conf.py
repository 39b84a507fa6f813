"""gunicorn settings for the example: several workers and threads over Redis or PostgreSQL.

.. code-block:: sh

    export WSGI_SESSION_SECRET="$(python -c 'import secrets; print(secrets.token_urlsafe(48))')"
    export WSGI_SESSION_STORE_URL=redis://127.0.0.1:6379/0
    # or: WSGI_SESSION_STORE_URL=postgresql+psycopg2://postgres@127.0.0.1:5432/test
    gunicorn -c example_app/gunicorn.conf.py          # http://127.0.0.1:8000

Command-line options win over this file (``-b 0.0.0.0:8080``, ``-w 5``...).
Without ``WSGI_SESSION_STORE_URL`` the workers share the SQLite file, which
works but serialises every write: use a server here.
"""

import logging
import os

from wsgi_session.shutdown import worker_exit  # noqa: F401 - the hook that flushes pending writes

wsgi_app = "example_app.app:app"
bind = os.environ.get("EXAMPLE_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("EXAMPLE_WORKERS", "3"))
threads = int(os.environ.get("EXAMPLE_THREADS", "4"))
worker_class = "gthread"
# Build the app once in the master and fork it: the workers share the code and,
# when WSGI_SESSION_SECRET is unset, the one random development secret.
# wsgi_session starts its threads and connections lazily, in the worker.
preload_app = True
graceful_timeout = 10
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s pid=%({x-worker-pid}o)s'


def on_starting(server: object) -> None:
    """Say where the sessions will be, and warn about the development defaults."""
    log = logging.getLogger("gunicorn.error")
    if not os.environ.get("WSGI_SESSION_STORE_URL"):
        log.warning("WSGI_SESSION_STORE_URL is unset: the workers share the SQLite file")
    if not os.environ.get("WSGI_SESSION_SECRET"):
        log.warning("WSGI_SESSION_SECRET is unset: sessions will not survive a restart")
