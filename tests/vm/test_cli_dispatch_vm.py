"""Several XdpPrograms and TcPrograms on one interface through `bpfman plan/apply`, on the VM
tier's kernel (freplace works there): dispatchers, in-place reorder keeping program ids, and a
program `xdp-loader load` adds kept as foreign. Checked with xdp-loader, tc and bpftool.

Python starts slowly under TCG: every bpfman invocation counts, so one test walks the whole story.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
XDP_O = REPO / "manifests" / "examples" / "bytecode" / "xdp_counter.o"
TC_O = REPO / "manifests" / "examples" / "bytecode" / "tcx_counter.o"


def xdp(name: str, prio: int, netns: str) -> str:
    return f"""apiVersion: bpfman.io/v1alpha1
kind: XdpProgram
metadata: {{name: {name}}}
spec:
  bpffunctionname: xdp_stats
  bytecode: {{path: xdp_counter.o}}
  interfaceselector: {{interfaces: [eth0]}}
  netns: {netns}
  priority: {prio}
"""


def tc(name: str, prio: int, netns: str) -> str:
    return f"""apiVersion: bpfman.io/v1alpha1
kind: TcProgram
metadata: {{name: {name}}}
spec:
  bpffunctionname: tcx_stats
  bytecode: {{path: tcx_counter.o}}
  interfaceselector: {{interfaces: [eth0]}}
  netns: {netns}
  direction: ingress
  priority: {prio}
"""


@pytest.fixture
def veth() -> Iterator[support.VethPair]:
    # The guest's kernel cannot autoload modules (its helper runs outside the guest's root).
    subprocess.run(["modprobe", "-a", "veth", "sch_ingress", "cls_bpf"], check=True)
    pair = support.create_veth_pair()
    try:
        yield pair
    finally:
        support.sh("xdp-loader", "unload", "--all", "eth0", netns=pair.ns_a, check=False)
        support.delete_veth_pair(pair)
        for d in Path("/sys/fs/bpf/xdp").glob("dispatch-*"):
            support.remove_tree(d)


def loader_rows(ns: str) -> list[tuple[int, str]]:
    out = support.sh("xdp-loader", "status", "eth0", netns=ns).stdout
    return [(int(m[1]), m[2]) for m in re.finditer(r"^\s*=>\s+(\d+)\s+(\S+)", out, re.M)]


def test_dispatchers_through_the_cli(no_leaks: None, veth, tmp_path: Path) -> None:
    ns = veth.netns_a
    src = tmp_path / "src"
    src.mkdir()
    (src / "xdp_counter.o").write_bytes(XDP_O.read_bytes())
    (src / "tcx_counter.o").write_bytes(TC_O.read_bytes())
    root = Path("/sys/fs/bpf") / support.unique("bpfman-disp-")
    base = [support.BPFMAN, "--bpffs-root", str(root), "--state-dir", str(tmp_path / "st")]

    def bpfman(*args: str) -> str:
        p = subprocess.run([*base, *args], capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr
        return p.stdout

    def write(prios: dict[str, int]) -> None:
        for f in src.glob("*.yaml"):
            f.unlink()
        for name, prio in prios.items():
            make = tc if name.startswith("tc") else xdp
            (src / f"{name}.yaml").write_text(make(name, prio, ns))

    try:
        write({"a": 10, "b": 20, "c": 30, "tc-x": 10, "tc-y": 20})
        out = bpfman("apply", str(src), "--auto-approve")
        assert "Resources: 5 added" in out
        assert [p for p, _ in loader_rows(veth.ns_a)] == [10, 20, 30]
        listed = {
            e["address"]: e["kernel"] for e in json.loads(bpfman("list", "--json"))["attachments"]
        }
        ids = {a: k["prog_id"] for a, k in listed.items()}
        assert all(k["attached"] for k in listed.values())
        filters = json.loads(
            support.sh(
                "tc", "-j", "filter", "show", "dev", "eth0", "ingress", netns=veth.ns_a
            ).stdout
        )
        assert len([f for f in filters if f.get("options", {}).get("prog")]) == 1  # one dispatcher

        # Reorder everything: in place, the same program ids, one plan line per program.
        write({"a": 30, "b": 20, "c": 10, "tc-x": 20, "tc-y": 10})
        plan = bpfman("plan", str(src))
        assert plan.count("will be updated in-place") == 4  # b keeps its priority
        assert "Plan: 0 to add, 4 to change, 0 to destroy." in plan
        bpfman("apply", str(src), "--auto-approve")
        listed = {
            e["address"]: e["kernel"] for e in json.loads(bpfman("list", "--json"))["attachments"]
        }
        assert {a: k["prog_id"] for a, k in listed.items()} == ids
        for a, k in listed.items():  # bpftool still knows the very same programs
            assert support.bpftool_json("prog", "show", "id", str(k["prog_id"]))["id"] == ids[a]
        positions = {
            a.split("/")[1].split("[")[0]: k["attach_point"]["position"] for a, k in listed.items()
        }
        assert (positions["c"], positions["b"], positions["a"]) == (0, 1, 2)
        assert (positions["tc-y"], positions["tc-x"]) == (0, 1)

        # A program xdp-loader adds (in the mode of our dispatcher: native on veth) is foreign:
        # kept by our next reorder, left by our destroy.
        foreign = str(REPO / "tests" / "bpf" / "xdp_pass.o")
        support.sh(
            "xdp-loader", "load", "-m", "native", "-P", "15", "eth0", foreign, netns=veth.ns_a
        )
        write({"a": 5, "b": 20, "c": 10, "tc-x": 20, "tc-y": 10})
        bpfman("apply", str(src), "--auto-approve")
        assert [p for p, _ in loader_rows(veth.ns_a)] == [5, 10, 15, 20]
        assert "No changes." in bpfman("plan", str(src))
        bpfman("destroy", "--auto-approve")
        assert [p for p, _ in loader_rows(veth.ns_a)] == [15]
    finally:
        subprocess.run([*base, "destroy", "--auto-approve"], capture_output=True)
        support.remove_tree(root)
