"""A network namespace no name leads to (a process's /proc/PID/ns/net, as a container run with
--network none has): XDP attached there is seen as attached, a second plan changes nothing, and
destroy detaches it, each checked with bpftool inside the namespace."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.cli.conftest import EXAMPLES, xdp_manifest

pytestmark = pytest.mark.kernel

XDP_O = EXAMPLES / "bytecode" / "xdp_counter.o"


def xdp_on_lo(pid: int) -> list:
    out = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "bpftool", "-j", "net", "show", "dev", "lo"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (doc,) = json.loads(out)
    return doc["xdp"]


@pytest.fixture
def unnamed_netns():
    """A process alone in a new network namespace, with lo up; nothing under /run/netns."""
    proc = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", "ip link set lo up; exec sleep 600"],
        stdin=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            state = subprocess.run(
                ["nsenter", "-t", str(proc.pid), "-n", "ip", "-j", "link", "show", "lo"],
                capture_output=True, text=True,
            )  # fmt: skip
            if state.returncode == 0 and "LOWER_UP" in state.stdout:
                break
            subprocess.run(["sleep", "0.02"])
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_xdp_in_a_namespace_without_a_name(no_leaks, bpfman, mdir, unnamed_netns) -> None:
    pid = unnamed_netns
    text = xdp_manifest("fw", mdir.bytecode(XDP_O), iface="lo")
    mdir.write("fw.yaml", text + f"  netns: /proc/{pid}/ns/net\n")
    out = bpfman.run("--no-color", "apply", mdir.source, "--auto-approve").stdout
    assert "1 added" in out, out
    (attached,) = xdp_on_lo(pid)
    assert "No changes." in bpfman.run("--no-color", "plan", mdir.source).stdout
    (entry,) = json.loads(bpfman.run("list", "--json").stdout)["attachments"]
    assert entry["kernel"]["attached"] and entry["kernel"]["prog_id"] == attached["id"]
    bpfman.run("destroy", "--auto-approve")
    assert xdp_on_lo(pid) == []
