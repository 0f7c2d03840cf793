"""A fresh host has neither bpffs nor tracefs mounted: bpfman mounts what it needs.

Run in a private mount namespace (unshare), where unmounting touches nothing of the host's.
"""

from __future__ import annotations

import subprocess

import pytest

from tests import support
from tests.cli.conftest import EXAMPLES, tracepoint_manifest

pytestmark = pytest.mark.kernel

SCRIPT = r"""
set -e
umount /sys/kernel/tracing 2>/dev/null || true
umount /sys/fs/bpf 2>/dev/null || true
! mountpoint -q /sys/fs/bpf
! mountpoint -q /sys/kernel/tracing
B="$BPFMAN --bpffs-root /sys/fs/bpf/fresh --state-dir $STATE"
$B apply "$SRC" --auto-approve
mountpoint -q /sys/fs/bpf && mountpoint -q /sys/kernel/tracing && echo MOUNTED
stat -f -c %T /sys/fs/bpf
bpftool -j link show pinned "$(find /sys/fs/bpf/fresh -name link)"
$B destroy --auto-approve
"""


def test_apply_mounts_bpffs_and_tracefs(no_leaks, tmp_path, mdir):
    bc = mdir.bytecode(EXAMPLES / "bytecode" / "tracepoint_counter.o")
    mdir.write("tp.yaml", tracepoint_manifest("tp", bc, "syscalls/sys_enter_getpid"))
    p = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", SCRIPT],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "BPFMAN": support.BPFMAN,
            "STATE": str(tmp_path / "state"),
            "SRC": mdir.source,
        },
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Apply complete! Resources: 1 added" in p.stdout
    assert "MOUNTED" in p.stdout and "bpf_fs" in p.stdout
    assert '"type":"perf_event"' in p.stdout.replace(" ", "")
