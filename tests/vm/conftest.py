"""Fixtures of the VM tier's own tests (they run inside the guest; see tests/vmtier.py)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support

VM_BPF = Path(__file__).resolve().parent / "bpf"
# The Makefile's BPF_CFLAGS (not imported from tests/kernel: the guest should not pay for
# importing the kernel tier's harness when it runs only the VM tier).
CLANG_FLAGS = ["-g", "-O2", "-Wall", "-target", "bpf", "-D__TARGET_ARCH_x86"]
CLANG_FLAGS += ["-I/usr/include/x86_64-linux-gnu"]


@pytest.fixture(scope="session")
def vm_bytecode() -> Path:
    """tests/vm/bpf/*.bpf.c compiled beside them (`make bytecode` does it on the host first)."""
    for src in sorted(VM_BPF.glob("*.bpf.c")):
        out = src.with_name(src.name.removesuffix(".bpf.c") + ".o")
        newest = max(p.stat().st_mtime for p in [src, *VM_BPF.glob("*.h")])
        if not out.exists() or out.stat().st_mtime < newest:
            if shutil.which("clang") is None:
                pytest.skip("clang is needed to build the VM tier's BPF objects (make bytecode)")
            subprocess.run(["clang", *CLANG_FLAGS, "-c", str(src), "-o", str(out)], check=True)
    return VM_BPF


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    """A private directory on bpffs for the test's pins, removed afterwards."""
    path = Path("/sys/fs/bpf") / support.unique("bpfman-vm-")
    path.mkdir()
    try:
        yield path
    finally:
        support.remove_tree(path)
