"""``bpfman list --by-hook``: every XDP, TC and TCX hook with its programs in run order and who
put each there — bpfman, another bpfman root, xdp-loader, tc, someone's tcx link — checked
against the kernel's own tools (bpftool, tc, xdp-loader), in namespaces the test creates."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.kernel.sys import bpf as rawbpf
from reconciler.kernel.sys import netns as rawnetns
from tests import support
from tests.cli.conftest import EXAMPLES, TEST_BPF, Bpfman, ManifestDir, tracepoint_manifest

pytestmark = pytest.mark.kernel

XDP_O = EXAMPLES / "bytecode" / "xdp_counter.o"
TCX_O = EXAMPLES / "bytecode" / "tcx_counter.o"
FOREIGN_XDP_O = TEST_BPF / "xdp_pass.o"
FOREIGN_TC_O = TEST_BPF / "tcx_counter.o"


def manifest(kind: str, name: str, bytecode: str, netns: str, **spec: object) -> str:
    extra = "".join(f"  {k}: {v}\n" for k, v in spec.items())
    function = "xdp_stats" if kind == "XdpProgram" else "tcx_stats"
    return f"""apiVersion: bpfman.io/v1alpha1
kind: {kind}
metadata: {{name: {name}}}
spec:
  bpffunctionname: {function}
  bytecode: {{path: {bytecode}}}
  interfaceselector: {{interfaces: [eth0]}}
  netns: {netns}
{extra}"""


def by_hook(b: Bpfman) -> dict:
    doc = json.loads(b.run("list", "--by-hook", "--json").stdout)
    assert doc["format_version"] == "1.0"
    return doc


def hook(doc: dict, netns: str, kind: str, direction: str | None = None) -> dict:
    (found,) = [
        h
        for h in doc["hooks"]
        if h["netns"] == netns and h["type"] == kind and h["direction"] == direction
    ]
    return found


def bpftool_net(ns: str) -> dict:
    out = support.sh("bpftool", "-j", "net", netns=ns).stdout
    return json.loads(out)[0]


def tc_filters(ns: str, dev: str = "eth0", direction: str = "ingress") -> list[dict]:
    out = support.sh("tc", "-j", "filter", "show", "dev", dev, direction, netns=ns).stdout
    return [f for f in json.loads(out or "[]") if f.get("options", {}).get("prog", {}).get("id")]


@pytest.fixture
def other_root(state_dir: Path) -> Iterator[Bpfman]:
    """A second bpfman with its own bpffs root and state: "another bpfman root"."""
    root = Path("/sys/fs/bpf") / support.unique("bpfman-other-")
    b = Bpfman(root, state_dir.parent / "other-state")
    try:
        yield b
    finally:
        b.run("destroy", "--auto-approve", expect=None)
        support.remove_tree(root)


@pytest.fixture
def foreign_tcx(veth) -> Iterator[object]:
    """Creates someone else's tcx link (unpinned, held by this process) on demand."""
    held: list[int] = []
    pin = f"/sys/fs/bpf/{support.unique('hooks-foreign-')}"

    def make(direction: str = "ingress") -> int:
        support.sh("bpftool", "prog", "load", str(FOREIGN_TC_O), pin, "type", "classifier")
        try:
            prog_fd = rawbpf.obj_get(pin)
        finally:
            os.unlink(pin)  # the link alone keeps the program: nothing of it stays pinned
        try:
            with rawnetns.enter(veth.netns_a):
                idx = socket.if_nametoindex("eth0")
                atype = rawbpf.TCX_INGRESS if direction == "ingress" else rawbpf.TCX_EGRESS
                link_fd = rawbpf.link_create_tcx(prog_fd, idx, atype, 0, 0, 0)
        finally:
            os.close(prog_fd)
        held.append(link_fd)
        with rawbpf.opened(os.dup(link_fd)) as fd:
            return rawbpf.link_info(fd).id

    try:
        yield make
    finally:
        for fd in held:
            os.close(fd)
        if os.path.exists(pin):
            os.unlink(pin)


