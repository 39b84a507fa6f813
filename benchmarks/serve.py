"""The gunicorn entry point: ``benchmarks.serve:app``.

Each worker builds the subject named by ``BENCH_SUBJECT`` (a slug of
:func:`benchmarks.subjects.all_subjects`) in the namespace ``BENCH_NAMESPACE``
that the parent process passes, so its keys and tables are the ones the
parent cleans up, and, where ``BENCH_APP_METER`` is set, meters the CPU
spent inside it (:mod:`benchmarks.app_meter`). :mod:`benchmarks.loadtest` starts gunicorn
with it.
"""

from __future__ import annotations

import os

from .app_meter import MeteredApp
from .settings import Namespace
from .subjects import by_slug

target = by_slug(os.environ["BENCH_SUBJECT"]).build(Namespace.from_env())
#: The load test meters the app only where it can read the meter (one worker).
app = MeteredApp(target.app) if os.environ.get("BENCH_APP_METER") else target.app
