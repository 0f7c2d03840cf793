"""SIGKILL the process that swaps an XDP or TC dispatcher inside each of its windows (the VM
tier: freplace works there), then recover as the next apply does (``discard_staging``, under
its lock) and dispatch again: the hook converges with nothing left over, counted with bpftool,
ip and tc, and no staging or dispatcher revision is left pinned.

Windows (reconciler/apply/interrupt.py): ``staged`` (the new dispatcher revision and its changed
programs loaded and pinned, not swapped in: undone), ``swapped`` (the new revision runs, its pins
and its programs' pins not yet committed: completed), ``committing`` (a program's maps moved into
place, its prog pin not yet: completed); and for the removal of a hook's last programs,
``swapped`` (the dispatcher is off the hook, its pins remain).

The process killed is a fork of the test's (no Python start-up: TCG makes every new interpreter
cost seconds); the journal and the plan around these windows are the same as for the programs
the host's crash tier kills at every step (tests/crash/test_kill_every_step.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.kernel import RealKernel
from reconciler.kernel.types import DispatchSlot, Hook, ProgramSpec, ProgType, TcHook, XdpHook
from reconciler.kernel.xdp import proto as xdpproto
from tests import support

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
XDP_O = str(REPO / "manifests" / "examples" / "bytecode" / "xdp_counter.o")  # xdp_stats
XDP2_O = str(REPO / "tests" / "bpf" / "xdp_counter.o")  # xdp_count: other bytecode
TC_O = str(REPO / "manifests" / "examples" / "bytecode" / "tcx_counter.o")  # tcx_stats
TC2_O = str(REPO / "tests" / "bpf" / "tcx_counter.o")  # tcx_count


def xdp(name: str, obj: str, function: str, prio: int) -> DispatchSlot:
    spec = ProgramSpec(obj, function, ProgType.XDP)
    return DispatchSlot(f"XdpProgram/{name}", spec, prio, ("pass", "dispatcher_return"))


def tc(name: str, obj: str, function: str, prio: int) -> DispatchSlot:
    spec = ProgramSpec(obj, function, ProgType.TC)
    return DispatchSlot(f"TcProgram/{name}", spec, prio, ("pipe", "dispatcher_return"))


def stories(ns: str) -> dict[str, tuple[Hook, list[DispatchSlot], list[DispatchSlot]]]:
    """Per hook: (hook, v1, v2). v2 replaces a program (new bytecode), keeps one (same spec, on
    XDP at a new priority) and adds one."""
    return {
        "xdp": (
            XdpHook("eth0", ns, mode="generic"),
            [xdp("a", XDP_O, "xdp_stats", 10), xdp("b", XDP_O, "xdp_stats", 20)],
            [
                xdp("a", XDP2_O, "xdp_count", 10),
                xdp("b", XDP_O, "xdp_stats", 30),
                xdp("c", XDP_O, "xdp_stats", 5),
            ],
        ),
        "tc": (
            TcHook("eth0", "ingress", ns),
            [tc("x", TC_O, "tcx_stats", 10), tc("y", TC_O, "tcx_stats", 20)],
            [
                tc("x", TC2_O, "tcx_count", 10),
                tc("y", TC_O, "tcx_stats", 20),
                tc("z", TC_O, "tcx_stats", 30),
            ],
        ),
    }


@pytest.fixture
def veth() -> Iterator[support.VethPair]:
    # The guest's kernel cannot autoload modules (its helper runs outside the guest's root).
    support.sh("modprobe", "-a", "veth", "sch_ingress", "cls_bpf", check=False)
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
        for hook, _, _ in stories(veth.netns_a).values():
            with contextlib.suppress(Exception):  # the test's own failure matters more
                k.dispatch(hook, [])
        for inst in k.observe():
            k.uninstall(inst.pin_dir)


def killed_at(kernel: RealKernel, hook: Hook, slots: list[DispatchSlot], at: str) -> None:
    """``dispatch(hook, slots)`` in a forked child, SIGKILLed once it reaches pause point ``at``
    (``Kernel.reporting_steps``, as the apply's pause points are reached)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(r)

            def checkpoint(point: str) -> None:
                if point == at:
                    os.write(w, b"!")
                    time.sleep(600)

            with kernel.reporting_steps(checkpoint):
                kernel.dispatch(hook, slots)
        finally:
            os._exit(1)
    os.close(w)
    try:
        reached = os.read(r, 1)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
    assert reached == b"!", f"dispatch never reached {at}"


def running(ns: str) -> tuple[int | None, int | None]:
    """(eth0's XDP program per ip, our ingress TC filter's program per tc)."""
    (link,) = json.loads(support.sh("ip", "-n", ns, "-d", "-j", "link", "show", "eth0").stdout)
    xdp_id = link.get("xdp", {}).get("prog", {}).get("id")
    out = support.sh("tc", "-j", "filter", "show", "dev", "eth0", "ingress", netns=ns).stdout
    tc_ids = [
        f["options"]["prog"]["id"]
        for f in json.loads(out or "[]")
        if "prog" in f.get("options", {})
    ]
    assert len(tc_ids) <= 1, tc_ids  # never two filters of ours
    return xdp_id, (tc_ids[0] if tc_ids else None)


def assert_exactly(kernel: RealKernel, ns: str, base: tuple[set[int], ...], programs: int) -> None:
    """Beyond ``base``, bpftool sees exactly the ``programs`` components pinned under the root,
    the dispatchers that run (ip, tc), one freplace link per component and only their maps;
    under the root there is no staging and one dispatcher revision per hook that runs one; and
    libxdp's pins hold the running XDP dispatcher only."""
    root = kernel.root
    pins = [p for p in root.rglob("prog") if "%" not in str(p.relative_to(root))]
    assert not [p for p in root.rglob("%next*")], sorted(root.rglob("%next*"))
    ours = {
        support.bpftool_json("prog", "show", "pinned", str(p))["id"]  # type: ignore[index]
        for p in pins
    }
    assert len(ours) == programs
    xdp_id, tc_id = running(ns)
    dispatchers = {i for i in (xdp_id, tc_id) if i is not None}
    assert support.prog_ids() - base[0] == ours | dispatchers
    links = [
        support.bpftool_json("link", "show", "id", str(i)) for i in support.link_ids() - base[1]
    ]
    assert sorted(link["prog_id"] for link in links) == sorted(ours)  # type: ignore[index]
    used: set[int] = set()
    for pid in ours | dispatchers:
        info = support.bpftool_json("prog", "show", "id", str(pid))
        used |= set(info.get("map_ids", []))  # type: ignore[union-attr]
    assert support.map_ids() - base[2] <= used
    revisions = sorted(p.name for p in root.glob("%xdp/*/dispatch-*"))
    assert revisions == ([f"dispatch-{xdp_id}"] if xdp_id else [])
    libxdp = sorted(p.name for p in xdpproto.libxdp_dir().glob("dispatch-*"))
    assert [n.rsplit("-", 1)[1] for n in libxdp] == ([str(xdp_id)] if xdp_id else [])
    tc_hooks = [*root.glob("%tc/*")]
    assert len(tc_hooks) == (1 if tc_id else 0), tc_hooks


@pytest.mark.parametrize("at", ["staged", "swapped", "committing"])
@pytest.mark.parametrize("kind", ["xdp", "tc"])
def test_kill_inside_a_dispatch_then_the_next_apply_converges(kernel, veth, kind, at):
    hook, v1, v2 = stories(veth.netns_a)[kind]
    base = (support.prog_ids(), support.link_ids(), support.map_ids())
    kernel.dispatch(hook, v1)
    before = kernel.hook_state(hook)
    killed_at(kernel, hook, v2, at)
    done = kernel.discard_staging()  # what the next apply does first, under its lock
    state = kernel.hook_state(hook)
    if at == "staged":  # undone: the hook runs v1 as before, nothing of v2 is left
        assert state == before, done
        assert_exactly(kernel, veth.ns_a, base, 2)
    else:  # completed: v2 runs, every program pinned as ours (none orphaned as "foreign")
        assert state.dispatcher_id != before.dispatcher_id
        assert len(state.slots) == 3 and all(s.pin_dir for s in state.slots), (state, done)
        assert any(d.startswith("Completed ") for d in done), done
        assert_exactly(kernel, veth.ns_a, base, 3)
    kernel.dispatch(hook, v2)  # the plan's repair: the same dispatch again
    after = kernel.hook_state(hook)
    assert sorted(s.pin_dir for s in after.slots) == sorted(s.pin_dir for s in v2)  # type: ignore[type-var]
    if kind == "xdp" and at != "staged":  # nothing left to change: no new swap
        assert after.dispatcher_id == state.dispatcher_id
    assert_exactly(kernel, veth.ns_a, base, 3)
    assert kernel.staging_leftovers() == []


@pytest.mark.parametrize("kind", ["xdp", "tc"])
def test_kill_while_removing_a_hooks_last_programs_then_nothing_is_left(kernel, veth, kind):
    hook, v1, _ = stories(veth.netns_a)[kind]
    base = (support.prog_ids(), support.link_ids(), support.map_ids())
    kernel.dispatch(hook, v1)
    killed_at(kernel, hook, [], "swapped")  # the hook runs nothing of ours; its pins remain
    assert kernel.staging_leftovers() != []
    done = kernel.discard_staging()
    assert done and kernel.staging_leftovers() == []
    # The plan then unloads the programs (their records were dropped by the journal).
    for s in v1:
        kernel.uninstall(s.pin_dir)
    assert running(veth.ns_a) == (None, None)
    assert_exactly(kernel, veth.ns_a, base, 0)
    assert not [*kernel.root.glob("%*/*")]
