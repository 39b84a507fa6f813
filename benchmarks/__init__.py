"""The wsgi_session benchmark suite: us against Beaker, Flask-Session and
Flask's cookie session, in process, under gunicorn, and in memory.

Run everything with ``python benchmarks/run_all.py`` (see ``README.md``).
The modules are small and layered: :mod:`benchmarks.settings` (services,
namespaces), :mod:`benchmarks.apps` (the tiny apps every subject runs),
:mod:`benchmarks.counting` (store round trip counters),
:mod:`benchmarks.subjects` and :mod:`benchmarks.peers` (what is measured),
:mod:`benchmarks.workloads` and :mod:`benchmarks.cases`, then one module per
measurement
(:mod:`benchmarks.inprocess`, :mod:`benchmarks.loadtest`,
:mod:`benchmarks.memory`, :mod:`benchmarks.profiling`) and the report
(:mod:`benchmarks.report`, :mod:`benchmarks.targets`),
:mod:`benchmarks.cleanup`, which removes what a run stored, and
:mod:`benchmarks.opcodes`, which counts the bytecode a request executes.
"""
