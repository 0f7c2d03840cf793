"""`bpfman list --by-hook` on the VM tier's kernel, where bpfman's XDP and TC dispatchers run:
the chains, in run order with their priorities and owners, against `xdp-loader status` (which
reads the same libxdp-compatible dispatcher), `tc filter show` and bpftool, with a program
`xdp-loader load` put on bpfman's hook shown as someone else's.

Python starts slowly under TCG: one test walks the whole story."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests import support
from tests.vm.test_cli_dispatch_vm import REPO, TC_O, XDP_O, loader_rows, tc, veth, xdp

pytestmark = pytest.mark.vm
__all__ = ["veth"]  # the fixture, shared with test_cli_dispatch_vm


def test_hook_chains_are_shown_in_run_order_with_their_owners(
    no_leaks: None, veth, tmp_path: Path, vm_bytecode: Path, getpid_function: str
) -> None:
    ns = veth.netns_a
    src = tmp_path / "src"
    src.mkdir()
    (src / "kernel_probes.o").write_bytes((vm_bytecode / "kernel_probes.o").read_bytes())
    (src / "fentry.yaml").write_text(
        "apiVersion: bpfman.io/v1alpha1\nkind: FentryProgram\nmetadata: {name: fe}\nspec:\n"
        "  bpffunctionname: fentry_count\n  bytecode: {path: kernel_probes.o}\n"
        f"  func_name: {getpid_function}\n"
    )
    (src / "xdp_counter.o").write_bytes(XDP_O.read_bytes())
    (src / "tcx_counter.o").write_bytes(TC_O.read_bytes())
    for name, prio in {"a": 30, "b": 10, "c": 20}.items():
        (src / f"{name}.yaml").write_text(xdp(name, prio, ns))
    for name, prio in {"tc-x": 20, "tc-y": 10}.items():
        (src / f"{name}.yaml").write_text(tc(name, prio, ns))
    root = Path("/sys/fs/bpf") / support.unique("bpfman-hooks-")
    base = [support.BPFMAN, "--bpffs-root", str(root), "--state-dir", str(tmp_path / "st")]

    def bpfman(*args: str) -> str:
        p = subprocess.run([*base, *args], capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr
        return p.stdout

    try:
        bpfman("apply", str(src), "--auto-approve")
        foreign = str(REPO / "tests" / "bpf" / "xdp_pass.o")
        support.sh(
            "xdp-loader", "load", "-m", "native", "-P", "15", "eth0", foreign, netns=veth.ns_a
        )
        doc = json.loads(bpfman("list", "--by-hook", "--json"))
        hooks = {(h["type"], h["direction"]): h for h in doc["hooks"] if h["netns"] == ns}

        # XDP: the dispatcher's chain in run order, as xdp-loader reads the same dispatcher.
        chain = hooks[("xdp", None)]["programs"]
        assert [(p["priority"], p["prog_name"]) for p in chain] == [
            (prio, name[:15]) for prio, name in loader_rows(veth.ns_a)
        ]
        assert [p["priority"] for p in chain] == [10, 15, 20, 30]
        owners = [p["owner"].get("address") or p["owner"]["kind"] for p in chain]
        assert [owners[i].split("[")[0] for i in (0, 2, 3)] == [
            "XdpProgram/b",
            "XdpProgram/c",
            "XdpProgram/a",
        ]
        assert chain[1]["owner"]["kind"] != "bpfman"  # xdp-loader's, in bpfman's dispatcher
        assert chain[1]["drift"]  # someone else's program on a hook bpfman manages
        status = support.sh("xdp-loader", "status", "eth0", netns=veth.ns_a).stdout
        for p in chain:  # the very program ids xdp-loader lists
            assert re.search(rf"\b{p['prog_id']}\b", status), (p, status)

        # TC: one dispatcher filter (tc's view), its chain in priority order.
        filters = json.loads(
            support.sh(
                "tc", "-j", "filter", "show", "dev", "eth0", "ingress", netns=veth.ns_a
            ).stdout
        )
        disp_ids = {f["options"]["prog"]["id"] for f in filters if f.get("options", {}).get("prog")}
        tc_hook = hooks[("tc", "ingress")]
        assert {d["prog_id"] for d in tc_hook["dispatchers"]} == disp_ids
        assert [
            (p["priority"], p["owner"]["address"].split("[")[0]) for p in tc_hook["programs"]
        ] == [
            (10, "TcProgram/tc-y"),
            (20, "TcProgram/tc-x"),
        ]
        for p in tc_hook["programs"]:  # bpftool knows each program by that id
            assert (
                support.bpftool_json("prog", "show", "id", str(p["prog_id"]))["id"] == p["prog_id"]
            )

        # Events: the fentry link, named by its function (the link gives only a BTF id).
        events = [e["event"] for e in doc["events"]]
        assert f"fentry {getpid_function}" in events, events

        text = bpfman("list", "--by-hook")
        assert "eth0" in text and "TcProgram/tc-y" in text and "XdpProgram/b" in text
    finally:
        subprocess.run([*base, "destroy", "--auto-approve"], capture_output=True)
        support.remove_tree(root)
