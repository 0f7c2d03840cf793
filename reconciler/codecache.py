"""The compiled methods of bpfman's dataclasses, kept between runs the way ``.pyc`` files keep
its modules.

``dataclasses`` writes each class's ``__init__`` (and, for plain dataclasses, ``__repr__``,
``__eq__``, ...) as source text and compiles it with ``exec`` when the class is defined, that
is, on every import, in every process: Python caches modules' bytecode but not these. bpfman
defines about a hundred dataclasses, so every command compiled some two hundred small functions
before doing anything: a fifth of ``bpfman plan`` of an empty directory on the project's
machine (25 ms of 130), and about a second of every command in the emulated VM tier.

``install()`` gives the ``dataclasses`` module its own ``exec``: one that looks the source text
up in a table of code objects compiled by earlier runs and compiles only what it has not seen.
The key is the whole source text, so a hit runs exactly the code a compile would produce, and an
edited class simply misses. Everything else ``dataclasses`` does is unchanged (the stdlib module
calls ``exec`` by name, so a module global shadows the builtin for it alone).

The table lives beside bpfman's ``.pyc`` files, in ``reconciler/__pycache__/``, one file per
interpreter version (its bytecode magic number is checked too), and follows their rules: a
process that compiled something new adds it to the file when it exits, unless bytecode writing
is off (``PYTHONDONTWRITEBYTECODE``, ``-B``) or the directory is not writable; a missing,
foreign or damaged file is ignored (everything is compiled, as without it). ``python -m
reconciler.precompile`` byte-compiles the package and fills the table for all of it, even with
bytecode writing off: the install script, the benchmarks and the VM tier run it.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import marshal
import os
import sys
from types import CodeType
from typing import Any

_HEADER = b"bpfman dataclass methods 2\n"  # 2: compiled without this module's __future__ flags
# Past this many entries (an old code's, mostly) a write keeps only what this process used.
MAX_ENTRIES = 1024  # bpfman itself needs about 400

path: str | None = None
_table: dict[str, bytes] | None = None  # source text -> marshalled code, as read
_used: dict[str, bytes] = {}  # what this process looked up or compiled
_new = False
_installed = False


def _default_path() -> str | None:
    tag = sys.implementation.cache_tag
    if tag is None:
        return None
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "__pycache__", f"dataclass-methods.{tag}.bin")


def _magic() -> bytes:
    from importlib.util import MAGIC_NUMBER

    return MAGIC_NUMBER


def _read() -> dict[str, bytes]:
    if path is None:
        return {}
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return {}
    head = _magic() + _HEADER
    if not data.startswith(head):
        return {}
    try:
        table = marshal.loads(data[len(head) :])
    except (ValueError, EOFError, TypeError):
        return {}
    return table if isinstance(table, dict) else {}


def code_for(source: str) -> CodeType:
    """The code ``exec(source)`` would compile, from the table when it has it."""
    global _table, _new
    if _table is None:
        _table = _read()
    blob = _table.get(source)
    if isinstance(blob, bytes):
        try:
            code = marshal.loads(blob)
        except (ValueError, EOFError, TypeError):
            code = None
        if isinstance(code, CodeType):
            _used[source] = blob
            return code
    # As exec compiles it in dataclasses' frame, without this module's __future__ flags (which
    # would turn the generated methods' annotations into strings).
    code = compile(source, "<string>", "exec", dont_inherit=True)
    _used[source] = marshal.dumps(code)
    _new = True
    return code


def _exec(source: Any, globals_: Any = None, locals_: Any = None, /, **kwargs: Any) -> None:
    if isinstance(source, str) and not kwargs:
        source = code_for(source)
    builtins.exec(source, globals_, locals_, **kwargs)


def save(*, force: bool = False) -> bool:
    """Add what this process compiled to the file; returns whether it was written. Concurrent
    writers each replace the file whole (rename), so one may lose the other's additions: those
    are compiled again by a later run, never wrong."""
    global _new
    if path is None or not (_new or force) or (sys.dont_write_bytecode and not force):
        return False
    table = _read()
    table.update(_used)
    if len(table) > MAX_ENTRIES:
        table = dict(_used)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(_magic() + _HEADER + marshal.dumps(table))
        os.replace(tmp, path)
    except OSError:
        # O_EXCL never follows a planted symlink; a stale temporary (a dead process of the same
        # pid) is removed here, so the next run writes.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False
    _new = False
    return True


def _save_at_exit() -> None:
    # A cache must never turn an exit into a failure.
    with contextlib.suppress(Exception):
        save()


def install() -> None:
    """Make ``dataclasses`` compile through the table (once per process)."""
    global _installed, path
    if _installed:
        return
    import dataclasses

    if path is None:
        path = _default_path()
    # A module global named exec shadows the builtin for the code of that module alone.
    dataclasses.exec = _exec  # type: ignore[attr-defined]
    atexit.register(_save_at_exit)
    _installed = True
