"""RealKernel's XDP dispatcher on a kernel with freplace (the VM tier): three programs on a veth
run in priority order (seen through what they record, and through `xdp-loader status`), a
reorder keeps their program ids and swaps the dispatcher once, and a program `xdp-loader load`
adds is kept as a foreign program until xdp-loader removes it.
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.kernel import RealKernel
from reconciler.kernel.sys import bpf, bpffs, netns
from reconciler.kernel.types import (
    DispatchSlot,
    Installed,
    ProgramSpec,
    ProgType,
    XdpDispatcherView,
    XdpHook,
)
from reconciler.kernel.xdp import proto as xdpproto
from tests import support
from tests.kernel.harness import BPF

pytestmark = pytest.mark.vm

FRAME = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + b"bpfman-test".ljust(46, b"\0")


@pytest.fixture
def veth() -> Iterator[support.VethPair]:
    subprocess.run(["modprobe", "veth"], check=True)  # the guest loads modules on demand only
    pair = support.create_veth_pair()
    try:
        yield pair
    finally:
        support.delete_veth_pair(pair)


@pytest.fixture
def kernel(no_leaks: None, bpffs_root: Path, veth: support.VethPair) -> Iterator[RealKernel]:
    k = RealKernel(bpffs_root)
    try:
        yield k
    finally:
        hook = XdpHook("eth0", f"/run/netns/{veth.ns_a}", mode="generic")
        try:
            k.dispatch(hook, [])
        finally:
            support.sh("xdp-loader", "unload", "--all", "eth0", netns=veth.ns_a, check=False)
            for inst in k.observe():
                k.uninstall(inst.pin_dir)
            k.remove_maps("shared")
            for d in xdpproto.libxdp_dir().glob("dispatch-*"):
                bpffs.remove_tree(d)


def slot(vm_bytecode: Path, name: str, tag: int, priority: int) -> DispatchSlot:
    spec = ProgramSpec(
        str(vm_bytecode / "xdp_order.o"),
        "xdp_order",
        ProgType.XDP,
        global_data=(("tag", struct.pack("=I", tag)),),
        maps_dir="shared",
    )
    return DispatchSlot(f"XdpProgram/{name}", spec, priority, ("pass",))


def send_frame(ns: str) -> None:
    with netns.enter(f"/run/netns/{ns}"):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        try:
            s.bind(("peer0", 0))
            s.send(FRAME)
        finally:
            s.close()


def _int(v: object) -> int:
    if isinstance(v, list):  # raw bytes, as hex strings
        return int.from_bytes(bytes(int(x, 16) for x in v), "little")
    return int(v)  # type: ignore[call-overload]


def trace(root: Path) -> list[int]:
    """The tags recorded so far, in call order (read with bpftool)."""
    pin = str(root / "shared" / "trace")
    values = {}
    for entry in support.bpftool_json("map", "dump", "pinned", pin):  # type: ignore[union-attr]
        e = entry.get("formatted", entry)
        values[_int(e["key"])] = _int(e["value"])
    return [values[i] for i in range(1, values.get(0, 0) + 1)]


def loader_status(ns: str) -> str:
    return support.sh("xdp-loader", "status", "eth0", netns=ns).stdout


def status_rows(ns: str) -> list[tuple[int, str, str]]:
    """(priority, program name, chain actions) of each component xdp-loader lists."""
    rows = []
    for line in loader_status(ns).splitlines():
        m = re.match(r"^\s*=>\s+(\d+)\s+(\S+)\s+(\d+)\s+\S+\s+(.*)$", line)
        if m:
            rows.append((int(m[1]), m[2], m[4].strip()))
    return rows


def as_observed(kernel: RealKernel, got: list[Installed]) -> None:
    """What a dispatch returns (made from what it did, without reading the interfaces again)
    is what observing the kernel afterwards reads."""
    observed = {i.pin_dir: i for i in kernel.observe()}
    assert got and {i.pin_dir: i for i in got} == {i.pin_dir: observed[i.pin_dir] for i in got}


def test_three_programs_in_priority_order_then_reordered_in_place(
    kernel: RealKernel, veth: support.VethPair, vm_bytecode: Path
) -> None:
    hook = XdpHook("eth0", f"/run/netns/{veth.ns_a}", mode="generic")
    a, b, c = (slot(vm_bytecode, n, t, p) for n, t, p in (("a", 1, 30), ("b", 2, 10), ("c", 3, 20)))
    as_observed(kernel, kernel.dispatch(hook, [a, b, c]))
    state = kernel.hook_state(hook)
    assert [s.pin_dir for s in state.slots] == ["XdpProgram/b", "XdpProgram/c", "XdpProgram/a"]
    assert [s.priority for s in state.slots] == [10, 20, 30]
    assert state.dispatcher_id == kernel.xdp_program_on("eth0", hook.netns)
    send_frame(veth.ns_b)
    assert trace(kernel.root) == [2, 3, 1]
    rows = status_rows(veth.ns_a)
    assert [(p, n) for p, n, _ in rows] == [(10, "xdp_order"), (20, "xdp_order"), (30, "xdp_order")]
    assert all("XDP_PASS" in actions for _, _, actions in rows)
    installed = {i.pin_dir: i for i in kernel.observe()}
    assert installed["XdpProgram/a"].attached
    view = installed["XdpProgram/a"].attach
    assert isinstance(view, XdpDispatcherView)
    assert (view.slot.dispatcher_id, view.slot.position) == (state.dispatcher_id, 2)

    # In place: new priorities, same programs (ids checked with bpftool), one new dispatcher.
    ids = {s.pin_dir: s.prog_id for s in state.slots}
    a2 = DispatchSlot(a.pin_dir, a.spec, 5, ("pass",))
    as_observed(kernel, kernel.dispatch(hook, [a2, b, c]))
    after = kernel.hook_state(hook)
    assert [s.pin_dir for s in after.slots] == ["XdpProgram/a", "XdpProgram/b", "XdpProgram/c"]
    assert {s.pin_dir: s.prog_id for s in after.slots} == ids
    assert after.dispatcher_id != state.dispatcher_id
    for pid in ids.values():
        assert support.bpftool_json("prog", "show", "id", str(pid))["type"] == "ext"  # type: ignore[index]
    assert not support.sh(
        "bpftool", "prog", "show", "id", str(state.dispatcher_id), check=False
    ).stdout
    send_frame(veth.ns_b)
    assert trace(kernel.root)[3:] == [1, 2, 3]

    # xdp-loader adds its own program to our dispatcher: we see it as foreign and keep it.
    support.sh("xdp-loader", "load", "-m", "skb", "-P", "15", "eth0", str(BPF / "xdp_pass.o"),
               netns=veth.ns_a)  # fmt: skip
    mixed = kernel.hook_state(hook)
    assert [(s.priority, s.pin_dir) for s in mixed.slots] == [
        (5, "XdpProgram/a"),
        (10, "XdpProgram/b"),
        (15, None),
        (20, "XdpProgram/c"),
    ]
    foreign = mixed.slots[2].prog_id
    assert {s.pin_dir: s.prog_id for s in mixed.slots if s.pin_dir} == ids
    b25 = DispatchSlot(b.pin_dir, b.spec, 25, ("pass",))
    as_observed(kernel, kernel.dispatch(hook, [a2, b25, c]))
    again = kernel.hook_state(hook)
    assert [(s.priority, s.prog_id) for s in again.slots] == [
        (5, ids["XdpProgram/a"]),
        (15, foreign),
        (20, ids["XdpProgram/c"]),
        (25, ids["XdpProgram/b"]),
    ]
    assert [p for p, _, _ in status_rows(veth.ns_a)] == [5, 15, 20, 25]
    as_observed(kernel, kernel.dispatch(hook, [a2, b25, c]))  # unchanged: no swap
    assert kernel.hook_state(hook).dispatcher_id == again.dispatcher_id

    # All of ours removed: the foreign program keeps running on a dispatcher.
    kernel.dispatch(hook, [])
    last = kernel.hook_state(hook)
    assert [s.prog_id for s in last.slots] == [foreign]
    assert kernel.observe() == []
    assert not (kernel.root / "%xdp").exists()
    with bpf.opened(bpf.prog_fd_by_id(foreign)) as fd:
        assert bpf.prog_info(fd).id == foreign
