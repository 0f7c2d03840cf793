"""TcProgram and the applications' type TC: programs behind the TC dispatcher, one attachment per
interface, whose point is the hook (TcHook) the planner hands to ``Kernel.dispatch``."""

from __future__ import annotations

import hashlib
from pathlib import Path

from reconciler.address import Address
from reconciler.kernel.types import ProgramSpec, ProgType, TcHook
from reconciler.spec import load_desired
from tests.unit.spec_support import StubHost, problems_of, write_tree

TC = """
apiVersion: bpfman.io/v1alpha1
kind: TcProgram
metadata:
  name: tc-count
spec:
  bpffunctionname: tc_count
  bytecode:
    path: ../bytecode/spec_progs.o
  interfaceselector:
    interfaces: [eth0, eth1]
  direction: ingress
  priority: 50
"""

APP = """
apiVersion: bpfman.io/v1alpha1
kind: BpfApplication
metadata: {name: app}
spec:
  byteCode: {path: ../bytecode/spec_progs.o}
  programs:
    - name: cls_legacy
      type: TC
      tc:
        links:
          - interfaceSelector: {interfaces: [eth0]}
            netnsPath: /run/netns/blue
            direction: Egress
            priority: 7
            proceedOn: [OK, Shot, DispatcherReturn]
"""


def _digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_tcprogram_expands_to_one_hook_per_interface(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"tc.yaml": TC})
    state = load_desired(root, StubHost())
    obj = (tmp_path / "bytecode" / "spec_progs.o").resolve()
    assert [str(a.address) for a in state.attachments] == [
        "TcProgram/tc-count[eth0]",
        "TcProgram/tc-count[eth1]",
    ]
    a = state.by_address()[Address("TcProgram", "tc-count", "eth1")]
    assert a.program == ProgramSpec(str(obj), "tc_count", ProgType.TC)
    assert a.point == TcHook("eth1", "ingress")
    # proceedon defaults to bpfman's [pipe, dispatcher_return]
    assert (a.priority, a.proceedon) == (50, ("pipe", "dispatcher_return"))
    assert a.attributes == {
        "bytecode": "../bytecode/spec_progs.o",
        "bytecode_digest": _digest(obj),
        "function": "tc_count",
        "interface": "eth1",
        "netns": None,
        "direction": "ingress",
        "priority": 50,
        "proceedon": ["pipe", "dispatcher_return"],
        "global_data": None,
        "map_owner": None,
    }


def test_tcprogram_netns_and_proceedon(tmp_path: Path) -> None:
    text = TC.replace("priority: 50\n", "priority: 50\n  proceedon: [ok, shot]\n")
    text = text.replace("interfaces: [eth0, eth1]", "interfaces: [veth0]")
    text += "  netns: /run/netns/red\n"
    root = write_tree(tmp_path, {"tc.yaml": text})
    (a,) = load_desired(root, StubHost()).attachments
    assert str(a.address) == "TcProgram/tc-count[red:veth0]"
    assert a.point == TcHook("veth0", "ingress", "/run/netns/red")
    assert a.proceedon == ("ok", "shot")
    assert a.attributes["netns"] == "/run/netns/red"


def test_application_type_tc(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"app.yaml": APP})
    (a,) = load_desired(root, StubHost()).attachments
    assert str(a.address) == "BpfApplication/app[cls_legacy:blue:eth0/egress]"
    assert a.program.prog_type is ProgType.TC
    assert a.point == TcHook("eth0", "egress", "/run/netns/blue")
    assert (a.priority, a.proceedon) == (7, ("ok", "shot", "dispatcher_return"))
    assert a.attributes["direction"] == "egress"


def test_application_tc_proceedon_default(tmp_path: Path) -> None:
    text = APP.replace("            proceedOn: [OK, Shot, DispatcherReturn]\n", "")
    root = write_tree(tmp_path, {"app.yaml": text})
    (a,) = load_desired(root, StubHost()).attachments
    assert a.proceedon == ("pipe", "dispatcher_return")


def test_tcprogram_accepts_any_classifier_section_and_refuses_others(tmp_path: Path) -> None:
    """tc, tcx/... and classifier/... all hold a TC classifier (libbpf's sched_cls): any loads
    behind the dispatcher; an XDP function does not."""
    text = TC.replace("bpffunctionname: tc_count", "bpffunctionname: tcx_ingress")
    root = write_tree(tmp_path, {"tc.yaml": text})
    assert len(load_desired(root, StubHost()).attachments) == 2
    text = TC.replace("bpffunctionname: tc_count", "bpffunctionname: xdp_stats")
    (problem,) = problems_of(tmp_path, {"tc.yaml": text})
    assert problem.startswith("tc.yaml:6: spec.bpffunctionname: function 'xdp_stats' is in ")
    assert "a TcProgram needs a section holding a TC classifier (tc[/...], tcx[/...]" in problem


def test_tcprogram_accepts_classifier_section(tmp_path: Path) -> None:
    text = TC.replace("bpffunctionname: tc_count", "bpffunctionname: cls_legacy")
    root = write_tree(tmp_path, {"tc.yaml": text})
    assert len(load_desired(root, StubHost()).attachments) == 2


def test_tcprogram_proceedon_values_are_checked(tmp_path: Path) -> None:
    text = TC.replace("priority: 50\n", "priority: 50\n  proceedon: [pass]\n")
    (problem,) = problems_of(tmp_path, {"tc.yaml": text})
    assert problem.startswith("tc.yaml:13: spec.proceedon[0]:")
    assert "dispatcher_return" in problem


def test_application_tc_needs_its_member(tmp_path: Path) -> None:
    text = APP.split("      tc:\n")[0]
    (problem,) = problems_of(tmp_path, {"app.yaml": text})
    assert "spec.programs[0]" in problem and "tc" in problem
