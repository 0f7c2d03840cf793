"""TcProgram on a kernel without freplace (this host): a single program attaches directly as a
cls_bpf filter, swapped in place on replacement; several on one hook are a plan error."""

from __future__ import annotations

import json

import pytest

from tests import support
from tests.cli.conftest import EXAMPLES, TEST_BPF

pytestmark = pytest.mark.kernel


def tc_manifest(name: str, bytecode: str, function: str = "tcx_stats", priority: int = 50) -> str:
    return f"""apiVersion: bpfman.io/v1alpha1
kind: TcProgram
metadata: {{name: {name}}}
spec:
  bpffunctionname: {function}
  bytecode: {{path: {bytecode}}}
  interfaceselector: {{interfaces: [eth0]}}
  direction: ingress
  priority: {priority}
"""


def tc_filters(ns: str) -> list[dict]:
    out = support.sh("tc", "-j", "filter", "show", "dev", "eth0", "ingress", netns=ns).stdout
    return [f for f in json.loads(out or "[]") if f.get("options", {}).get("prog", {}).get("id")]


@pytest.fixture
def b(bpfman, veth):
    bpfman.netns = veth.ns_a
    return bpfman


def test_single_tc_program_attaches_directly_and_swaps_in_place(no_leaks, b, veth, mdir):
    mdir.write(
        "tc.yaml", tc_manifest("tc-counter", mdir.bytecode(EXAMPLES / "bytecode" / "tcx_counter.o"))
    )
    out = b.run("apply", mdir.source, "--auto-approve").stdout
    assert "Resources: 1 added" in out
    e = json.loads(b.run("get", "TcProgram/tc-counter[eth0]", "--json").stdout)
    (f,) = tc_filters(veth.ns_a)  # one filter of ours, independent view: tc
    assert f["options"]["prog"]["id"] == e["kernel"]["prog_id"]
    assert f["options"].get("direct-action") or "da" in json.dumps(f)
    support.send_frames(veth.netns_b, veth.if_b, 9)
    (m,) = [m for m in e["kernel"]["maps"] if m["name"] == "tcx_stats_map"]
    assert support.map_u64(f"id {m['id']}") >= 9
    assert "No changes." in b.run("plan", mdir.source).stdout

    # New bytecode: the filter's program is swapped in place, still one filter.
    mdir.write(
        "tc.yaml", tc_manifest("tc-counter", mdir.bytecode(TEST_BPF / "tcx_counter.o"), "tcx_count")
    )
    assert "must be replaced" in b.run("plan", mdir.source).stdout
    b.run("apply", mdir.source, "--auto-approve")
    new = json.loads(b.run("get", "TcProgram/tc-counter[eth0]", "--json").stdout)["kernel"]
    (f,) = tc_filters(veth.ns_a)
    assert f["options"]["prog"]["id"] == new["prog_id"] != e["kernel"]["prog_id"]

    b.run("destroy", "--auto-approve")
    assert tc_filters(veth.ns_a) == []


def test_two_tc_programs_on_one_hook_need_freplace(no_leaks, b, mdir):
    bc = mdir.bytecode(EXAMPLES / "bytecode" / "tcx_counter.o")
    mdir.write("a.yaml", tc_manifest("a", bc, priority=10))
    mdir.write("b.yaml", tc_manifest("b", bc, priority=20))
    p = b.run("plan", mdir.source, expect=1)
    err = p.stdout + p.stderr
    assert "TC ingress on eth0: 2 programs want it" in err
    assert "needs freplace (BPF_PROG_TYPE_EXT)" in err
