"""gunicorn settings of the load test (bind, workers and threads come from
the command line). wsgi_session's ``worker_exit`` hook flushes pending
writes when a worker stops."""

from wsgi_session.shutdown import worker_exit  # noqa: F401 - gunicorn reads this hook

loglevel = "warning"
accesslog = None
graceful_timeout = 5
timeout = 30
keepalive = 5
