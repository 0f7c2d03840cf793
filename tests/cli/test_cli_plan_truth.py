"""`bpfman plan` tells what apply would refuse, through the real executable, on the running kernel:
the verifier's rejection (loading nothing that stays, and nothing at all when the same plan is
made again), uprobe targets that are not binaries of this machine and functions libbpf would not
find. Checked with bpftool; program ids are allocated in order, so a probe program loaded before
and after a plan shows whether the plan loaded anything (run under the kernel-tests lock)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from reconciler.kernel import probes
from reconciler.kernel.sys import bpf
from tests import support
from tests.cli.conftest import (
    EXAMPLES,
    TEST_BPF,
    tracepoint_manifest,
    uprobe_manifest,
    xdp_manifest,
)

pytestmark = pytest.mark.kernel

TP_O = EXAMPLES / "bytecode" / "tracepoint_counter.o"
UPROBE_O = EXAMPLES / "bytecode" / "uprobe_counter.o"
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


def next_prog_id() -> int:
    """The id the kernel gives the next program (loaded and released at once)."""
    fd = probes._load_trivial(bpf.PROG_TYPE_TRACEPOINT)
    try:
        return bpf.prog_info(fd).id
    finally:
        os.close(fd)


def pins(root: Path) -> list[str]:
    return [str(Path(d) / f) for d, _, fs in os.walk(root) for f in fs] if root.exists() else []


def test_plan_refuses_what_the_verifier_rejects_and_a_repeated_plan_loads_nothing(
    no_leaks, bpfman, mdir
) -> None:
    mdir.write(
        "ok.yaml", tracepoint_manifest("ok", mdir.bytecode(TP_O), "syscalls/sys_enter_getpid")
    )
    bad = xdp_manifest("bad", mdir.bytecode(TEST_BPF / "reject.o"), "lo", "xdp_reject")
    mdir.write("bad.yaml", bad)
    progs, maps = support.prog_ids(), support.map_ids()

    p = bpfman.run("--no-color", "plan", mdir.source, expect=1)
    assert p.stdout.count("Error:") == 1, p.stdout
    assert (
        "Error: XdpProgram/bad[lo] (manifests/bad.yaml:1): the verifier rejected xdp_reject "
        f"from {mdir.root}/bytecode/reject.o (Permission denied)" in p.stdout
    )
    assert "invalid access to packet" in p.stdout  # the verifier's own reason, its last lines
    assert "the plan has 1 error(s) shown above; nothing can be applied" in p.stderr
    # bpftool: the programs and maps loaded for the verifier are gone; nothing is pinned.
    support.wait_gone(support.prog_ids, progs, "programs after plan")
    support.wait_gone(support.map_ids, maps, "maps after plan")
    assert pins(bpfman.root) == []
    verdicts = bpfman.state / "verdicts.json"
    assert stat.S_IMODE(verdicts.stat().st_mode) == 0o600

    before = next_prog_id()
    again = bpfman.run("--no-color", "plan", mdir.source, expect=1)
    assert next_prog_id() == before + 1  # the same plan again: nothing loaded, not even a probe
    assert again.stdout == p.stdout

    apply = bpfman.run("--no-color", "apply", mdir.source, "--auto-approve", expect=1)
    assert "XdpProgram/bad[lo] (manifests/bad.yaml:1): the verifier rejected" in apply.stdout
    assert "the plan has 1 error(s); nothing was changed" in apply.stderr
    support.wait_gone(support.prog_ids, progs, "programs after a refused apply")
    assert pins(bpfman.root) == []

    mdir.remove("bad.yaml")
    bpfman.run("apply", mdir.source, "--auto-approve")
    before = next_prog_id()
    bpfman.run("plan", mdir.source, "--detailed-exitcode", expect=0)
    assert next_prog_id() == before + 1  # a plan with no loads loads nothing
    bpfman.run("destroy", "--auto-approve")


def test_plan_refuses_uprobe_targets_and_functions_libbpf_would_not_find(
    no_leaks, bpfman, mdir, tmp_path: Path
) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "script").write_text("#!/bin/sh\nexit 0\n")
    bc = mdir.bytecode(UPROBE_O)
    cases = {
        "fifo": (tmp_path / "fifo", "main", "is a FIFO (named pipe), not a regular file"),
        "dir": (tmp_path, "main", "is a directory, not a regular file"),
        "zero": ("/dev/zero", "main", "is a character device, not a regular file"),
        "script": (tmp_path / "script", "main", "is a script (it starts with #!)"),
        "ifunc": ("libc", "strlen", "strlen is a GNU indirect function (STT_GNU_IFUNC)"),
        "data": ("libc", "environ", "environ is a data object (STT_OBJECT), not a function"),
        "typo": ("libc", "mallocc", "did you mean malloc"),
        "imported": ("/bin/true", "exit", "it only imports that function"),
        "stripped": ("/bin/true", "main", "it has no .symtab: it is stripped"),
    }
    for name, (target, func, _) in cases.items():
        mdir.write(f"{name}.yaml", uprobe_manifest(name, bc, str(target), func))
    progs = support.prog_ids()
    cmd = [support.BPFMAN, "--bpffs-root", str(bpfman.root), "--state-dir", str(bpfman.state)]
    p = subprocess.run(
        [*cmd, "--no-color", "plan", mdir.source], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 1, p.stdout + p.stderr
    for name, (target, _func, reason) in cases.items():
        shown = LIBC if target == "libc" else target
        line = next(
            (ln for ln in p.stdout.splitlines() if ln.startswith(f"Error: UprobeProgram/{name}[")),
            "",
        )
        assert f"(manifests/{name}.yaml:1): uprobe target {shown}" in line, p.stdout
        assert reason in line, line
    assert f"the plan has {len(cases)} error(s)" in p.stderr
    support.wait_gone(support.prog_ids, progs, "programs after plan")
    assert pins(bpfman.root) == []


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is needed")
def test_plan_without_the_privilege_to_load_says_the_verifier_was_not_run(no_leaks) -> None:
    top = Path(tempfile.mkdtemp(prefix="bpfman-unpriv-"))
    try:
        (top / "src" / "bytecode").mkdir(parents=True)
        shutil.copyfile(TEST_BPF / "reject.o", top / "src" / "bytecode" / "reject.o")
        (top / "src" / "bad.yaml").write_text(
            xdp_manifest("bad", "bytecode/reject.o", "lo", "xdp_reject")
        )
        (top / "state").mkdir()
        os.chown(top / "state", 65534, 65534)
        for d, _, fs in os.walk(top):
            os.chmod(d, 0o755)
            for f in fs:
                os.chmod(Path(d) / f, 0o644)
        root = Path("/sys/fs/bpf") / support.unique("bpfman-unpriv-")
        p = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", support.BPFMAN,
             "--bpffs-root", str(root), "--state-dir", str(top / "state"), "--no-color",
             "plan", str(top / "src")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        # Never a silent pass: the plan shows the load and says the verifier did not run, why.
        assert p.returncode == 0, p.stdout + p.stderr
        assert (
            "Warning: the verifier was not run for 1 program(s) this plan loads "
            "(XdpProgram/bad[lo]): bpfman runs as uid 65534 without CAP_BPF or CAP_SYS_ADMIN"
        ) in p.stdout
        assert "# XdpProgram/bad[lo] will be loaded" in p.stdout
        assert not root.exists()
    finally:
        shutil.rmtree(top)
