"""SIGKILL ``bpfman apply`` at every step of a plan with unloads, a reorder, replacements, an
in-place update and loads; the next apply must converge and leave nothing the manifests do not
account for (counted with bpftool)."""

from __future__ import annotations

import json
import threading

import pytest

from reconciler.apply.interrupt import POINTS
from tests import support
from tests.cli.conftest import ManifestDir, xdp_manifest
from tests.crash.conftest import (
    TCX2_O,
    TCX_O,
    TEST_BPF,
    XDP_O,
    Paused,
    assert_kernel_holds_exactly,
    plan_exit,
)

pytestmark = pytest.mark.kernel

XDP2_O = TEST_BPF / "xdp_counter.o"  # xdp_count: other bytecode than XDP_O's xdp_stats


def xdp_prog_on(ns: str, ifname: str) -> int | None:
    (link,) = json.loads(support.sh("ip", "-n", ns, "-d", "-j", "link", "show", ifname).stdout)
    xdp = link.get("xdp")
    return xdp["prog"]["id"] if xdp and "prog" in xdp else None


def steps_of(b, source: str) -> list[tuple[str, list[str]]]:
    """(address, Terraform actions) of each step, in the order apply runs them."""
    plan = json.loads(b.run("plan", source, "--json").stdout)
    return [
        (c["address"], c["change"]["actions"])
        for c in plan["resource_changes"]
        if c["change"]["actions"] != ["no-op"]
    ]


def converge_and_check(b, m, veth, baseline) -> None:
    out = b.run("apply", m.v2.source, "--auto-approve")
    assert "Apply complete!" in out.stdout, out.stdout + out.stderr
    assert plan_exit(b, m.v2.source) == 0
    assert_kernel_holds_exactly(b, baseline, m.v2_programs, m.v2_links)
    x = json.loads(b.run("get", "XdpProgram/x[eth0]", "--json").stdout)
    assert xdp_prog_on(veth.ns_a, "eth0") == x["kernel"]["prog_id"]


def reaches(at: str, actions: list[str], k: int, steps: int) -> bool:
    """Whether step ``k`` (of ``steps``, with these Terraform actions) reaches pause point ``at``
    (reconciler/apply/interrupt.py)."""
    kind = actions[0] if len(actions) == 1 else "replace"
    if at in ("staged", "swapped", "committing"):  # something new is loaded and attached
        return kind in ("create", "replace")
    if at == "detached":
        return kind == "delete"
    if at == "compacted":  # once, after the last step
        return k == steps
    return True  # begun, kernel, recorded: every step


def link_of(b, address: str) -> int | None:
    return json.loads(b.run("get", address, "--json").stdout)["kernel"].get("link_id")


@pytest.mark.parametrize("at", POINTS)
def test_kill_at_every_step_then_apply_converges(baseline, b, veth, manifests, at):
    """For every step that reaches pause point ``at``: back to v1, apply v2 paused there,
    SIGKILL, then the next apply converges with nothing left over (bpftool)."""
    m = manifests
    b.run("apply", m.v1.source, "--auto-approve")
    assert_kernel_holds_exactly(b, baseline, m.v1_programs, 4)
    steps = steps_of(b, m.v2.source)
    kinds = sorted(a[0] if len(a) == 1 else "replace" for _, a in steps)
    assert kinds == ["create"] * 2 + ["delete", "replace", "replace", "replace", "update"], steps
    chosen = [k for k, (_, a) in enumerate(steps, 1) if reaches(at, a, k, len(steps))]
    assert chosen
    for k in chosen:
        if k != chosen[0]:
            b.run("apply", m.v1.source, "--auto-approve")  # back to v1
            assert plan_exit(b, m.v1.source) == 0
        address, actions = steps[k - 1]
        # The TCX program whose link swaps programs in place: its link must survive any kill.
        in_place = address.startswith("TcxProgram/t2[")
        link = link_of(b, address) if in_place else None
        apply = Paused(b, m.v2.source, k, at)
        assert apply.marker is not None and f"step={k} at={at}" in apply.marker, apply.seen
        apply.kill()
        # What the plan now says is a repair, and it names the interrupted step.
        plan = b.run("plan", m.v2.source, expect=None)
        assert plan.returncode in (0, 2)
        interrupted = at not in ("recorded", "compacted") and actions != ["update"]
        assert (f"interrupted during {address}" in plan.stderr) == interrupted, plan.stderr
        if at == "compacted":
            assert plan.returncode == 0  # every step was done and recorded
        converge_and_check(b, m, veth, baseline)
        if in_place:
            # Rolled forward, never detached and attached again: the hook kept its link.
            assert link_of(b, address) == link
    b.run("destroy", "--auto-approve")
    assert xdp_prog_on(veth.ns_a, "eth0") is None
    assert_kernel_holds_exactly(b, baseline, 0, 0)


