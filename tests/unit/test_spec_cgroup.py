"""CgroupSkbProgram, CgroupSockAddrProgram and ClusterBpfApplication's ``type: CgroupSkb`` /
``CgroupSockAddr``: fields, sections, addresses and attributes."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.kernel.types import CgroupPoint, CgroupSockAddrPoint, ProgType
from reconciler.spec import load_desired
from reconciler.spec.semantic import describe_section, section_fits
from tests.unit.spec_support import StubHost, problems_of, write_tree

CGROUP = """
apiVersion: bpfman.io/v1alpha1
kind: CgroupSkbProgram
metadata: {name: guard}
spec:
  bpffunctionname: cgroup_egress
  bytecode: {path: ../bytecode/spec_progs.o}
  cgroup: /sys/fs/cgroup/app.slice
  direction: egress
"""
APP = """
apiVersion: bpfman.io/v1alpha1
kind: ClusterBpfApplication
metadata: {name: app}
spec:
  byteCode: {path: ../bytecode/spec_progs.o}
  nodeSelector: {}
  programs:
    - name: cgroup_ingress
      type: CgroupSkb
      cgroupSkb:
        links:
          - {cgroup: /sys/fs/cgroup/a, direction: Ingress}
          - {cgroup: /sys/fs/cgroup/b, direction: Ingress}
"""
CGROUP_HINT = (
    "must be an absolute path of a cgroup v2 directory, without . or .. components, // or a "
    "trailing /, e.g. /sys/fs/cgroup/app.slice (see `grep cgroup2 /proc/self/mounts`)"
)


def test_address_point_and_attributes(tmp_path: Path) -> None:
    [a] = load_desired(write_tree(tmp_path, {"c.yaml": CGROUP}), StubHost()).attachments
    assert str(a.address) == "CgroupSkbProgram/guard[/sys/fs/cgroup/app.slice:egress]"
    assert a.address.pin_dir() == "CgroupSkbProgram/guard/%2Fsys%2Ffs%2Fcgroup%2Fapp.slice:egress"
    assert a.point == CgroupPoint("/sys/fs/cgroup/app.slice", "egress")
    assert a.program.prog_type is ProgType.CGROUP_SKB
    assert list(a.attributes) == [
        "bytecode",
        "bytecode_digest",
        "function",
        "cgroup",
        "direction",
        "global_data",
        "map_owner",
    ]
    assert (a.priority, a.proceedon, a.depends_on) == (None, (), ())


def test_application_links(tmp_path: Path) -> None:
    state = load_desired(write_tree(tmp_path, {"a.yaml": APP}), StubHost())
    assert [(str(a.address), a.point) for a in state.attachments] == [
        (
            "ClusterBpfApplication/app[cgroup_ingress:/sys/fs/cgroup/a:ingress]",
            CgroupPoint("/sys/fs/cgroup/a", "ingress"),
        ),
        (
            "ClusterBpfApplication/app[cgroup_ingress:/sys/fs/cgroup/b:ingress]",
            CgroupPoint("/sys/fs/cgroup/b", "ingress"),
        ),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            CGROUP.replace("  direction: egress\n", ""),
            "c.yaml:4: spec.direction: required field is missing; expected one of: ingress, egress",
        ),
        (
            CGROUP.replace("direction: egress", "direction: Egress"),
            "c.yaml:8: spec.direction: must be one of: ingress, egress (got 'Egress'; did you "
            "mean 'egress'?)",
        ),
        (
            CGROUP.replace("/sys/fs/cgroup/app.slice", "app.slice"),
            "c.yaml:7: spec.cgroup: " + CGROUP_HINT + " (got 'app.slice')",
        ),
        (
            CGROUP.replace("app.slice", "a/../b"),
            "c.yaml:7: spec.cgroup: " + CGROUP_HINT + " (got '/sys/fs/cgroup/a/../b')",
        ),
        (
            CGROUP.replace("app.slice", "app.slice/"),
            "c.yaml:7: spec.cgroup: " + CGROUP_HINT + " (got '/sys/fs/cgroup/app.slice/')",
        ),
        (
            CGROUP.replace("cgroup_egress", "tcx_ingress"),
            "c.yaml:5: spec.bpffunctionname: function 'tcx_ingress' is in section 'tcx/ingress', a "
            "TC classifier; a CgroupSkbProgram needs a section holding a cgroup_skb program "
            "(cgroup_skb[/...], cgroup/skb[/...]) or one libbpf gives no type (for this section, "
            "use kind TcxProgram)",
        ),
        (
            CGROUP + "  interfaceselector: {interfaces: [eth0]}\n",
            "c.yaml:9: spec.interfaceselector: unknown field 'interfaceselector' (did you mean "
            "'nodeselector'?); allowed fields here: bpffunctionname, bytecode, cgroup, direction, "
            "nodeselector, globaldata, mapownerselector",
        ),
        (
            APP.replace("direction: Ingress}\n          - {", "direction: ingress}\n          - {"),
            "a.yaml:12: spec.programs[0].cgroupSkb.links[0].direction: must be one of: Ingress, "
            "Egress (got 'ingress'; did you mean 'Ingress'?)",
        ),
        (
            APP.replace("type: CgroupSkb", "type: TCX").replace(
                "cgroupSkb:", "tcx: {}\n      cgroupSkb:"
            ),
            "a.yaml:11: spec.programs[0].cgroupSkb: cgroupSkb belongs to programs of type: "
            "CgroupSkb, not to this program's type; remove cgroupSkb or change type",
        ),
    ],
)
def test_problems(tmp_path: Path, text: str, message: str) -> None:
    name = "a.yaml" if "ClusterBpfApplication" in text else "c.yaml"
    problems = problems_of(tmp_path, {name: text})
    assert problems and problems[0].startswith(message), problems


def test_section_rules() -> None:
    fits = ["cgroup_skb/egress", "cgroup_skb/ingress", "cgroup/skb", "cgroup_skb", "count_egress"]
    does_not_fit = ["cgroup/connect4", "cgroup/sock", "tcx/egress", "sk_skb"]
    assert [s for s in fits if not section_fits("CgroupSkbProgram", s)] == []
    assert [s for s in does_not_fit if section_fits("CgroupSkbProgram", s)] == []


SOCK_ADDR = """
apiVersion: bpfman.io/v1alpha1
kind: CgroupSockAddrProgram
metadata: {name: guard}
spec:
  bpffunctionname: cgroup_connect4
  bytecode: {path: ../bytecode/spec_progs.o}
  cgroup: /sys/fs/cgroup/app.slice
  attachtype: connect4
