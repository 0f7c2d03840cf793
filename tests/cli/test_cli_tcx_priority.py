"""A TCX program's priority is its place in the hook's chain, whatever manifest kind declares it:
changing it inside a BpfApplication moves the program's link to its new place, as for a
TcxProgram. Through the ``bpfman`` executable, in namespaces the test creates."""

from __future__ import annotations

import json

import pytest

from reconciler.kernel.sys import bpf as rawbpf
from tests import support
from tests.cli.conftest import EXAMPLES, TEST_BPF, tcx_manifest

pytestmark = pytest.mark.kernel

TCX_O = EXAMPLES / "bytecode" / "tcx_counter.o"
TCX2_O = TEST_BPF / "tcx_counter.o"
APP = "BpfApplication/chain[tcx_stats:eth0/ingress]"


def app_manifest(bytecode: str, priority: int) -> str:
    return f"""apiVersion: bpfman.io/v1alpha1
kind: BpfApplication
metadata: {{name: chain, namespace: team-a}}
spec:
  byteCode: {{path: {bytecode}}}
  programs:
    - name: tcx_stats
      type: TCX
      tcx:
        links:
          - interfaceSelector: {{interfaces: [eth0]}}
            direction: Ingress
            priority: {priority}
"""


def get(b, address: str) -> dict:
    return json.loads(b.run("get", address, "--json").stdout)


def tcx_links() -> dict[int, int]:
    """link id -> program id of every tcx link, as bpftool lists them (7.1 names the type by its
    number, BPF_LINK_TYPE_TCX = 11, and shows no interface)."""
    return {
        link["id"]: link["prog_id"]
        for link in support.bpftool_json("link", "show")  # type: ignore[union-attr]
        if link.get("type") in ("tcx", 11)
    }


def test_priority_change_in_an_application_moves_its_tcx_link(no_leaks, bpfman, veth, mdir):
    b = bpfman
    b.netns = veth.ns_a
    mdir.write("app.yaml", app_manifest(mdir.bytecode(TCX_O), priority=10))
    other = mdir.bytecode(TCX2_O, "other.o")
    mdir.write("other.yaml", tcx_manifest("other", other, priority=20, function="tcx_count"))
    b.run("apply", mdir.source, "--auto-approve")
    app, oth = get(b, APP)["kernel"], get(b, "TcxProgram/other[eth0]")["kernel"]
    # The kernel's run order (BPF_PROG_QUERY; bpftool 7.1 predates tcx and cannot show it).
    chain = rawbpf.tcx_query_prog_ids_in_netns(veth.netns_a, "eth0", "ingress")
    assert chain == [app["prog_id"], oth["prog_id"]]
    assert {app["link_id"]: app["prog_id"], oth["link_id"]: oth["prog_id"]}.items() <= (
        tcx_links().items()
    )

    mdir.write("app.yaml", app_manifest(mdir.bytecode(TCX_O), priority=30))
    plan = b.run("plan", mdir.source).stdout
    assert f"# {APP} must be replaced" in plan, plan
    assert "# forces replacement" in plan and "Plan: 1 to add, 0 to change, 1 to destroy." in plan
    out = b.run("apply", mdir.source, "--auto-approve").stdout
    assert "Resources: 1 added, 0 changed, 1 destroyed." in out
    moved = get(b, APP)["kernel"]
    # Now behind the other program: the same bytecode, a new link at the new place.
    chain = rawbpf.tcx_query_prog_ids_in_netns(veth.netns_a, "eth0", "ingress")
    assert chain == [oth["prog_id"], moved["prog_id"]]
    assert moved["link_id"] != app["link_id"]
    links = tcx_links()  # bpftool: the old link is gone, the other program's link untouched
    assert app["link_id"] not in links
    assert links[moved["link_id"]] == moved["prog_id"] and links[oth["link_id"]] == oth["prog_id"]
    assert b.run("plan", mdir.source, "--detailed-exitcode").returncode == 0
    b.run("destroy", "--auto-approve")
    assert rawbpf.tcx_query_prog_ids_in_netns(veth.netns_a, "eth0", "ingress") == []
