"""gunicorn settings for the multi-process tests."""

from wsgi_session.shutdown import worker_exit  # noqa: F401 - gunicorn reads this hook

workers = 3
threads = 4
preload_app = True
worker_class = "gthread"
graceful_timeout = 10
loglevel = "warning"
