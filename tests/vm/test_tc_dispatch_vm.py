"""The TC dispatcher on a distribution kernel (freplace works here, not on the host): three
programs on one veth hook run in priority order, an in-place reorder keeps their program ids and
our single filter, proceedon is honoured, a foreign cls_bpf filter is left alone, and an empty
slot list cleans everything up."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.kernel import RealKernel
from reconciler.kernel.tc.netlink import HANDLE, PREF
from reconciler.kernel.types import DispatchSlot, ProgramSpec, ProgType, TcHook
from tests import support

pytestmark = pytest.mark.vm

FRAMES = 5
DEFAULT = ("pipe", "dispatcher_return")


@pytest.fixture
def pair() -> Iterator[support.VethPair]:
    # Debian's kernel has these as modules (the host's may have them built in).
    support.sh("modprobe", "-a", "veth", "sch_ingress", "cls_bpf", check=False)
    p = support.create_veth_pair()
    try:
        yield p
    finally:
        support.delete_veth_pair(p)


@pytest.fixture
def kernel(no_leaks: None, bpffs_root: Path) -> RealKernel:
    return RealKernel(bpffs_root)


def slot(obj: str, name: str, prio: int, verdict: int = 30, proceed=DEFAULT) -> DispatchSlot:
    gd = (("verdict", struct.pack("<i", verdict)),)
    spec = ProgramSpec(obj, "tc_chain", ProgType.TC, global_data=gd)
    return DispatchSlot(f"TcProgram/{name}", spec, prio, tuple(proceed))


def filters(pair: support.VethPair) -> list[dict]:
    out = support.sh("tc", "-j", "filter", "show", "dev", "eth0", "ingress", netns=pair.ns_a)
    return [f for f in json.loads(out.stdout or "[]") if "options" in f]


def positions(kernel: RealKernel, names: list[str]) -> dict[str, list[int]]:
    """Per program: [runs, runs at position 0, 1, 2] read with bpftool."""
    out = {}
    for inst in kernel.observe():
        name = inst.pin_dir.split("/")[-1]
        if name in names:
            (m,) = [m for m in inst.maps if m.name == "counters"]
            out[name] = support.bpftool_map_values(m.id)
    return out


def test_tc_dispatch_order_reorder_proceedon_cleanup(
    kernel: RealKernel, pair: support.VethPair, vm_bytecode: Path
) -> None:
    obj = str(vm_bytecode / "tc_chain.o")
    hook = TcHook("eth0", "ingress", pair.netns_a)
    # A foreign cls_bpf filter at another priority (after ours): never touched.
    support.sh("tc", "qdisc", "add", "dev", "eth0", "clsact", netns=pair.ns_a)
    support.sh(
        "tc", "filter", "add", "dev", "eth0", "ingress", "pref", "100", "handle", "7",
        "bpf", "da", "obj", obj, "sec", "tc", netns=pair.ns_a,
    )  # fmt: skip
    (foreign,) = filters(pair)
    try:
        a, b, c = slot(obj, "a", 10), slot(obj, "b", 20), slot(obj, "c", 30)
        installed = kernel.dispatch(hook, [c, a, b])
        ids = {i.pin_dir: i.prog_id for i in installed}
        state = kernel.hook_state(hook)
        assert [s.pin_dir for s in state.slots] == ["TcProgram/a", "TcProgram/b", "TcProgram/c"]
        ours = [f for f in filters(pair) if f["pref"] == PREF]
        assert len(ours) == 1 and int(ours[0]["options"]["handle"], 16) == HANDLE
        assert ours[0]["options"]["prog"]["id"] == state.dispatcher_id

        support.send_frames(pair.netns_b, "peer0", FRAMES)
        got = positions(kernel, ["a", "b", "c"])
        assert got["a"] == [FRAMES, FRAMES, 0, 0]
        assert got["b"] == [FRAMES, 0, FRAMES, 0]
        assert got["c"] == [FRAMES, 0, 0, FRAMES]

        # In-place reorder: c first; same program ids, still one filter of ours.
        c2 = slot(obj, "c", 5)
        again = kernel.dispatch(hook, [a, b, c2])
        assert {i.pin_dir: i.prog_id for i in again} == ids
        state2 = kernel.hook_state(hook)
        assert [s.pin_dir for s in state2.slots] == ["TcProgram/c", "TcProgram/a", "TcProgram/b"]
        assert state2.dispatcher_id != state.dispatcher_id
        bpftool_ids = {p["id"] for p in support.bpftool_json("prog", "show")}  # type: ignore[union-attr, index]
        assert set(ids.values()) <= bpftool_ids
        assert len([f for f in filters(pair) if f["pref"] == PREF]) == 1
        support.send_frames(pair.netns_b, "peer0", FRAMES)
        got = positions(kernel, ["a", "b", "c"])
        assert got["c"] == [2 * FRAMES, FRAMES, 0, FRAMES]
        assert got["a"] == [2 * FRAMES, FRAMES, FRAMES, 0]

        # proceedon: a returns TC_ACT_SHOT (2), which its proceedon lacks: the chain stops.
        a_shot = slot(obj, "a", 10, verdict=2)
        kernel.dispatch(hook, [a_shot, b, c2])
        before = positions(kernel, ["a", "b", "c"])
        support.send_frames(pair.netns_b, "peer0", FRAMES)
        after = positions(kernel, ["a", "b", "c"])
        assert after["c"][0] - before["c"][0] == FRAMES  # c (prio 5) runs first
        assert after["a"][0] - before["a"][0] == FRAMES
        assert after["b"][0] == before["b"][0]  # never reached

        # Empty: our filter goes, the foreign filter and the qdisc (not ours) stay.
        assert kernel.dispatch(hook, []) == []
        assert kernel.observe() == []
        left = filters(pair)
        assert [f["pref"] for f in left] == [100]
        assert left[0]["options"]["prog"]["id"] == foreign["options"]["prog"]["id"]
        assert kernel.hook_state(hook).dispatcher_id is None
    finally:
        support.sh(
            "tc", "qdisc", "del", "dev", "eth0", "clsact", netns=pair.ns_a, check=False
        )  # fmt: skip
