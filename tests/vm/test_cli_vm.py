"""KprobeProgram, FentryProgram and FexitProgram through `bpfman plan/apply/destroy`, on the
distribution kernel of the VM tier (this host's kernel cannot run them).

Python starts slowly under TCG, so the whole lifecycle is a handful of bpfman invocations.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
from pathlib import Path

import pytest

from tests import support

pytestmark = pytest.mark.vm

SYS_GETPID = 39  # x86-64
CALLS = 20


def manifest(kind: str, name: str, function: str, func_name: str, extra: str = "") -> str:
    return f"""apiVersion: bpfman.io/v1alpha1
kind: {kind}
metadata: {{name: {name}}}
spec:
  bpffunctionname: {function}
  bytecode: {{path: bytecode/kernel_probes.o}}
  func_name: {func_name}
{extra}"""


def test_kernel_kinds_through_the_cli(
    no_leaks: None, tmp_path: Path, vm_bytecode: Path, getpid_function: str
) -> None:
    fn = getpid_function
    src = tmp_path / "src"
    (src / "bytecode").mkdir(parents=True)
    (src / "bytecode" / "kernel_probes.o").write_bytes(
        (vm_bytecode / "kernel_probes.o").read_bytes()
    )
    (src / "kinds.yaml").write_text(
        "---\n".join(
            [
                manifest("KprobeProgram", "kp", "kprobe_count", fn),
                manifest("KprobeProgram", "kretp", "kretprobe_count", fn, "  retprobe: true\n"),
                manifest("FentryProgram", "fentry", "fentry_count", fn),
                manifest("FexitProgram", "fexit", "fexit_count", fn),
            ]
        )
    )
    root = Path("/sys/fs/bpf") / support.unique("bpfman-cli-vm-")
    base = [support.BPFMAN, "--bpffs-root", str(root), "--state-dir", str(tmp_path / "state")]

    def bpfman(*args: str, expect: int = 0) -> str:
        p = subprocess.run([*base, *args], capture_output=True, text=True)
        assert p.returncode == expect, p.stdout + p.stderr
        return p.stdout

    try:
        out = bpfman("apply", str(src), "--auto-approve")
        assert "Apply complete! Resources: 4 added, 0 changed, 0 destroyed." in out
        entries = {
            e["address"]: e["kernel"] for e in json.loads(bpfman("list", "--json"))["attachments"]
        }
        assert set(entries) == {
            f"KprobeProgram/kp[{fn}]",
            f"KprobeProgram/kretp[{fn}]",
            f"FentryProgram/fentry[{fn}]",
            f"FexitProgram/fexit[{fn}]",
        }
        libc = ctypes.CDLL(None, use_errno=True)
        for _ in range(CALLS):
            libc.syscall(SYS_GETPID)
        for address, k in entries.items():
            # bpftool, not bpfman, says what is attached, and the program's own map says it ran.
            link = support.bpftool_json("link", "show", "id", str(k["link_id"]))
            assert link["prog_id"] == k["prog_id"], address
            prog = support.bpftool_json("prog", "show", "id", str(k["prog_id"]))
            assert prog["type"] == ("tracing" if "/f" in address else "kprobe"), address
            (counters,) = [m for m in k["maps"] if m["name"] == "counters"]
            assert support.map_u64(f"id {counters['id']}") >= CALLS, address
        bpfman("plan", str(src), "--detailed-exitcode")  # exit 0: nothing to change
        out = bpfman("destroy", "--auto-approve")
        assert "Resources: 0 added, 0 changed, 4 destroyed." in out
    finally:
        subprocess.run([*base, "destroy", "--auto-approve"], capture_output=True)
        support.remove_tree(root)
