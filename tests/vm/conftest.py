"""Fixtures of the VM tier's own tests (they run inside the guest; see tests/vmtier.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from reconciler.kernel.tracing.ksyms import kallsyms_has
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


@cache
def vmlinux_func_ids() -> dict[str, int]:
    """Kernel function name -> BTF type id, as bpftool reads /sys/kernel/btf/vmlinux."""
    out = support.sh("bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux").stdout
    return {m[2]: int(m[1]) for m in re.finditer(r"^\[(\d+)\] FUNC '([^']+)'", out, re.M)}


@pytest.fixture(scope="session")
def getpid_function() -> str:
    """A kernel function getpid(2) runs, in kallsyms (for kprobes) and in BTF (for fentry): the
    syscall's entry point, or the function behind it (some kernels' BTF lacks the wrapper)."""
    for name in ("__x64_sys_getpid", "__arm64_sys_getpid", "__do_sys_getpid"):
        if kallsyms_has(name) and name in vmlinux_func_ids():
            return name
    pytest.skip("no getpid(2) entry function in this kernel's kallsyms and BTF")
