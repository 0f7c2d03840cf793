"""Hitless, proven: while frames flow into a veth, other programs are added, reordered and removed
around one that stays; afterwards the one that stayed counted exactly the frames sent (none lost
to a swap, none counted twice). For the XDP and the TC dispatcher, on the VM tier's kernel."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.kernel import RealKernel
from reconciler.kernel.types import DispatchSlot, ProgramSpec, ProgType, TcHook, XdpHook
from tests import support

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
XDP_O = str(REPO / "manifests" / "examples" / "bytecode" / "xdp_counter.o")
TC_O = str(REPO / "manifests" / "examples" / "bytecode" / "tcx_counter.o")
FRAMES = 6000

# Sends FRAMES frames at a steady pace, so that they are in flight during every swap.
SENDER = r"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + b"hitless".ljust(46, b"\0")
print("ready", flush=True)
sys.stdin.readline()
for i in range(int(sys.argv[2])):
    s.send(frame)
    if i % 10 == 0:
        time.sleep(0.01)  # about ten seconds in all: long enough for several swaps
"""


@pytest.fixture
def veth() -> Iterator[support.VethPair]:
    # The guest's kernel cannot autoload modules (its helper runs outside the guest's root).
    subprocess.run(["modprobe", "-a", "veth", "sch_ingress", "cls_bpf"], check=True)
    pair = support.create_veth_pair()
    try:
        yield pair
    finally:
        support.delete_veth_pair(pair)


def counted(kernel: RealKernel, pin_dir: str, map_name: str) -> int:
    (inst,) = [i for i in kernel.observe() if i.pin_dir == pin_dir]
    (m,) = [m for m in inst.maps if m.name == map_name]
    return support.map_u64(f"id {m.id}")


@pytest.mark.parametrize("kind", ["xdp", "tc"])
def test_swaps_lose_and_double_nothing(
    no_leaks: None, bpffs_root: Path, veth: support.VethPair, kind: str
) -> None:
    kernel = RealKernel(bpffs_root)
    if kind == "xdp":
        hook: XdpHook | TcHook = XdpHook("eth0", veth.netns_a, "generic")
        spec = ProgramSpec(XDP_O, "xdp_stats", ProgType.XDP)
        go_on: tuple[str, ...] = ("pass", "dispatcher_return")
        map_name = "xdp_stats_map"
    else:
        hook = TcHook("eth0", "ingress", veth.netns_a)
        spec = ProgramSpec(TC_O, "tcx_stats", ProgType.TC)
        go_on = ("unspec", "pipe", "dispatcher_return")
        map_name = "tcx_stats_map"

    def slot(name: str, priority: int) -> DispatchSlot:
        return DispatchSlot(f"H/{name}/x", spec, priority, go_on)

    # The revisions the hook goes through while frames flow: "stay" is in every one of them.
    revisions = [
        [slot("stay", 50)],
        [slot("stay", 50), slot("other1", 10)],
        [slot("other1", 90), slot("stay", 50), slot("other2", 20)],
        [slot("stay", 5), slot("other2", 20)],
        [slot("other3", 1), slot("stay", 50), slot("other2", 99), slot("other1", 30)],
        [slot("stay", 50)],
    ]
    kernel.dispatch(hook, revisions[0])
    sender = subprocess.Popen(
        [
            "nsenter",
            f"--net={veth.netns_b}",
            "--",
            sys.executable,
            "-c",
            SENDER,
            veth.if_b,
            str(FRAMES),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sender.stdout and sender.stdin
        assert sender.stdout.readline().strip() == "ready"
        sender.stdin.write("go\n")
        sender.stdin.flush()
        swaps = during = 0
        while sender.poll() is None and swaps < 200:
            kernel.dispatch(hook, revisions[1 + swaps % (len(revisions) - 1)])
            swaps += 1
            during += sender.poll() is None  # this swap happened while frames were flowing
        assert sender.wait(timeout=120) == 0
        time.sleep(0.2)  # the last frames leave the veth's queue
        assert during >= 3, f"only {during} swaps overlapped the traffic: send more frames"
        assert counted(kernel, "H/stay/x", map_name) == FRAMES
    finally:
        sender.kill()
        kernel.dispatch(hook, [])
