"""The build, with an optional compiled request path.

Metadata lives in pyproject.toml. By default the package is pure Python.
With ``WSGI_SESSION_COMPILE=1`` in the environment, the modules listed in
``wsgi_session/_mypyc.py`` are compiled with mypyc into extension modules
(a C compiler and the Python headers are needed; mypy is fetched into the
build environment), which takes roughly a minute::

    WSGI_SESSION_COMPILE=1 pip install .

``python -c "import wsgi_session._mypyc as m; print(m.is_compiled())"``
says which build is installed. An editable install (``pip install -e``) is
better left pure Python: the ``.py`` files are then what runs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from setuptools import setup

#: The mypy whose mypyc compiles the build (the generated C depends on it).
MYPYC = "mypy==2.4.1"


def compiled_modules() -> list[str]:
    """The files named by ``COMPILED_MODULES``, read without importing the package."""
    source = Path(__file__).with_name("wsgi_session").joinpath("_mypyc.py").read_text()
    block = re.search(r"COMPILED_MODULES = \(([^)]*)\)", source)
    assert block is not None, "COMPILED_MODULES not found in wsgi_session/_mypyc.py"
    return [f"wsgi_session/{name}.py" for name in re.findall(r'"([\w/]+)"', block.group(1))]


def extensions() -> list[object]:
    if os.environ.get("WSGI_SESSION_COMPILE") != "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # the pass that asks for build requirements: setup_requires brings mypy
        return []
    # The build environment holds mypy, not the package's dependencies: their
    # types are unknown there (Any: plain Python calls) whatever is installed
    # elsewhere, and the checks are mypy's defaults (`mypy --strict` is CI's job).
    options = ["--config-file=", "--ignore-missing-imports"]
    return list(mypycify(options + compiled_modules(), opt_level="3"))


compiling = os.environ.get("WSGI_SESSION_COMPILE") == "1"
setup(
    setup_requires=[MYPYC] if compiling else [],
    ext_modules=extensions(),
)
