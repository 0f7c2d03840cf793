"""Fixtures of the kernel contract tests: test objects, and one world per kernel kind."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support
from tests.kernel.harness import BPF, VM_BPF, World, make_kernel

CLANG_FLAGS = [
    "-g",
    "-O2",
    "-Wall",
    "-target",
    "bpf",
    "-D__TARGET_ARCH_x86",
    "-I/usr/include/x86_64-linux-gnu",
]  # fmt: skip  (the Makefile's BPF_CFLAGS)


def _stale(src: Path, out: Path) -> bool:
    return not out.exists() or out.stat().st_mtime < src.stat().st_mtime


@pytest.fixture(scope="session")
def bytecode() -> Path:
    """tests/bpf/*.bpf.c (and the kernel layer's VM-tier objects, tests/vm/bpf/kernel_*.bpf.c,
    which the contract tests load too) compiled to .o beside them (what `make bytecode` does)."""
    for src in sorted([*BPF.glob("*.bpf.c"), *VM_BPF.glob("kernel_*.bpf.c")]):
        out = src.with_name(src.name.removesuffix(".bpf.c") + ".o")
        if _stale(src, out):
            if shutil.which("clang") is None:
                pytest.skip("clang is needed to build the test BPF objects (make bytecode)")
            subprocess.run(["clang", *CLANG_FLAGS, "-c", str(src), "-o", str(out)], check=True)
    return BPF


@pytest.fixture(scope="session")
def uprobe_target(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny binary whose bpfman_probe_me() the uprobe tests probe."""
    if shutil.which("cc") is None:
        pytest.skip("a C compiler (cc) is needed to build the uprobe target")
    out = tmp_path_factory.mktemp("uprobe") / "uprobe_target"
    subprocess.run(["cc", "-O0", "-g", "-o", str(out), str(BPF / "uprobe_target.c")], check=True)
    return str(out)


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.kernel)])
def world(request: pytest.FixtureRequest, bytecode: Path, uprobe_target: str) -> Iterator[World]:
    """A kernel (fake or real) with a private bpffs root. For the real kernel the test fails if
    it leaves any program, link or map behind (after its own cleanup)."""
    root = Path("/sys/fs/bpf") / support.unique("bpfman-test-")
    if request.param == "real":
        request.getfixturevalue("no_leaks")  # set up first, so it checks after our teardown
    w = World(request.param, make_kernel(request.param, root), root, uprobe_target)
    try:
        yield w
    finally:
        try:
            if w.real:
                for inst in w.kernel.observe():
                    w.kernel.uninstall(inst.pin_dir)
        finally:
            w.close()
            support.remove_tree(root)
