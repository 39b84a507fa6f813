"""The build, with an optional compiled request path.

Metadata lives in pyproject.toml. By default the package is pure Python.
With ``WSGI_SESSION_COMPILE=1`` in the environment, the modules listed in
``wsgi_session/_mypyc.py`` are compiled with mypyc into extension modules
(a C compiler and the Python headers are needed; mypy is fetched into the
build environment), which takes roughly a minute::

    WSGI_SESSION_COMPILE=1 pip install .

``python -c "import wsgi_session._mypyc as m; print(m.is_compiled())"``
says which build is installed. Do not set the variable for an editable
install (``pip install -e``): the compiled modules would be built next to
the ``.py`` files and shadow them, so edits would not run.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from setuptools import setup

#: The mypy whose mypyc compiles the build (the generated C depends on it).
MYPYC = "mypy==2.4.1"
#: Whether this build compiles (see the module's docstring).
COMPILING = os.environ.get("WSGI_SESSION_COMPILE") == "1"


def compiled_modules() -> list[str]:
    """The files named by ``COMPILED_MODULES``, read from ``_mypyc.py`` alone
    (importing the package would need its dependencies, absent at build time)."""
    names = runpy.run_path(str(Path(__file__).with_name("wsgi_session") / "_mypyc.py"))["COMPILED_MODULES"]
    return [f"wsgi_session/{name}.py" for name in names]


def extensions() -> list[object]:
    """The compiled modules' extensions, or none for the pure-Python build.

    A PEP 517 build (pip's default) first asks which requirements the build
    needs (the ``egg_info`` pass, mypyc not installed yet: ``setup_requires``
    names it), then builds with them installed. Anywhere else, asking for the
    compiled build without mypyc is an error, not a silent pure build."""
    if not COMPILING:
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        if "egg_info" in sys.argv:
            return []
        raise SystemExit(f"WSGI_SESSION_COMPILE=1 needs mypyc: install {MYPYC}, or build with pip") from None
    # The build environment holds mypy, not the package's dependencies: their
    # types are unknown there (Any: plain Python calls) whatever is installed
    # elsewhere, and the checks are mypy's defaults (`mypy --strict` is CI's job).
    options = ["--config-file=", "--ignore-missing-imports"]
    return list(mypycify(options + compiled_modules(), opt_level="3"))


def mypyc_missing() -> bool:
    """Whether mypyc cannot be imported here (an isolated build's first pass)."""
    try:
        import mypyc  # noqa: F401
    except ImportError:
        return True
    return False


setup(
    # Only an isolated build fetches the pinned mypy; one that has mypy uses it.
    setup_requires=[MYPYC] if COMPILING and mypyc_missing() else [],
    ext_modules=extensions(),
)