def test_xdp_hooks_show_bpfman_and_xdp_loader_programs_with_their_owners(
    no_leaks, bpfman, veth, mdir
):
    mdir.write(
        "fw.yaml",
        manifest("XdpProgram", "fw", mdir.bytecode(XDP_O), veth.netns_a, priority=10),
    )
    bpfman.run("apply", mdir.source, "--auto-approve")
    # Someone else's XDP program on the peer: xdp-loader (it falls back to a plain netlink
    # attach where the kernel refuses its dispatcher's freplace).
    loaded = support.sh(
        "xdp-loader", "load", "-m", "skb", veth.if_b, str(FOREIGN_XDP_O), netns=veth.ns_b
    )
    try:
        doc = by_hook(bpfman)
        ours = hook(doc, veth.netns_a, "xdp")
        (xdp_a,) = bpftool_net(veth.ns_a)["xdp"]
        assert ours["ifname"] == "eth0" and ours["ifindex"] == xdp_a["ifindex"]
        assert ours["mode"] == {"driver": "native", "generic": "generic"}[xdp_a["mode"]]
        (p,) = ours["programs"]
        assert p["prog_id"] == xdp_a["id"] and p["prog_name"] == "xdp_stats"
        assert p["owner"] == {
            "kind": "bpfman",
            "address": f"XdpProgram/fw[{veth.ns_a}:eth0]",  # named after the namespace
            "origin": p["owner"]["origin"],
            "recorded": True,
        }
        assert p["owner"]["origin"].endswith("fw.yaml:1")
        assert ours["managed"] and p["drift"] is None and ours["missing"] == []

        theirs = hook(doc, veth.netns_b, "xdp")
        status = support.sh("xdp-loader", "status", veth.if_b, netns=veth.ns_b).stdout
        (xdp_b,) = bpftool_net(veth.ns_b)["xdp"]
        (q,) = theirs["programs"]
        assert q["prog_id"] == xdp_b["id"] and str(q["prog_id"]) in status
        assert q["prog_name"] == "xdp_foreign" and theirs["mode"] == "generic"
        assert q["owner"]["kind"] == "other" and not theirs["managed"] and q["drift"] is None

        text = bpfman.run("list", "--by-hook").stdout
        assert f"eth0 (netns {veth.netns_a}) XDP, {ours['mode']}" in text
        assert f"xdp_stats  id {p['prog_id']}" in text
        assert f"bpfman XdpProgram/fw[{veth.ns_a}:eth0] (" in text
        assert f"{veth.if_b} (netns {veth.netns_b}) XDP, generic" in text
    finally:
        support.sh("xdp-loader", "unload", "-a", veth.if_b, netns=veth.ns_b, check=False)
    assert loaded.returncode == 0


def test_drift_an_emptied_slot_and_a_foreign_program_on_a_managed_xdp_hook(
    no_leaks, bpfman, veth, mdir
):
    mdir.write(
        "fw.yaml", manifest("XdpProgram", "fw", mdir.bytecode(XDP_O), veth.netns_a, priority=50)
    )
    bpfman.run("apply", mdir.source, "--auto-approve")
    ours_id = by_hook(bpfman)
    (p,) = hook(ours_id, veth.netns_a, "xdp")["programs"]
    # Someone detaches bpfman's program and attaches their own.
    support.sh("ip", "link", "set", "dev", "eth0", "xdp", "off", netns=veth.ns_a)
    try:
        doc = by_hook(bpfman)
        assert not [h for h in doc["hooks"] if h["netns"] == veth.netns_a and h["programs"]]
        (emptied,) = [h for h in doc["hooks"] if h["netns"] == veth.netns_a]
        assert emptied["type"] == "xdp" and emptied["ifname"] == "eth0"
        (m,) = emptied["missing"]
        assert m["address"] == f"XdpProgram/fw[{veth.ns_a}:eth0]" and m["prog_id"] == p["prog_id"]
        assert "not attached" in m["reason"]

        support.sh(
            "ip", "link", "set", "dev", "eth0", "xdpgeneric", "obj", str(FOREIGN_XDP_O),
            "sec", "xdp", netns=veth.ns_a,
        )  # fmt: skip
        doc = by_hook(bpfman)
        h = hook(doc, veth.netns_a, "xdp")
        (xdp_a,) = bpftool_net(veth.ns_a)["xdp"]
        (q,) = h["programs"]
        assert q["prog_id"] == xdp_a["id"] != p["prog_id"]
        assert q["owner"]["kind"] == "other" and q["drift"] and h["managed"]
        assert [m["address"] for m in h["missing"]] == [f"XdpProgram/fw[{veth.ns_a}:eth0]"]
        text = bpfman.run("list", "--by-hook").stdout
        assert "[drift: not bpfman's, on a hook it manages]" in text
        assert (
            f"XdpProgram/fw[{veth.ns_a}:eth0]" in text
            and "[drift: pinned, but not attached" in text
        )
    finally:
        support.sh("ip", "link", "set", "dev", "eth0", "xdpgeneric", "off", netns=veth.ns_a)


