"""End to end through the ``bpfman`` executable against the running kernel.

Each test gets its own bpffs root, state dir and (for XDP/TCX) a veth pair in namespaces it
creates; bpfman runs inside the namespace with nsenter, and every claim is checked with bpftool or
ip, never only with bpfman's own listing.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import pytest

from tests import support
from tests.cli.conftest import (
    EXAMPLES,
    TEST_BPF,
    tcx_manifest,
    tracepoint_manifest,
    uprobe_manifest,
    xdp_manifest,
)

pytestmark = pytest.mark.kernel

XDP_O = EXAMPLES / "bytecode" / "xdp_counter.o"
TCX_O = EXAMPLES / "bytecode" / "tcx_counter.o"
TP_O = EXAMPLES / "bytecode" / "tracepoint_counter.o"
UPROBE_O = EXAMPLES / "bytecode" / "uprobe_counter.o"
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


def xdp_prog_on(ns: str, ifname: str) -> int | None:
    (link,) = json.loads(support.sh("ip", "-n", ns, "-d", "-j", "link", "show", ifname).stdout)
    xdp = link.get("xdp")
    return xdp["prog"]["id"] if xdp and "prog" in xdp else None


def get(bpfman, address: str) -> dict:
    return json.loads(bpfman.run("get", address, "--json").stdout)


@pytest.fixture
def in_ns(bpfman, veth):
    bpfman.netns = veth.ns_a
    return bpfman


def test_xdp_and_tcx_plan_apply_count_and_destroy(no_leaks, in_ns, veth, mdir):
    b = in_ns
    mdir.write("xdp.yaml", xdp_manifest("xdp-counter", mdir.bytecode(XDP_O)))
    mdir.write("tcx.yaml", tcx_manifest("tcx-counter", mdir.bytecode(TCX_O)))

    plan = b.run("plan", mdir.source)
    assert "# XdpProgram/xdp-counter[eth0] will be loaded" in plan.stdout
    assert "# TcxProgram/tcx-counter[eth0] will be loaded" in plan.stdout
    assert "Plan: 2 to add, 0 to change, 0 to destroy." in plan.stdout
    b.run("plan", mdir.source, "--detailed-exitcode", expect=2)

    out = b.run("apply", mdir.source, "--auto-approve").stdout
    assert "XdpProgram/xdp-counter[eth0]: Loading complete after" in out
    assert "Apply complete! Resources: 2 added, 0 changed, 0 destroyed." in out

    xdp, tcx = get(b, "XdpProgram/xdp-counter[eth0]"), get(b, "TcxProgram/tcx-counter[eth0]")
    # Independent views: ip shows our XDP program on the interface, bpftool knows both programs.
    assert xdp_prog_on(veth.ns_a, "eth0") == xdp["kernel"]["prog_id"]
    assert (
        support.bpftool_json("prog", "show", "id", str(tcx["kernel"]["prog_id"]))["type"]
        == "sched_cls"
    )
    tcx_link = support.bpftool_json("link", "show", "id", str(tcx["kernel"]["link_id"]))
    assert tcx_link["prog_id"] == tcx["kernel"]["prog_id"]

    # Real packets are counted by both programs, read through the documented pin paths.
    support.send_frames(veth.netns_b, veth.if_b, 40)
    xdp_map = f"pinned {b.root}/XdpProgram/xdp-counter/eth0/maps/xdp_stats_map"
    tcx_map = f"pinned {b.root}/TcxProgram/tcx-counter/eth0/maps/tcx_stats_map"
    assert support.map_u64(xdp_map) >= 40
    assert support.map_u64(tcx_map) >= 40

    # Idempotent: a second apply and a plan after it change nothing.
    again = b.run("apply", mdir.source, "--auto-approve").stdout
    assert "No changes. Kernel state matches the manifests." in again
    assert "Resources: 0 added, 0 changed, 0 destroyed." in again
    b.run("plan", mdir.source, "--detailed-exitcode", expect=0)
    assert get(b, "XdpProgram/xdp-counter[eth0]")["kernel"]["prog_id"] == xdp["kernel"]["prog_id"]

    out = b.run("destroy", "--auto-approve").stdout
    assert "Destroy complete! Resources: 0 added, 0 changed, 2 destroyed." in out
    assert xdp_prog_on(veth.ns_a, "eth0") is None
    assert list(b.root.rglob("*")) == [] or not any(p.is_file() for p in b.root.rglob("*"))


def test_tracepoint_and_uprobe_attach_pin_and_count(no_leaks, bpfman, mdir):
    mdir.write(
        "tp.yaml", tracepoint_manifest("tp", mdir.bytecode(TP_O), "syscalls/sys_enter_getpid")
    )
    mdir.write("up.yaml", uprobe_manifest("up", mdir.bytecode(UPROBE_O), LIBC, "getpid"))
    out = bpfman.run("apply", mdir.source, "--auto-approve").stdout
    assert "Resources: 2 added" in out

    tp = get(bpfman, "TracepointProgram/tp[syscalls/sys_enter_getpid]")
    up = get(bpfman, f"UprobeProgram/up[{LIBC}:getpid]")
    for entry in (tp, up):
        link = support.bpftool_json("link", "show", "id", str(entry["kernel"]["link_id"]))
        assert link["prog_id"] == entry["kernel"]["prog_id"]
        assert os.path.exists(entry["kernel"]["link_pin"])

    for _ in range(3):  # libc's getpid() makes the getpid syscall, so both probes fire
        subprocess.run([sys.executable, "-c", "import os; os.getpid()"], check=True)
    tp_map = (
        f"pinned {bpfman.root}/TracepointProgram/tp/syscalls%2Fsys_enter_getpid/maps/tp_hits_map"
    )
    assert support.map_u64(tp_map) >= 3
    (up_map,) = [m for m in up["kernel"]["maps"] if m["name"] == "uprobe_hits_map"]
    assert support.map_u64(f"id {up_map['id']}") >= 3

    # Removing a manifest unloads exactly that program.
    mdir.remove("tp.yaml")
    plan = bpfman.run("plan", mdir.source).stdout
    assert "# TracepointProgram/tp[syscalls/sys_enter_getpid] will be unloaded" in plan
    assert "(because it is no longer in the manifests)" in plan
    assert "Plan: 0 to add, 0 to change, 1 to destroy." in plan
    bpfman.run("apply", mdir.source, "--auto-approve")
    support.wait_gone(support.prog_ids, support.prog_ids() - {tp["kernel"]["prog_id"]}, "tp prog")
    assert support.bpftool_json("prog", "show", "id", str(up["kernel"]["prog_id"]))


def test_bytecode_change_replaces_make_before_break(no_leaks, in_ns, veth, mdir):
    b = in_ns
    mdir.write("xdp.yaml", xdp_manifest("fw", mdir.bytecode(XDP_O)))
    b.run("apply", mdir.source, "--auto-approve")
    old = get(b, "XdpProgram/fw[eth0]")["kernel"]["prog_id"]

    mdir.write(
        "xdp.yaml",
        xdp_manifest("fw", mdir.bytecode(TEST_BPF / "xdp_counter.o"), function="xdp_count"),
    )
    plan = b.run("plan", mdir.source).stdout
    assert "# XdpProgram/fw[eth0] must be replaced" in plan
    assert "# forces replacement" in plan
    assert "Plan: 1 to add, 0 to change, 1 to destroy." in plan
    out = b.run("apply", mdir.source, "--auto-approve").stdout
    assert "Replacement complete" in out
    new = get(b, "XdpProgram/fw[eth0]")["kernel"]["prog_id"]
    assert new != old
    assert xdp_prog_on(veth.ns_a, "eth0") == new
    support.wait_gone(support.prog_ids, support.prog_ids() - {old}, "old program")


def test_priority_change_on_single_xdp_is_in_place(no_leaks, in_ns, mdir):
    b = in_ns
    mdir.write("xdp.yaml", xdp_manifest("fw", mdir.bytecode(XDP_O), priority=55))
    b.run("apply", mdir.source, "--auto-approve")
    before = get(b, "XdpProgram/fw[eth0]")["kernel"]["prog_id"]
    mdir.write("xdp.yaml", xdp_manifest("fw", mdir.bytecode(XDP_O), priority=60))
    plan = b.run("plan", mdir.source).stdout
    assert "will be updated in-place" in plan and "~ priority        = 55 -> 60" in plan
    assert (
        "Resources: 0 added, 1 changed, 0 destroyed."
        in b.run("apply", mdir.source, "--auto-approve").stdout
    )
    assert get(b, "XdpProgram/fw[eth0]")["kernel"]["prog_id"] == before


def test_tcx_programs_run_in_priority_order(no_leaks, in_ns, veth, mdir):
    b = in_ns
    bc = mdir.bytecode(TCX_O)
    mdir.write("b.yaml", tcx_manifest("second", bc, priority=20))
    b.run("apply", mdir.source, "--auto-approve")
    mdir.write("a.yaml", tcx_manifest("first", bc, priority=10))
    mdir.write("c.yaml", tcx_manifest("third", bc, priority=30))
    b.run("apply", mdir.source, "--auto-approve")
    ids = [
        get(b, f"TcxProgram/{n}[eth0]")["kernel"]["prog_id"] for n in ("first", "second", "third")
    ]
    # The kernel's order of the hook (BPF_PROG_QUERY): bpftool 7.1 predates tcx and cannot show it.
    from reconciler.kernel.sys import bpf as rawbpf

    chain = rawbpf.tcx_query_prog_ids_in_netns(veth.netns_a, "eth0", "ingress")
    assert chain == ids


def test_foreign_xdp_program_is_a_conflict_and_never_replaced(no_leaks, in_ns, veth, mdir):
    b = in_ns
    support.sh(
        "ip",
        "-n",
        veth.ns_a,
        "link",
        "set",
        "dev",
        "eth0",
        "xdpgeneric",
        "obj",
        str(TEST_BPF / "xdp_pass.o"),
        "sec",
        "xdp",
    )
    try:
        foreign = xdp_prog_on(veth.ns_a, "eth0")
        assert foreign
        mdir.write("xdp.yaml", xdp_manifest("fw", mdir.bytecode(XDP_O)))
        p = b.run("plan", mdir.source, expect=1)
        assert f"already runs XDP program id {foreign}" in p.stdout + p.stderr
        b.run("apply", mdir.source, "--auto-approve", expect=1)
        assert xdp_prog_on(veth.ns_a, "eth0") == foreign
        assert not b.root.exists() or not any(b.root.rglob("prog"))
    finally:
        support.sh("ip", "-n", veth.ns_a, "link", "set", "dev", "eth0", "xdpgeneric", "off")


def test_missing_interface_is_a_plan_error_naming_the_manifest(no_leaks, in_ns, mdir):
    mdir.write("xdp.yaml", xdp_manifest("fw", mdir.bytecode(XDP_O), iface="eth9"))
    p = in_ns.run("plan", mdir.source, expect=1)
    err = p.stdout + p.stderr
    assert "XdpProgram/fw[eth9] (manifests/xdp.yaml:" in err
    assert "interface 'eth9' does not exist" in err and "eth0" in err
    in_ns.run("apply", mdir.source, "--auto-approve", expect=1)
    assert not in_ns.root.exists() or not any(in_ns.root.rglob("prog"))


def test_verifier_rejection_shows_log_and_changes_nothing(no_leaks, in_ns, mdir):
    b = in_ns
    good = mdir.bytecode(TCX_O)
    mdir.write("ok.yaml", tcx_manifest("ok", good))
    mdir.write(
        "bad.yaml", xdp_manifest("bad", mdir.bytecode(TEST_BPF / "reject.o"), function="xdp_reject")
    )
    progs = support.prog_ids()
    p = b.run("apply", mdir.source, "--auto-approve", expect=1)
    # The plan apply makes first already runs the verifier: its error is the plan's.
    assert "XdpProgram/bad[eth0] (manifests/bad.yaml:1): the verifier rejected" in p.stdout
    assert "the plan has 1 error(s); nothing was changed" in p.stderr
    support.wait_gone(support.prog_ids, progs, "programs after a rejected apply")
    assert not b.root.exists() or not any(b.root.rglob("prog"))
    assert json.loads(b.run("list", "--json").stdout)["attachments"] == []


def test_apply_without_tty_or_auto_approve_refuses(no_leaks, in_ns, mdir):
    mdir.write("xdp.yaml", xdp_manifest("fw", mdir.bytecode(XDP_O)))
    p = in_ns.run("apply", mdir.source, expect=1)
    assert "no terminal" in p.stderr and "--auto-approve" in p.stderr
    assert not in_ns.root.exists() or not any(in_ns.root.rglob("prog"))


def _apply_on_tty(b, source: str, answer: str) -> str:
    cmd = [
        "nsenter",
        f"--net=/run/netns/{b.netns}",
        "--",
        support.BPFMAN,
        "--bpffs-root",
        str(b.root),
        "--state-dir",
        str(b.state),
        "apply",
        source,
    ]
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(cmd[0], cmd)
    out = b""
    sent = False
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
        if not sent and b"Enter a value:" in out:
            os.write(fd, answer.encode() + b"\n")
            sent = True
    os.waitpid(pid, 0)
    return out.decode(errors="replace")


def test_prompt_accepts_only_yes(no_leaks, in_ns, mdir):
    mdir.write("xdp.yaml", xdp_manifest("fw", mdir.bytecode(XDP_O)))
    out = _apply_on_tty(in_ns, mdir.source, "y")
    assert "Do you want to perform these actions?" in out and "Apply cancelled." in out
    assert not in_ns.root.exists() or not any(in_ns.root.rglob("prog"))
    out = _apply_on_tty(in_ns, mdir.source, "yes")
    assert "Apply complete! Resources: 1 added" in out


def test_two_roots_never_see_each_other(no_leaks, in_ns, veth, mdir, bpffs_root, tmp_path):
    mdir.write("tcx.yaml", tcx_manifest("t", mdir.bytecode(TCX_O)))
    in_ns.run("apply", mdir.source, "--auto-approve")
    from tests.cli.conftest import Bpfman

    other = Bpfman(bpffs_root.with_name(bpffs_root.name + "-other"), tmp_path / "other", veth.ns_a)
    try:
        assert json.loads(other.run("list", "--json").stdout)["attachments"] == []
        assert "Plan: 1 to add" in other.run("plan", mdir.source).stdout
    finally:
        support.remove_tree(other.root)


def test_git_source_with_ref_and_path_records_revision(no_leaks, bpfman, tmp_path):
    repo = tmp_path / "repo"
    from tests.cli.conftest import ManifestDir

    m = ManifestDir(repo)
    m.write("tp.yaml", tracepoint_manifest("tp", m.bytecode(TP_O), "syscalls/sys_enter_getpid"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "-C", str(repo), "add", "."], check=True)
    subprocess.run([*git, "-C", str(repo), "commit", "-qm", "tp"], check=True)
    rev = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()

    out = bpfman.run(
        "apply", f"file://{repo}", "--ref", "main", "--path", "manifests", "--auto-approve"
    ).stdout
    assert "Resources: 1 added" in out
    entry = get(bpfman, "TracepointProgram/tp[syscalls/sys_enter_getpid]")
    assert entry["revision"] == rev
    assert entry["origin"] == "tp.yaml:1"


def test_second_apply_waits_for_lock_then_names_holder(no_leaks, in_ns, mdir):
    mdir.write("tcx.yaml", tcx_manifest("t", mdir.bytecode(TCX_O)))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; from pathlib import Path; from reconciler.lock import ApplyLock;"
            "ApplyLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(30)",
            str(in_ns.state),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=support.REPO,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        p = in_ns.run("apply", mdir.source, "--auto-approve", "--lock-timeout", "0.5", expect=1)
        assert f"pid {holder.pid}" in p.stderr and "--lock-timeout" in p.stderr
    finally:
        holder.kill()
        holder.wait()
    in_ns.run("apply", mdir.source, "--auto-approve")


def test_list_and_get_show_kernel_ids_and_pins(no_leaks, in_ns, mdir):
    mdir.write("xdp.yaml", xdp_manifest("fw", mdir.bytecode(XDP_O)))
    in_ns.run("apply", mdir.source, "--auto-approve")
    listing = in_ns.run("list").stdout
    assert "XdpProgram/fw[eth0]" in listing and "attached" in listing
    e = get(in_ns, "XdpProgram/fw[eth0]")
    prog = support.bpftool_json("prog", "show", "id", str(e["kernel"]["prog_id"]))
    assert prog["tag"] == e["kernel"]["tag"]
    assert sorted(prog["map_ids"]) == sorted(m["id"] for m in e["kernel"]["maps"])
    for m in e["kernel"]["maps"]:
        assert support.bpftool_json("map", "show", "pinned", m["pin"])["id"] == m["id"]
    text = in_ns.run("get", "XdpProgram/fw[eth0]").stdout
    assert f"prog_id    = {e['kernel']['prog_id']}" in text