def test_kill_before_recording_the_last_step_then_go_back_to_v1(baseline, b, veth, manifests):
    """The worst window, then the other direction: the kernel runs v2's bytecode for a step whose
    record still says v1. Applying v1 must not trust that record (it would see no change)."""
    m = manifests
    b.run("apply", m.v1.source, "--auto-approve")
    steps = steps_of(b, m.v2.source)
    k = next(i for i, (a, _) in enumerate(steps, 1) if a.startswith("TracepointProgram/tp1"))
    Paused(b, m.v2.source, k, "kernel").kill()
    b.run("apply", m.v1.source, "--auto-approve")
    assert plan_exit(b, m.v1.source) == 0
    tp1 = json.loads(b.run("get", steps[k - 1][0], "--json").stdout)
    assert tp1["kernel"]["prog_name"] == "tp_hits"  # v1's function runs again, not v2's
    assert_kernel_holds_exactly(b, baseline, m.v1_programs, 4)


class HookWatch:
    """Polls, in a thread, what eth0 runs (its XDP program, our TC filter's program) for as
    long as the block lasts; ``empty`` counts the polls that found either hook running nothing.
    (In-process netlink, not ip/tc: a gap of a few milliseconds must not slip between polls.)"""

    def __init__(self, netns_path: str) -> None:
        self.netns_path = netns_path
        self.polls = self.empty = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        from reconciler.kernel.sys import netlink, netns
        from reconciler.kernel.tc import netlink as tcnetlink

        try:
            iface = netlink.require("eth0", self.netns_path)
            while not self._stop.is_set():
                xdp = netlink.require("eth0", self.netns_path).xdp_prog_id
                with netns.enter(self.netns_path):
                    tc = tcnetlink.our_filter(iface.ifindex, "ingress")
                self.polls += 1
                self.empty += not xdp or tc is None or not tc.prog_id
        except BaseException as e:  # reported by __exit__: a dead watcher proves nothing
            self.error = e

    def __enter__(self) -> HookWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.error is not None:
            raise self.error


def direct_manifest(m, xdp_o, tc_o, xdp_fn: str, tc_fn: str) -> None:
    m.write("x.yaml", xdp_manifest("x", m.bytecode(xdp_o, "x.o"), function=xdp_fn))
    m.write(
        "t.yaml",
        f"""apiVersion: bpfman.io/v1alpha1
kind: TcProgram
metadata: {{name: t}}
spec:
  bpffunctionname: {tc_fn}
  bytecode: {{path: {m.bytecode(tc_o, "t.o")}}}
  interfaceselector: {{interfaces: [eth0]}}
  direction: ingress
  priority: 50
""",
    )


@pytest.mark.parametrize("at", ["staged", "swapped", "committing", "kernel"])
def test_kill_inside_xdp_and_tc_replacements_never_leaves_the_hook_empty(
    baseline, b, veth, tmp_path, at
):
    """XDP and TC programs attached directly (no dispatcher on this host) get new bytecode; a
    kill anywhere inside the replacement is finished by the next apply: once the new program was
    swapped in it is committed (rolled forward), never detached and attached again, so neither
    hook ever runs nothing meanwhile."""
    v1, v2 = ManifestDir(tmp_path / "v1"), ManifestDir(tmp_path / "v2")
    direct_manifest(v1, XDP_O, TCX_O, "xdp_stats", "tcx_stats")
    direct_manifest(v2, XDP2_O, TCX2_O, "xdp_count", "tcx_count")
    for step in (1, 2):
        b.run("apply", v1.source, "--auto-approve")
        apply = Paused(b, v2.source, step, at)
        assert apply.marker is not None, apply.seen
        apply.kill()
        with HookWatch(veth.netns_a) as watch:
            out = b.run("apply", v2.source, "--auto-approve")
        assert watch.polls > 0 and watch.empty == 0, (watch.polls, watch.empty, out.stderr)
        if at in ("swapped", "committing"):
            assert "/%next: its program already ran (a kill came after its swap)" in out.stderr
        assert plan_exit(b, v2.source) == 0
        assert_kernel_holds_exactly(b, baseline, 2, 0)
        funcs = {
            json.loads(b.run("get", a, "--json").stdout)["kernel"]["prog_name"]
            for a in ("XdpProgram/x[eth0]", "TcProgram/t[eth0]")
        }
        assert funcs == {"xdp_count", "tcx_count"}