def test_tc_and_tcx_hooks_in_run_order_with_every_owner(
    no_leaks, bpfman, other_root, foreign_tcx, veth, mdir
):
    ns = veth.netns_a
    # tc's own filter first (pref 10), then bpfman's TcProgram (its filter is at pref 50).
    support.sh("tc", "qdisc", "add", "dev", "eth0", "clsact", netns=veth.ns_a)
    support.sh(
        "tc", "filter", "add", "dev", "eth0", "ingress", "pref", "10", "bpf", "da",
        "obj", str(FOREIGN_TC_O), "sec", "tc", netns=veth.ns_a,
    )  # fmt: skip
    bc = mdir.bytecode(TCX_O)
    mdir.write("tc.yaml", manifest("TcProgram", "tcf", bc, ns, direction="ingress", priority=5))
    mdir.write("tcx.yaml", manifest("TcxProgram", "tcx", bc, ns, direction="ingress", priority=50))
    bpfman.run("apply", mdir.source, "--auto-approve")
    # Another bpfman root's tcx link, then someone else's, on the same hook.
    other = ManifestDir(mdir.root.parent / "other")
    other.write(
        "x.yaml",
        manifest(
            "TcxProgram", "theirs", other.bytecode(TCX_O), ns, direction="ingress", priority=900
        ),
    )
    other_root.run("apply", other.source, "--auto-approve")
    foreign_link = foreign_tcx("ingress")

    doc = by_hook(bpfman)

    # TCX: order, ids and links as the kernel lists them.
    tcx = hook(doc, ns, "tcx", "ingress")
    kernel_order = rawbpf.tcx_query_prog_ids_in_netns(ns, "eth0", "ingress")
    assert [p["prog_id"] for p in tcx["programs"]] == kernel_order
    links = {
        li["id"]: li["prog_id"]
        for li in support.bpftool_json("link", "show")  # type: ignore[union-attr]
    }
    for p in tcx["programs"]:
        assert links[p["link_id"]] == p["prog_id"]
    owners = {p["link_id"]: p["owner"] for p in tcx["programs"]}
    assert owners[foreign_link] == {"kind": "other", "what": "a tcx link of someone else"}
    kinds = sorted(o["kind"] for o in owners.values())
    assert kinds == ["bpfman", "bpfman_root", "other"]
    (theirs,) = [o for o in owners.values() if o["kind"] == "bpfman_root"]
    assert theirs["root"] == str(other_root.root)
    assert theirs["address"] == f"TcxProgram/theirs[{veth.ns_a}:eth0]"
    (mine,) = [o for o in owners.values() if o["kind"] == "bpfman"]
    assert mine["address"] == f"TcxProgram/tcx[{veth.ns_a}:eth0]" and mine["origin"].endswith(
        "tcx.yaml:1"
    )
    assert tcx["managed"]
    assert [p["drift"] is not None for p in tcx["programs"]] == [
        p["owner"]["kind"] != "bpfman" for p in tcx["programs"]
    ]

    # TC: the filters in pref order, as `tc filter show` lists them.
    tc = hook(doc, ns, "tc", "ingress")
    shown = tc_filters(veth.ns_a)
    assert [(p["tc_pref"], p["prog_id"]) for p in tc["programs"]] == [
        (f["pref"], f["options"]["prog"]["id"]) for f in shown
    ]
    first, second = tc["programs"]
    assert first["tc_pref"] == 10 and first["direct_action"] is True
    assert first["owner"]["kind"] == "other" and first["drift"]
    assert second["tc_pref"] == 50 and second["tc_handle"] == 0xB7F
    assert second["owner"]["address"] == f"TcProgram/tcf[{veth.ns_a}:eth0]"

    # The text: one block per hook, tcx before tc, in run order.
    text = bpfman.run("list", "--by-hook").stdout
    blocks = text.split(f"eth0 (netns {ns}) ingress ")
    assert blocks[1].startswith("TCX") and blocks[2].startswith("TC")
    assert "a tcx link of someone else" in blocks[1]
    assert f"bpfman root {other_root.root} TcxProgram/theirs[{veth.ns_a}:eth0]" in blocks[1]
    assert "pref 10 handle 0x1" in blocks[2] and "direct-action" in blocks[2]

    # Read-only: nothing changed on the hooks.
    assert rawbpf.tcx_query_prog_ids_in_netns(ns, "eth0", "ingress") == kernel_order
    assert tc_filters(veth.ns_a) == shown


def test_event_links_are_grouped_by_event(no_leaks, bpfman, mdir):
    bc = mdir.bytecode(EXAMPLES / "bytecode" / "tracepoint_counter.o")
    mdir.write("tp.yaml", tracepoint_manifest("tp", bc, "syscalls/sys_enter_getpid"))
    bpfman.run("apply", mdir.source, "--auto-approve")
    doc = by_hook(bpfman)
    (ev,) = [e for e in doc["events"] if e["event"] == "tracepoint sys_enter_getpid"]
    mine = [p for p in ev["programs"] if p["owner"]["kind"] == "bpfman"]
    (p,) = mine
    assert p["owner"]["address"] == "TracepointProgram/tp[syscalls/sys_enter_getpid]"
    shown = {li["id"]: li for li in support.bpftool_json("link", "show")}  # type: ignore[union-attr]
    assert shown[p["link_id"]]["prog_id"] == p["prog_id"]
    assert "tracepoint sys_enter_getpid" in bpfman.run("list", "--by-hook").stdout
