"""The plan's reading of uprobe functions agrees with libbpf's: for each (binary, function) the
plan finds the function exactly when libbpf attaches a uprobe to it, at the offset the kernel
then reports (bpf_link info). A plan that said yes where apply fails, or no where it works,
would not be truthful."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.kernel import KernelError, RealKernel
from reconciler.kernel.tracing.elfsyms import ElfFile, libbpf_version
from reconciler.kernel.types import ProgramSpec, ProgType, UprobeLinkView, UprobePoint
from tests import support

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
SPEC = ProgramSpec(
    str(REPO / "manifests" / "examples" / "bytecode" / "uprobe_counter.o"),
    "uprobe_hits",
    ProgType.UPROBE,
)


@pytest.fixture
def twice(tmp_path: Path) -> str:
    """A binary with two static functions named ``helper`` (two LOCAL FUNC symbols)."""
    for i in (1, 2):
        (tmp_path / f"u{i}.c").write_text(
            f"static int __attribute__((noinline)) helper(int x) {{ return x + {i}; }}\n"
            f"int call{i}(int x) {{ return helper(x); }}\n"
        )
    (tmp_path / "main.c").write_text("int main(void) { return 0; }\n")
    out = tmp_path / "twice"
    sources = [str(tmp_path / f) for f in ("main.c", "u1.c", "u2.c")]
    subprocess.run(["cc", "-O1", "-o", str(out), *sources], check=True)
    return str(out)


def test_plan_finds_a_uprobe_function_exactly_when_libbpf_does(
    no_leaks: None, uprobe_target: str, twice: str
) -> None:
    cases = [
        (LIBC, "malloc"),
        (LIBC, "memcpy"),  # an IFUNC and a FUNC of one name: libbpf takes the FUNC
        (LIBC, "strlen"),  # only an IFUNC
        (LIBC, "environ"),  # data
        (LIBC, "malloc@@GLIBC_2.2.5"),
        (LIBC, "no_such_function"),
        ("/bin/true", "exit"),  # imported, undefined
        ("/bin/true", "main"),  # stripped away
        (uprobe_target, "bpfman_probe_me"),  # .symtab
        (uprobe_target, "main"),
        (twice, "helper"),  # ambiguous
        (twice, "call2"),
    ]
    kernel = RealKernel(Path("/sys/fs/bpf") / support.unique("bpfman-uprobe-syms-"))
    version = libbpf_version()
    try:
        for target, func in cases:
            with ElfFile(target) as elf:
                planned = elf.find_function(func, version)
            try:
                inst = kernel.install("UprobeProgram/u/x", SPEC, UprobePoint(target, func))
            except KernelError as e:
                assert not planned.found, f"{target}:{func}: plan says yes, libbpf says {e}"
                continue
            try:
                assert planned.found, f"{target}:{func}: libbpf attaches, plan said {planned}"
                assert isinstance(inst.attach, UprobeLinkView), (target, func)
                assert inst.attach.offset == planned.offset, (target, func)
            finally:
                kernel.uninstall("UprobeProgram/u/x")
    finally:
        support.remove_tree(kernel.root)