"""


def test_sock_addr_address_point_and_attributes(tmp_path: Path) -> None:
    [a] = load_desired(write_tree(tmp_path, {"c.yaml": SOCK_ADDR}), StubHost()).attachments
    assert str(a.address) == "CgroupSockAddrProgram/guard[/sys/fs/cgroup/app.slice:connect4]"
    assert a.point == CgroupSockAddrPoint("/sys/fs/cgroup/app.slice", "connect4")
    assert a.program.prog_type is ProgType.CGROUP_SOCK_ADDR
    assert [k for k in a.attributes if k not in ("global_data", "map_owner")][3:] == [
        "cgroup",
        "attachtype",
    ]


def test_sock_addr_application_links(tmp_path: Path) -> None:
    app = (
        APP.replace("cgroup_ingress", "cgroup_connect4")
        .replace("CgroupSkb", "CgroupSockAddr")
        .replace("cgroupSkb", "cgroupSockAddr")
        .replace("direction: Ingress", "attachType: connect4")
    )
    state = load_desired(write_tree(tmp_path, {"a.yaml": app}), StubHost())
    assert [a.point for a in state.attachments] == [
        CgroupSockAddrPoint("/sys/fs/cgroup/a", "connect4"),
        CgroupSockAddrPoint("/sys/fs/cgroup/b", "connect4"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            SOCK_ADDR.replace("connect4\n", "connect5\n"),
            "c.yaml:8: spec.attachtype: must be one of: bind4, bind6, connect4, connect6, "
            "sendmsg4, sendmsg6, recvmsg4, recvmsg6, getpeername4, getpeername6, getsockname4, "
            "getsockname6 (got 'connect5'",
        ),
        (
            SOCK_ADDR.replace("cgroup_connect4", "cgroup_egress"),
            "c.yaml:5: spec.bpffunctionname: function 'cgroup_egress' is in section "
            "'cgroup_skb/egress', a cgroup_skb program; a CgroupSockAddrProgram needs a section "
            "holding a cgroup_sock_addr program (cgroup/connect4[/...], cgroup/sendmsg4[/...], "
            "cgroup/recvmsg4[/...], cgroup/bind4[/...], ...) or one libbpf gives no type (for "
            "this section, use kind CgroupSkbProgram)",
        ),
    ],
)
def test_sock_addr_problems(tmp_path: Path, text: str, message: str) -> None:
    problems = problems_of(tmp_path, {"c.yaml": text})
    assert problems and problems[0].startswith(message), problems


def test_sections_are_described() -> None:
    assert describe_section("cgroup_skb/egress") == "a cgroup_skb program"
    assert describe_section("cgroup/sendmsg6") == "a cgroup_sock_addr program"
    assert describe_section("cgroup/sock_create") == "a cgroup_sock program"
    assert describe_section("cgroup/sysctl") == "a cgroup program"


def test_sock_addr_section_rules() -> None:
    # Names libbpf gives no type (cgroup/connect, connect4) are taken as written, as upstream.
    fits = ["cgroup/connect4", "cgroup/sendmsg6", "cgroup/getsockname4", "cgroup/bind6",
            "cgroup/connect_unix", "cgroup/connect", "connect4"]  # fmt: skip
    does_not_fit = ["cgroup/skb", "cgroup/post_bind4", "cgroup/sock", "xdp"]
    assert [s for s in fits if not section_fits("CgroupSockAddrProgram", s)] == []
    assert [s for s in does_not_fit if section_fits("CgroupSockAddrProgram", s)] == []
