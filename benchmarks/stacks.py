"""py-spy's raw recordings (``--format raw``), read into Python frames.

Each line of a raw recording is one distinct stack and how many samples
found it: the thread's label (``--threads``), then the frames outermost
first, ``function (path:line)``, separated by ``;``. With ``--native`` the
stack also holds C frames; those of mypyc-compiled modules
(``CPyDef_<module>___<Class>___<method>``) are read as the Python functions
they were compiled from, so a profile of the compiled build is charged to
the same names as one of pure Python.
"""

from __future__ import annotations

import re
import typing as t

from wsgi_session._mypyc import COMPILED_MODULES

_FRAME = re.compile(r"^(?P<func>.*) \((?P<path>.*):(?P<line>\d+)\)$")
#: A mypyc C function in a native stack (the entry point ``CPyPy_`` or the body ``CPyDef_``).
_COMPILED = re.compile(r"^CPy(?:Def|Py)_(?P<module>[a-z]+)___(?P<name>\w+)$")
_COMPILED_PATHS = {name.rsplit("/", 1)[-1]: f"wsgi_session/{name}.py" for name in COMPILED_MODULES}


def samples(raw: str) -> t.Iterator[tuple[str, list[tuple[str, str]], int]]:
    """Each stack of a py-spy raw recording: thread, frames, sample count."""
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if count_text.isdigit():
            yield (*frames(stack), int(count_text))


def frames(stack: str) -> tuple[str, list[tuple[str, str]]]:
    """A py-spy raw stack: the thread's name, and its frames (func, path) outermost first."""
    label, *raw_frames = stack.split(";")
    thread = label.split(": ", 1)[1] if ": " in label else label
    parsed = []
    for frame in raw_frames:
        match = _FRAME.match(frame)
        func, path = (match["func"], match["path"]) if match else (frame, "")
        parsed.append(compiled_source(func) or (func, path))
    return thread, parsed


def compiled_source(func: str) -> tuple[str, str] | None:
    """The Python function (``Class.method``, its path) a mypyc C function was
    compiled from; ``None`` for any other function."""
    match = _COMPILED.match(func)
    if match is None or match["module"] not in _COMPILED_PATHS:
        return None
    return match["name"].replace("___", "."), _COMPILED_PATHS[match["module"]]
