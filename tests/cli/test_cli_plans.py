"""Saved plans, targeting, refresh-only and drift, through the ``bpfman`` executable."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests import support
from tests.cli.conftest import EXAMPLES, Bpfman, tracepoint_manifest, xdp_manifest

pytestmark = pytest.mark.kernel

TP_O = EXAMPLES / "bytecode" / "tracepoint_counter.o"
XDP_O = EXAMPLES / "bytecode" / "xdp_counter.o"


def two_tracepoints(mdir) -> None:
    bc = mdir.bytecode(TP_O)
    mdir.write("a.yaml", tracepoint_manifest("a", bc, "syscalls/sys_enter_getpid"))
    mdir.write("b.yaml", tracepoint_manifest("b", bc, "syscalls/sys_enter_getppid"))


def addresses(b) -> list[str]:
    return [e["address"] for e in json.loads(b.run("list", "--json").stdout)["attachments"]]


def test_saved_plan_applies_exactly_without_asking_and_goes_stale(no_leaks, bpfman, mdir, tmp_path):
    two_tracepoints(mdir)
    plan_file = tmp_path / "p.plan"
    out = bpfman.run("plan", mdir.source, "--out", str(plan_file)).stdout
    assert f"bpfman apply {plan_file}" in out
    # The manifests change after the plan was saved: the saved plan still applies as reviewed.
    mdir.remove("b.yaml")
    out = bpfman.run("apply", str(plan_file)).stdout  # no --auto-approve, no TTY: no prompt
    assert "Apply complete! Resources: 2 added, 0 changed, 0 destroyed." in out
    assert sorted(addresses(bpfman)) == [
        "TracepointProgram/a[syscalls/sys_enter_getpid]",
        "TracepointProgram/b[syscalls/sys_enter_getppid]",
    ]
    p = bpfman.run("apply", str(plan_file), expect=1)
    assert "Saved plan is stale" in p.stderr


def test_no_op_runs_do_not_make_a_saved_plan_stale(no_leaks, bpfman, mdir, tmp_path):
    bc = mdir.bytecode(TP_O)
    mdir.write("a.yaml", tracepoint_manifest("a", bc, "syscalls/sys_enter_getpid"))
    bpfman.run("apply", mdir.source, "--auto-approve")
    plan_file = tmp_path / "p.plan"
    mdir.write("b.yaml", tracepoint_manifest("b", bc, "syscalls/sys_enter_getppid"))
    bpfman.run("plan", mdir.source, "--out", str(plan_file))
    mdir.remove("b.yaml")
    assert "No changes." in bpfman.run("apply", mdir.source, "--auto-approve").stdout
    assert "Resources: 1 added" in bpfman.run("apply", str(plan_file)).stdout


def test_saved_plan_for_another_root_or_after_kernel_changes_is_refused(
    no_leaks, bpfman, mdir, tmp_path, bpffs_root
):
    two_tracepoints(mdir)
    plan_file = tmp_path / "p.plan"
    bpfman.run("plan", mdir.source, "--out", str(plan_file))
    other = Bpfman(bpffs_root.with_name(bpffs_root.name + "-o"), tmp_path / "o")
    p = other.run("apply", str(plan_file), expect=1)
    assert "Saved plan is stale: it was made for bpffs root" in p.stderr
    # Someone loads something under our root meanwhile: the kernel state changed.
    bpfman.run("apply", mdir.source, "--auto-approve", "--target", "TracepointProgram/a")
    assert "Saved plan is stale" in bpfman.run("apply", str(plan_file), expect=1).stderr
    support.remove_tree(other.root)


def test_target_and_exclude_narrow_the_plan_with_a_warning(no_leaks, bpfman, mdir):
    two_tracepoints(mdir)
    p = bpfman.run("plan", mdir.source, "--target", "TracepointProgram/a")
    assert "Warning: Resource targeting is in effect" in p.stdout
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in p.stdout
    bpfman.run("apply", mdir.source, "--auto-approve", "--exclude", "TracepointProgram/b")
    assert addresses(bpfman) == ["TracepointProgram/a[syscalls/sys_enter_getpid]"]
    assert "Plan: 1 to add" in bpfman.run("plan", mdir.source).stdout  # b is still to do
    bad = bpfman.run("plan", mdir.source, "--target", "nonsense", expect=1)
    assert "expected KIND/NAME" in bad.stderr


def test_a_saved_targeted_plan_keeps_what_it_left_out(no_leaks, bpfman, mdir, tmp_path):
    """Applying a saved --target plan must not forget the attachments whose changes it left out:
    their records stay, so the next plan still shows just those changes."""
    two_tracepoints(mdir)
    bpfman.run("apply", mdir.source, "--auto-approve", "--target", "TracepointProgram/b")
    # b's bytecode moves (same digest): a change in place that the targeted plan leaves out.
    moved = mdir.bytecode(TP_O, "moved.o")
    mdir.write("b.yaml", tracepoint_manifest("b", moved, "syscalls/sys_enter_getppid"))
    plan_file = tmp_path / "p.plan"
    bpfman.run("plan", mdir.source, "--target", "TracepointProgram/a", "--out", str(plan_file))
    assert "Resources: 1 added" in bpfman.run("apply", str(plan_file)).stdout
    after = bpfman.run("plan", mdir.source).stdout
    assert "Plan: 0 to add, 1 to change, 0 to destroy." in after, after
    assert "no record" not in after and "must be replaced" not in after, after


def test_drift_is_shown_repaired_and_recorded_by_refresh_only(no_leaks, bpfman, mdir, veth):
    bpfman.netns = veth.ns_a
    mdir.write("xdp.yaml", xdp_manifest("fw", mdir.bytecode(XDP_O)))
    bpfman.run("apply", mdir.source, "--auto-approve")
    support.sh("ip", "-n", veth.ns_a, "link", "set", "dev", "eth0", "xdp", "off")

    p = bpfman.run("plan", mdir.source)
    assert "Note: Objects have changed outside of bpfman" in p.stdout
    assert "XdpProgram/fw[eth0] was detached outside bpfman on eth0" in p.stdout
    assert "# XdpProgram/fw[eth0] must be replaced" in p.stdout
    refresh = bpfman.run("plan", mdir.source, "--refresh-only").stdout
    assert "was detached outside bpfman" in refresh and "No changes." in refresh
    bpfman.run("apply", mdir.source, "--auto-approve")
    (link,) = json.loads(support.sh("ip", "-n", veth.ns_a, "-j", "link", "show", "eth0").stdout)
    assert link.get("xdp")  # repaired
    assert "No changes." in bpfman.run("plan", mdir.source).stdout

    # Pins removed by hand: refresh-only records it without touching the kernel.
    support.remove_tree(bpfman.root / "XdpProgram")
    subprocess.run(["ip", "-n", veth.ns_a, "link", "set", "dev", "eth0", "xdp", "off"], check=False)
    out = bpfman.run("apply", mdir.source, "--refresh-only").stdout
    assert "its pins are gone" in out and "Records: 0 updated, 1 removed." in out
    assert "will be loaded" in bpfman.run("plan", mdir.source).stdout
