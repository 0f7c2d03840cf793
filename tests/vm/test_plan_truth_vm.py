"""`bpfman plan` on the VM tier's kernel, where what the host kernel cannot run works: XDP and TC
programs go through dispatchers there, so plan runs them past the verifier as what a dispatcher
runs (an extension of one of its slots, which needs BTF and the slot's prototype: a program the
kernel accepts alone on its hook can be refused there); kprobes and fentry/fexit name kernel
functions, which plan looks up (kallsyms, BTF). A repeated plan loads nothing.

Python starts slowly under TCG: two bpfman invocations for the CLI story.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reconciler.kernel import RealKernel, VerifierError, XdpPoint, probes
from reconciler.kernel.sys import bpf
from reconciler.kernel.types import DispatchSlot, ProgramSpec, ProgType, TcHook, XdpHook
from tests import support

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
TEST_BPF = REPO / "tests" / "bpf"


# A TC program without maps (maps declared with BTF cannot be opened without BTF).
TC_PASS = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("tc") int tc_pass(struct __sk_buff *skb) { return 0; }
char LICENSE[] SEC("license") = "GPL";
"""


def without_btf(src: Path, out: Path) -> str:
    """``src`` compiled without -g: no .BTF, so no function info for the kernel."""
    flags = ["-O2", "-target", "bpf", "-D__TARGET_ARCH_x86", "-I/usr/include/x86_64-linux-gnu"]
    subprocess.run(["clang", *flags, "-c", str(src), "-o", str(out)], check=True)
    return str(out)


def next_prog_id() -> int:
    fd = probes._load_trivial(bpf.PROG_TYPE_TRACEPOINT)
    try:
        return bpf.prog_info(fd).id
    finally:
        os.close(fd)


def test_a_dispatched_program_is_verified_as_what_the_dispatcher_runs(
    no_leaks: None, tmp_path: Path, pin_dir: Path
) -> None:
    kernel = RealKernel(pin_dir / "root")
    assert kernel.probe("freplace"), "the VM tier's kernel runs dispatchers"
    xdp = ProgramSpec(without_btf(TEST_BPF / "xdp_pass.bpf.c", tmp_path / "x.o"), "xdp_foreign",
                      ProgType.XDP)  # fmt: skip
    (tmp_path / "tc.bpf.c").write_text(TC_PASS)
    tc = ProgramSpec(without_btf(tmp_path / "tc.bpf.c", tmp_path / "t.o"), "tc_pass", ProgType.TC)
    # Alone on a hook (attached directly) the kernel takes them ...
    kernel.verify(xdp, XdpPoint("lo"))
    kernel.verify(tc, TcHook("lo", "ingress"))
    # ... as a dispatcher's slot it does not, and the dry run says so as the real load would.
    for spec, point in ((xdp, XdpPoint("lo")), (tc, None)):
        with pytest.raises(VerifierError, match="Program extension requires BTF"):
            kernel.verify(spec, point, dispatched=True)
    slot = DispatchSlot("XdpProgram/x/lo", xdp, 50, ("pass",))
    with pytest.raises(VerifierError, match="Program extension requires BTF"):
        kernel.dispatch(XdpHook("lo"), [slot])
    assert kernel.observe() == [] and kernel.xdp_program_on("lo") is None


def manifest(kind: str, name: str, function: str, obj: str, extra: str) -> str:
    return (
        f"apiVersion: bpfman.io/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec:\n"
        f"  bpffunctionname: {function}\n  bytecode: {{path: bc/{obj}}}\n{extra}"
    )


def test_plan_through_the_cli_on_the_vm_kernel(
    no_leaks: None, tmp_path: Path, vm_bytecode: Path, getpid_function: str
) -> None:
    fn = getpid_function
    src = tmp_path / "src"
    (src / "bc").mkdir(parents=True)
    (src / "bc" / "reject.o").write_bytes((TEST_BPF / "reject.o").read_bytes())
    (src / "bc" / "k.o").write_bytes((vm_bytecode / "kernel_probes.o").read_bytes())
    without_btf(TEST_BPF / "xdp_pass.bpf.c", src / "bc" / "nobtf.o")
    lo = "  interfaceselector: {interfaces: [lo]}\n"
    missing = "  func_name: bpfman_no_such_function\n"
    docs = [
        manifest("XdpProgram", "rej", "xdp_reject", "reject.o", lo + "  priority: 10\n"),
        manifest("XdpProgram", "nobtf", "xdp_foreign", "nobtf.o", lo + "  priority: 20\n"),
        manifest("KprobeProgram", "typo", "kprobe_count", "k.o", f"  func_name: {fn}x\n"),
        manifest("FentryProgram", "nofn", "fentry_count", "k.o", missing),
        manifest("KprobeProgram", "kp", "kprobe_count", "k.o", f"  func_name: {fn}\n"),
        manifest("FentryProgram", "fe", "fentry_count", "k.o", f"  func_name: {fn}\n"),
    ]
    (src / "all.yaml").write_text("---\n".join(docs))
    root = Path("/sys/fs/bpf") / support.unique("bpfman-plan-vm-")
    base = [support.BPFMAN, "--bpffs-root", str(root), "--state-dir", str(tmp_path / "state")]
    progs = support.prog_ids()

    first = subprocess.run([*base, "--no-color", "plan", str(src)], capture_output=True, text=True)
    assert first.returncode == 1, first.stdout + first.stderr
    errors = [ln for ln in first.stdout.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 4 and "the plan has 4 error(s)" in first.stderr, first.stdout
    out = first.stdout
    assert "XdpProgram/rej[lo] (all.yaml:1): the verifier rejected xdp_reject" in out
    assert "invalid access to packet" in out
    assert "XdpProgram/nobtf[lo] (all.yaml:" in out and "Program extension requires BTF" in out
    assert f"KprobeProgram/typo[{fn}x] (all.yaml:" in out
    assert (
        f"kernel function {fn}x does not exist on this kernel (not in /proc/kallsyms); did " in out
    )
    assert f"did you mean {fn}" in out
    assert "FentryProgram/nofn[bpfman_no_such_function] (all.yaml:" in out
    assert (
        "kernel function bpfman_no_such_function does not exist on this kernel (no FUNC in " in out
    )
    shown = "\n".join(errors)
    assert "KprobeProgram/kp[" not in shown and "FentryProgram/fe[" not in shown
    support.wait_gone(support.prog_ids, progs, "programs after plan")
    assert not root.exists() or not any(root.rglob("*"))

    before = next_prog_id()
    again = subprocess.run([*base, "--no-color", "plan", str(src)], capture_output=True, text=True)
    assert next_prog_id() == before + 1, "the same plan again loaded programs"
    assert again.stdout == first.stdout and again.returncode == 1
