"""The ELF symbol reader of uprobe targets (reconciler/kernel/elfsyms.py), against real binaries
of this machine (/bin/true, libc, tests/bpf/uprobe_target built by `make bytecode`) and files
made to be wrong. Whether libbpf agrees is tests/kernel/test_uprobe_symbols.py."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from reconciler import files
from reconciler.kernel.tracing.elfsyms import ElfFile, TargetError, near_names, printable

REPO = Path(__file__).resolve().parents[2]
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
OLD, NEW = (1, 1), (1, 3)  # libbpf before and after its name matching changed

pytestmark = pytest.mark.skipif(
    os.uname().machine != "x86_64" or not os.path.exists(LIBC), reason="x86-64 Debian paths"
)


@pytest.fixture(scope="module")
def uprobe_target(tmp_path_factory: pytest.TempPathFactory) -> str:
    built = REPO / "tests" / "bpf" / "uprobe_target"
    if built.exists():
        return str(built)
    if shutil.which("cc") is None:
        pytest.skip("cc is needed to build tests/bpf/uprobe_target (make bytecode)")
    out = tmp_path_factory.mktemp("bin") / "uprobe_target"
    subprocess.run(["cc", "-O0", "-g", "-o", str(out), str(built) + ".c"], check=True)
    return str(out)


def readelf_value(path: str, name: str) -> int:
    """st_value of ``name`` in .dynsym, as binutils reads it (an independent reader)."""
    out = subprocess.run(["readelf", "-W", "--dyn-syms", path], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        f = line.split()
        if len(f) < 8 or f[3] != "FUNC" or f[6] == "UND":
            continue
        if re.fullmatch(rf"{re.escape(name)}(@@?\S+)?", f[7]):
            return int(f[1], 16)
    raise AssertionError(f"readelf finds no FUNC {name} in {path}")


def test_a_library_function_is_found_where_readelf_puts_it() -> None:
    with ElfFile(LIBC) as elf:
        found = elf.find_function("malloc", OLD)
    # In a shared library's .text the file offset equals the address (sh_addr == sh_offset).
    assert found.found and found.offset == readelf_value(LIBC, "malloc")
    with ElfFile(LIBC) as elf:
        assert elf.find_function("malloc", NEW).offset == found.offset


def test_a_function_of_the_symtab_of_an_unstripped_binary(uprobe_target: str) -> None:
    with ElfFile(uprobe_target) as elf:
        found = elf.find_function("bpfman_probe_me", OLD)
        assert found.found and found.offset
        missing = elf.find_function("bpfman_probe_mee", OLD)
    assert not missing.found and "bpfman_probe_me" in missing.near and not missing.stripped


def test_a_stripped_binary_only_has_what_it_exports() -> None:
    with ElfFile("/bin/true") as elf:
        main = elf.find_function("main", OLD)
        imported = elf.find_function("malloc", OLD)
    assert not main.found and main.stripped and main.problem is None
    assert not imported.found and "only imports that function" in (imported.problem or "")


def test_data_and_indirect_functions_are_not_functions_to_libbpf() -> None:
    with ElfFile(LIBC) as elf:
        environ = elf.find_function("environ", OLD)
        strlen = elf.find_function("strlen", OLD)
        near = elf.find_function("mallocc", OLD)
    assert environ.problem == "environ is a data object (STT_OBJECT), not a function"
    assert "GNU indirect function (STT_GNU_IFUNC)" in (strlen.problem or "")
    assert "__strlen_avx2" in (strlen.problem or "")
    assert near.near[0] == "malloc" and near.problem is None


def test_versioned_names_as_each_libbpf_matches_them() -> None:
    with ElfFile(LIBC) as elf:
        plain = elf.find_function("malloc", OLD).offset
        old = elf.find_function("malloc@@GLIBC_2.2.5", OLD)
        new = elf.find_function("malloc@@GLIBC_2.2.5", NEW)
        single = elf.find_function("malloc@GLIBC_2.2.5", NEW)
        wrong = elf.find_function("malloc@@GLIBC_9.9", NEW)
    # libbpf < 1.3 compares the whole name with .dynsym's names, which carry no version.
    assert not old.found and "func_name: malloc" in (old.problem or "")
    assert new.offset == plain and single.offset == plain
    assert not wrong.found and "not with the version asked for" in (wrong.problem or "")


def test_two_static_functions_of_one_name_are_ambiguous(tmp_path: Path) -> None:
    for i in (1, 2):
        (tmp_path / f"u{i}.c").write_text(
            f"static int __attribute__((noinline)) helper(int x) {{ return x + {i}; }}\n"
            f"int call{i}(int x) {{ return helper(x); }}\n"
        )
    (tmp_path / "main.c").write_text(
        "int call1(int); int call2(int); int main(void) { return call1(1) + call2(2); }\n"
    )
    out = tmp_path / "twice"
    subprocess.run(
        ["cc", "-O1", "-o", str(out), *(str(tmp_path / f) for f in ("main.c", "u1.c", "u2.c"))],
        check=True,
    )
    with ElfFile(str(out)) as elf:
        for version in (OLD, NEW):
            found = elf.find_function("helper", version)
            assert not found.found and "more than once" in (found.problem or ""), version
        assert elf.find_function("call1", OLD).found


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda d: d, "is a directory, not a regular file"),
        (lambda d: _fifo(d), "is a FIFO (named pipe), not a regular file"),
        (lambda d: Path("/dev/zero"), "is a character device, not a regular file"),
        (lambda d: _socket(d), "is a socket, not a regular file"),
        (lambda d: d / "missing", "does not exist"),
        (lambda d: _write(d, b""), "is an empty file"),
        (lambda d: _write(d, b"#!/bin/sh\necho hi\n"), "is a script (it starts with #!)"),
        (lambda d: _write(d, b"hello world\n"), "no ELF magic number"),
        (lambda d: _write(d, _true()[:40]), "is a truncated ELF file"),
        (lambda d: _write(d, _true(4, 1)), "is a 32-bit ELF file"),
        (lambda d: _write(d, _true(5, 2)), "is a big-endian ELF file"),
        (lambda d: _write(d, _true(18, 183)), "is an ELF file for AArch64"),
        (lambda d: _write(d, _true(16, 1)), "is a relocatable object file (ET_REL"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_what_is_not_an_executable_of_this_machine(tmp_path: Path, make, reason: str) -> None:
    path = make(tmp_path)
    with pytest.raises(TargetError) as err:
        ElfFile(str(path)).close()
    assert reason in str(err.value)


def test_a_truncated_binary_is_refused_when_its_symbols_are_read(tmp_path: Path) -> None:
    path = _write(tmp_path, _true()[:3000])
    with ElfFile(str(path)) as elf, pytest.raises(TargetError) as err:
        elf.find_function("main", OLD)
    assert "is a truncated or corrupt ELF file: its section header table" in str(err.value)
    assert "lies beyond its end (3000 bytes)" in str(err.value)


def test_symbols_are_read_in_pieces_never_the_whole_file(monkeypatch) -> None:
    read = []
    real_open = files.open_regular

    def counting(path):
        f = real_open(path)
        original = f.read

        def counted(n=-1):
            data = original(n)
            read.append(len(data))
            return data

        f.read = counted  # type: ignore[method-assign]
        return f

    monkeypatch.setattr(files, "open_regular", counting)
    with ElfFile(LIBC) as elf:
        assert elf.find_function("malloc", OLD).found
    assert -1 not in read and sum(read) < os.path.getsize(LIBC) // 4


def test_names_from_a_file_are_shown_escaped() -> None:
    assert printable("evil\x1b[31m\u202ename\t") == "evil\\x1b[31m\\u202ename\\x09"


def test_near_names_stay_fast_on_a_large_table() -> None:
    names = [f"func_{i}" for i in range(300_000)] + ["vfs_read"]
    assert near_names("vfs_reed", names) == ["vfs_read"]


def _write(d: Path, data: bytes) -> Path:
    path = d / "target"
    path.write_bytes(data)
    return path


def _fifo(d: Path) -> Path:
    os.mkfifo(d / "fifo")
    return d / "fifo"


def _socket(d: Path) -> Path:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(d / "sock"))
    s.close()
    return d / "sock"


def _true(at: int | None = None, value: int = 0) -> bytes:
    data = bytearray(Path("/bin/true").read_bytes())
    if at is not None:
        data[at] = value & 0xFF
        if at in (16, 18):
            data[at + 1] = value >> 8
    return bytes(data)
