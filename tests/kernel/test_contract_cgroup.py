"""The Kernel contract for cgroup programs, against FakeKernel and RealKernel alike: cgroup_skb
(CgroupPoint: a cgroup v2 directory and a direction) and cgroup_sock_addr (CgroupSockAddrPoint:
a cgroup v2 directory and a socket call).

On the real kernel the test makes its own child cgroup; bpftool (`bpftool cgroup show`) observes
independently, and the program's effect proves it runs: a process inside the cgroup cannot send
to the guarded loopback port (EPERM), one outside can.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.kernel import KernelError, ProgramSpec, ProgType
from reconciler.kernel.types import CgroupLinkView, CgroupPoint, CgroupSockAddrPoint
from tests import cgroups, support
from tests.kernel.harness import World, obj, wait_for

GUARD = ProgramSpec(obj("cgroup_skb"), "guard_egress", ProgType.CGROUP_SKB)
COUNT = ProgramSpec(obj("cgroup_skb"), "count_egress", ProgType.CGROUP_SKB)
PIN = "CgroupSkbProgram/guard/x"


@pytest.fixture
def cgroup(world: World) -> Iterator[str]:
    """A cgroup v2 directory of this test's own (real: a new child cgroup, removed after)."""
    if not world.real:
        path = "/sys/fs/cgroup/unified/bpfman-test"
        world.kernel.add_cgroup(path)  # type: ignore[attr-defined]
        yield path
        return
    with cgroups.child_cgroup() as path:
        yield str(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bpftool_cgroup(path: str) -> list[dict]:
    """`bpftool cgroup show PATH`: the programs attached to the cgroup (ids, attach types)."""
    out = support.sh("bpftool", "-j", "cgroup", "show", path).stdout
    return json.loads(out) if out.strip() else []


def test_cgroup_skb_install_observe_replace_uninstall(world: World, cgroup: str) -> None:
    port = _free_port()
    spec = ProgramSpec(
        GUARD.object_path,
        GUARD.function,
        ProgType.CGROUP_SKB,
        global_data=(("blocked_port", port.to_bytes(2, "little")),),
    )
    point = CgroupPoint(cgroup, "egress")
    inst = world.kernel.install(PIN, spec, point)

    assert inst.attached and inst.prog_type == "cgroup_skb" and inst.link_id is not None
    assert isinstance(inst.attach, CgroupLinkView)  # the same view from both kernels
    assert inst.attach_json()["link_type"] == "cgroup"
    assert inst.attach_json()["attach_type"] == "cgroup_inet_egress"
    assert world.kernel.observe() == [inst]
    if world.real:
        assert inst.attach_json()["cgroup_id"] == Path(cgroup).stat().st_ino
        assert [(p["id"], p["attach_type"]) for p in bpftool_cgroup(cgroup)] == [
            (inst.prog_id, "cgroup_inet_egress")
        ]
        assert cgroups.send_from(Path(cgroup), port) == ("EPERM", "timeout")
        assert cgroups.send_from(None, port) == ("sent", "sent")  # outside the cgroup: untouched
        assert world.counters(inst, "dropped")[0] >= 2  # the datagram and the SYN (and retries)

    # Make-before-break: a new link (cgroup links are multi-program), then the old one goes.
    new = world.kernel.replace(PIN, COUNT, point)
    assert new.prog_id != inst.prog_id and new.link_id != inst.link_id
    assert new.link_pin == inst.link_pin and new.prog_pin == inst.prog_pin and new.attached
    assert world.kernel.observe() == [new]
    if world.real:
        wait_for(lambda: world.link_json(inst.link_id or 0) is None, "the old link to go")
        assert [p["id"] for p in bpftool_cgroup(cgroup)] == [new.prog_id]
        assert cgroups.send_from(Path(cgroup), port) == ("sent", "sent")  # the guard is gone
        assert world.counters(new, "packets")[0] >= 2

    # Another direction: a new link on the ingress hook, the egress one goes.
    ingress = ProgramSpec(COUNT.object_path, "count_ingress", ProgType.CGROUP_SKB)
    moved = world.kernel.replace(PIN, ingress, CgroupPoint(cgroup, "ingress"))
    assert moved.attached and moved.attach_json()["attach_type"] == "cgroup_inet_ingress"
    if world.real:
        wait_for(lambda: world.link_json(new.link_id or 0) is None, "the egress link to go")
        assert [(p["id"], p["attach_type"]) for p in bpftool_cgroup(cgroup)] == [
            (moved.prog_id, "cgroup_inet_ingress")
        ]

    world.kernel.uninstall(PIN)
    assert world.kernel.observe() == []
    if world.real:
        assert world.pins() == []
        assert bpftool_cgroup(cgroup) == []
        wait_for(lambda: not world.prog_exists(moved.prog_id), "the program to be freed")


def test_cgroup_skb_on_a_missing_or_non_cgroup_directory_is_refused(
    world: World, cgroup: str, tmp_path: Path
) -> None:
    for path, words in (
        (f"{cgroup}/missing", "does not exist"),
        ("relative/cgroup", "absolute path"),
    ):
        with pytest.raises(KernelError, match=words):
            world.kernel.install(PIN, GUARD, CgroupPoint(path, "egress"))
    if world.real:  # a plain directory is not a cgroup (the fake has no file systems)
        with pytest.raises(KernelError, match="not on a cgroup v2 file system"):
            world.kernel.install(PIN, GUARD, CgroupPoint(str(tmp_path), "egress"))
    with pytest.raises(KernelError, match="ingress or egress"):
        world.kernel.install(PIN, GUARD, CgroupPoint(cgroup, "sideways"))
    assert world.kernel.observe() == []
    if world.real:
        assert world.pins() == []


def test_cgroup_skb_link_of_a_removed_cgroup_is_not_attached(world: World) -> None:
    if world.real:
        with cgroups.child_cgroup() as path:
            inst = world.kernel.install(PIN, COUNT, CgroupPoint(str(path), "egress"))
            assert inst.attached
        # The cgroup is gone: its link stays pinned, defunct (cgroup id 0).
    else:
        world.kernel.add_cgroup("/cg/gone")  # type: ignore[attr-defined]
        inst = world.kernel.install(PIN, COUNT, CgroupPoint("/cg/gone", "egress"))
        world.kernel.remove_cgroup("/cg/gone")  # type: ignore[attr-defined]
    (seen,) = world.kernel.observe()
    if world.real:
        wait_for(lambda: not world.kernel.observe()[0].attached, "the link to turn defunct")
        (seen,) = world.kernel.observe()
    assert not seen.attached and seen.attach_json()["cgroup_id"] == 0
    world.kernel.uninstall(PIN)
    assert world.kernel.observe() == []


# --- cgroup_sock_addr --------------------------------------------------------------------------


def _guard(function: str, port: int) -> ProgramSpec:
    return ProgramSpec(
        obj("cgroup_sock_addr"),
        function,
        ProgType.CGROUP_SOCK_ADDR,
        global_data=(("blocked_port", port.to_bytes(2, "little")),),
    )


def test_cgroup_sock_addr_install_observe_replace_uninstall(world: World, cgroup: str) -> None:
    port = _free_port()
    pin = "CgroupSockAddrProgram/guard/x"
    inst = world.kernel.install(
        pin, _guard("guard_connect4", port), CgroupSockAddrPoint(cgroup, "connect4")
    )

    assert inst.attached and inst.prog_type == "cgroup_sock_addr" and inst.link_id is not None
    assert (inst.attach_json()["link_type"], inst.attach_json()["attach_type"]) == (
        "cgroup",
        "cgroup_inet4_connect",
    )
    assert world.kernel.observe() == [inst]
    if world.real:
        assert inst.attach_json()["cgroup_id"] == Path(cgroup).stat().st_ino
        assert [(p["id"], p["attach_type"]) for p in bpftool_cgroup(cgroup)] == [
            (inst.prog_id, "cgroup_inet4_connect")
        ]
        # connect() is refused in the cgroup (an unconnected sendto() is sendmsg4's business).
        assert cgroups.send_from(Path(cgroup), port) == ("sent", "EPERM")
        assert cgroups.send_from(None, port) == ("sent", "sent")
        assert world.counters(inst, "refused") == [1]

    # Another hook: a new link on sendmsg4, then the connect4 one goes.
    point = CgroupSockAddrPoint(cgroup, "sendmsg4")
    new = world.kernel.replace(pin, _guard("guard_sendmsg4", port), point)
    assert new.link_id != inst.link_id and new.link_pin == inst.link_pin and new.attached
    assert new.attach_json()["attach_type"] == "cgroup_udp4_sendmsg"
    if world.real:
        wait_for(lambda: world.link_json(inst.link_id or 0) is None, "the old link to go")
        assert [(p["id"], p["attach_type"]) for p in bpftool_cgroup(cgroup)] == [
            (new.prog_id, "cgroup_udp4_sendmsg")
        ]
        assert cgroups.send_from(Path(cgroup), port) == ("EPERM", "sent")

    world.kernel.uninstall(pin)
    assert world.kernel.observe() == []
    if world.real:
        assert world.pins() == [] and bpftool_cgroup(cgroup) == []


def test_cgroup_sock_addr_unknown_hook_is_refused(world: World, cgroup: str) -> None:
    with pytest.raises(KernelError, match="must be one of bind4, bind6, connect4"):
        world.kernel.install(
            "CgroupSockAddrProgram/guard/x",
            _guard("guard_connect4", 4242),
            CgroupSockAddrPoint(cgroup, "connect5"),
        )
    assert world.kernel.observe() == []
