"""Planning CgroupSkbProgram attachments: what a change of each attribute does, and the host
checks (the cgroup v2 directory, cgroup links), on the fake kernel."""

from __future__ import annotations

from pathlib import Path

from reconciler.address import Address
from reconciler.kernel import FakeKernel
from reconciler.kernel.types import CgroupPoint, CgroupSockAddrPoint, Probe, ProgramSpec, ProgType
from reconciler.plan import Action, build_plan
from reconciler.plan.hostcheck import check
from reconciler.spec.model import DesiredAttachment, Origin
from tests.unit.factories import installed, record

APP = "/sys/fs/cgroup/app"  # a cgroup of the fake kernel (DEFAULT_CGROUPS)


def cgroup_skb(
    name: str, cgroup: str = APP, direction: str = "egress", function: str = "guard"
) -> DesiredAttachment:
    attrs = {
        "bytecode": "bytecode/cg.o",
        "bytecode_digest": "sha256:dd",
        "function": function,
        "cgroup": cgroup,
        "direction": direction,
        "global_data": None,
        "map_owner": None,
    }
    return DesiredAttachment(
        address=Address("CgroupSkbProgram", name, f"{cgroup}:{direction}"),
        origin=Origin("cg.yaml", 1),
        program=ProgramSpec("/x/cg.o", function, ProgType.CGROUP_SKB),
        point=CgroupPoint(cgroup, direction),
        bytecode_digest="sha256:dd",
        attributes=attrs,
    )


def actions(plan) -> dict[str, Action]:
    return {str(c.address): c.action for c in plan.changes}


def test_unchanged_is_noop() -> None:
    d = cgroup_skb("g")
    plan = build_plan([d], [installed(d)], {str(d.address): record(d)})
    assert actions(plan) == {f"CgroupSkbProgram/g[{APP}:egress]": Action.NOOP}


def test_a_new_function_or_bytecode_forces_a_replacement() -> None:
    d = cgroup_skb("g", function="count")
    plan = build_plan([d], [installed(d)], {str(d.address): record(d, function="guard")})
    (c,) = plan.changes
    assert c.action is Action.REPLACE and c.replace_paths == ("function",)
    plan = build_plan([d], [installed(d)], {str(d.address): record(d, bytecode_digest="x")})
    assert plan.changes[0].action is Action.REPLACE


def test_cgroup_and_direction_are_forcing_attributes_and_part_of_the_address() -> None:
    from reconciler import kinds

    assert {"cgroup", "direction"} <= kinds.forcing(ProgType.CGROUP_SKB)
    old, new = cgroup_skb("g"), cgroup_skb("g", direction="ingress")
    plan = build_plan([new], [installed(old)], {str(old.address): record(old)})
    assert actions(plan) == {
        f"CgroupSkbProgram/g[{APP}:egress]": Action.DELETE,
        f"CgroupSkbProgram/g[{APP}:ingress]": Action.CREATE,
    }


def test_a_link_of_a_removed_cgroup_is_replaced() -> None:
    d = cgroup_skb("g")
    plan = build_plan([d], [installed(d, attached=False)], {str(d.address): record(d)})
    (c,) = plan.changes
    assert c.action is Action.REPLACE and "no longer attached" in (c.reason or "")


def test_a_missing_cgroup_is_a_plan_problem(tmp_path: Path) -> None:
    k = FakeKernel(tmp_path, check_files=False)
    (problem,) = check([cgroup_skb("g", "/sys/fs/cgroup/nope")], k, [])
    assert problem.startswith(
        "CgroupSkbProgram/g[/sys/fs/cgroup/nope:egress] (cg.yaml:1): cgroup directory "
        "/sys/fs/cgroup/nope does not exist on this host"
    )
    k.add_cgroup("/sys/fs/cgroup/nope")
    assert check([cgroup_skb("g", "/sys/fs/cgroup/nope")], k, []) == []


def test_several_programs_on_one_cgroup_are_fine(tmp_path: Path) -> None:
    k = FakeKernel(tmp_path, check_files=False)
    assert check([cgroup_skb(f"g{i}") for i in range(20)], k, []) == []


def test_a_kernel_without_cgroup_links(tmp_path: Path) -> None:
    k = FakeKernel(tmp_path, check_files=False)
    k.probe = lambda f: Probe(f, f != "cgroup_link", "not configured")  # type: ignore[method-assign]
    (problem,) = check([cgroup_skb("g")], k, [])
    assert "needs cgroup links, which kernel 6.18.0-fake does not support" in problem


def cgroup_sock_addr(name: str, cgroup: str = APP, hook: str = "connect4") -> DesiredAttachment:
    attrs = {
        "bytecode": "bytecode/sa.o",
        "bytecode_digest": "sha256:ee",
        "function": "guard",
        "cgroup": cgroup,
        "attachtype": hook,
        "global_data": None,
        "map_owner": None,
    }
    return DesiredAttachment(
        address=Address("CgroupSockAddrProgram", name, f"{cgroup}:{hook}"),
        origin=Origin("sa.yaml", 1),
        program=ProgramSpec("/x/sa.o", "guard", ProgType.CGROUP_SOCK_ADDR),
        point=CgroupSockAddrPoint(cgroup, hook),
        bytecode_digest="sha256:ee",
        attributes=attrs,
    )


def test_sock_addr_a_new_function_forces_a_replacement() -> None:
    from reconciler import kinds

    assert {"cgroup", "attachtype"} <= kinds.forcing(ProgType.CGROUP_SOCK_ADDR)
    d = cgroup_sock_addr("g")
    plan = build_plan([d], [installed(d)], {str(d.address): record(d, function="old")})
    (c,) = plan.changes
    assert c.action is Action.REPLACE and c.replace_paths == ("function",)


def test_sock_addr_a_missing_cgroup_is_a_plan_problem(tmp_path: Path) -> None:
    k = FakeKernel(tmp_path, check_files=False)
    (problem,) = check([cgroup_sock_addr("g", "/sys/fs/cgroup/nope")], k, [])
    assert problem.startswith(
        "CgroupSockAddrProgram/g[/sys/fs/cgroup/nope:connect4] (sa.yaml:1): cgroup directory "
        "/sys/fs/cgroup/nope does not exist on this host"
    )
