"""reconciler/codecache.py: dataclasses' generated methods are compiled once and kept, a kept
entry is used instead of compiling, and a missing, damaged or foreign table only costs compiles."""

from __future__ import annotations

import dataclasses
import marshal
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import codecache

SOURCE = "def __create_fn__():\n def f(x):\n  return x + 1\n return f"


@pytest.fixture
def table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "__pycache__" / "dataclass-methods.bin"
    monkeypatch.setattr(codecache, "path", str(path))
    monkeypatch.setattr(codecache, "_table", None)
    monkeypatch.setattr(codecache, "_used", {})
    monkeypatch.setattr(codecache, "_new", False)
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    return path


def _fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a new process starts with: nothing read, nothing compiled."""
    monkeypatch.setattr(codecache, "_table", None)
    monkeypatch.setattr(codecache, "_used", {})
    monkeypatch.setattr(codecache, "_new", False)


def _run(code: object) -> int:
    ns: dict = {}
    exec(code, {}, ns)  # noqa: S102 - the code under test
    return ns["__create_fn__"]()(1)


def _no_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("compiled although the table holds it")

    monkeypatch.setattr(codecache, "compile", refuse, raising=False)


def test_compiled_once_then_read_from_the_table(table: Path, monkeypatch) -> None:
    assert _run(codecache.code_for(SOURCE)) == 2
    assert codecache.save() is True
    assert table.exists()
    _fresh_process(monkeypatch)
    _no_compile(monkeypatch)
    assert _run(codecache.code_for(SOURCE)) == 2
    assert codecache.save() is False  # nothing new: the file is not rewritten


def test_compiled_as_exec_compiles_it(table: Path) -> None:
    """Without the compiling module's __future__ flags: annotations stay objects."""
    source = "def __create_fn__(_t):\n def f(a: _t) -> None:\n  pass\n return f"
    ns: dict = {}
    exec(codecache.code_for(source), {}, ns)  # noqa: S102 - the code under test
    assert ns["__create_fn__"](int).__annotations__ == {"a": int, "return": None}


def test_an_edited_source_misses(table: Path, monkeypatch) -> None:
    codecache.code_for(SOURCE)
    codecache.save()
    _fresh_process(monkeypatch)
    assert _run(codecache.code_for(SOURCE.replace("x + 1", "x + 2"))) == 3
    assert codecache._new is True


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage",
        b"\x00" * 100,
        "header of another interpreter",
        "truncated",
        "not a table",
        "entry not code",
    ],
)
def test_a_damaged_or_foreign_table_is_ignored(table: Path, monkeypatch, content) -> None:
    codecache.code_for(SOURCE)
    codecache.save()
    good = table.read_bytes()
    head = codecache._magic() + codecache._HEADER
    data = {
        "header of another interpreter": b"\x00\x00\r\n" + good[4:],
        "truncated": good[: len(good) - 20],
        "not a table": head + marshal.dumps([1, 2, 3]),
        "entry not code": head + marshal.dumps({SOURCE: marshal.dumps(42)}),
    }.get(content, content)
    table.write_bytes(data)
    _fresh_process(monkeypatch)
    assert _run(codecache.code_for(SOURCE)) == 2
    assert codecache._new is True  # compiled, and the next save repairs the file
    assert codecache.save() is True
    _fresh_process(monkeypatch)
    _no_compile(monkeypatch)
    assert _run(codecache.code_for(SOURCE)) == 2


def test_bytecode_writing_off_writes_nothing_unless_forced(table: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    codecache.code_for(SOURCE)
    assert codecache.save() is False and not table.exists()
    assert codecache.save(force=True) is True and table.exists()


def test_an_unwritable_place_is_not_an_error(table: Path, monkeypatch) -> None:
    table.parent.mkdir()
    table.parent.chmod(0o500)
    monkeypatch.setattr(os, "replace", _raise_oserror)  # root ignores modes
    codecache.code_for(SOURCE)
    assert codecache.save() is False
    assert [p.name for p in table.parent.iterdir()] == []  # no temporary file left


def _raise_oserror(*args: object) -> None:
    raise PermissionError(13, "Permission denied")


def test_the_table_is_bounded(table: Path, monkeypatch) -> None:
    monkeypatch.setattr(codecache, "MAX_ENTRIES", 5)
    for i in range(5):
        codecache.code_for(SOURCE.replace("1", str(i + 10)))
    codecache.save()
    _fresh_process(monkeypatch)
    codecache.code_for(SOURCE)
    codecache.save()  # 6 > 5: only what this process used is kept
    _fresh_process(monkeypatch)
    assert list(codecache._read()) == [SOURCE]


def test_dataclasses_compile_through_the_table(table: Path, monkeypatch) -> None:
    @dataclasses.dataclass
    class Pair:
        a: int
        b: str = "b"

    assert Pair(1) == Pair(1, "b") and repr(Pair(2)).endswith("Pair(a=2, b='b')")
    sources = list(codecache._used)
    assert any("def __init__(self,a:" in s for s in sources)
    codecache.save()
    _fresh_process(monkeypatch)
    _no_compile(monkeypatch)

    @dataclasses.dataclass
    class Pair2:  # the same fields: the same generated source
        a: int
        b: str = "b"

    assert Pair2(1).b == "b" and Pair2(1) != Pair2(2)


def test_precompile_leaves_nothing_for_a_command_to_compile(tmp_path: Path) -> None:
    """After ``python -m reconciler.precompile`` (what the install script runs), importing
    bpfman's commands, CLI and kernel compiles no dataclass method."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.precompile"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    probe = (
        "import reconciler.codecache as c, reconciler.cli, reconciler.commands, "
        "reconciler.kernel.real, reconciler.watch.loop; print(c._new, len(c._used))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    new, used = out.stdout.split()
    assert new == "False" and int(used) > 100
