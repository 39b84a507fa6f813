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

#: ``function (path:line)``; a native frame without debug information has no line.
_FRAME = re.compile(r"^(?P<func>.*) \((?P<path>[^()]*?)(?::(?P<line>\d+))?\)$")
#: mypyc names a compiled function's C code after the module's last name part.
_COMPILED_PATHS = {name.rsplit("/", 1)[-1]: f"wsgi_session/{name}.py" for name in COMPILED_MODULES}
#: A mypyc C function in a native stack (the entry point ``CPyPy_`` or the body
#: ``CPyDef_``), maybe with a suffix of the C compiler's (``.part.0``, ``.cold``).
_COMPILED = re.compile(
    rf"^CPy(?:Def|Py)_(?P<module>{'|'.join(map(re.escape, _COMPILED_PATHS))})___(?P<name>\w+?)(?:\.[\w.]+)?$"
)
#: A native class's name alone: its constructor. (mypyc's helpers of a class,
#: ``<Class>_trait_vtable_setup`` and the like, have underscores after it.)
_CLASS = re.compile(r"^_?[A-Z][A-Za-z0-9]*$")
#: A native class's ``tp_clear`` (``<Class>_clear``), run when an instance is freed.
_FREED = re.compile(r"^(?P<cls>_?[A-Z][A-Za-z0-9]*)_clear$")


def module_of(path: str) -> str | None:
    """The wsgi_session module a frame's path is in (``stores/redis``), or
    ``None`` for a path outside the package."""
    _, marker, rest = path.rpartition("wsgi_session/")
    return rest.removesuffix(".py") if marker else None


def samples(raw: str) -> t.Iterator[tuple[str, list[tuple[str, str]], int]]:
    """Each stack of a py-spy raw recording: thread, frames, sample count."""
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if count_text.isdigit():
            yield (*frames(stack), int(count_text))


def frames(stack: str) -> tuple[str, list[tuple[str, str]]]:
    """A py-spy raw stack: the thread's name, and its frames (func, path)
    outermost first; a compiled function's as :func:`compiled_source` names it."""
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
    if match is None:
        return None
    name = match["name"].replace("___", ".")
    freed = _FREED.match(name)
    if freed is not None:  # a native instance's clear, which its deallocation runs
        name = f"{freed['cls']} (freed)"
    elif _CLASS.match(name):
        name += " (constructor)"
    return name, _COMPILED_PATHS[match["module"]]
