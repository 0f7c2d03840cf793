"""SIGKILL ``bpfman apply`` at every step of a plan with unloads, a reorder, replacements, an
in-place update and loads; the next apply must converge and leave nothing the manifests do not
account for (counted with bpftool)."""

from __future__ import annotations

import json

import pytest

from tests import support
from tests.crash.conftest import Paused, assert_kernel_holds_exactly, plan_exit

pytestmark = pytest.mark.kernel


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


@pytest.mark.parametrize(
    "at, only",
    [
        ("kernel", None),  # every step, in the worst window: kernel changed, not recorded
        ("staged", "replace"),  # new program loaded in %next, old one still running
    ],
)
def test_kill_at_every_step_then_apply_converges(baseline, b, veth, manifests, at, only):
    m = manifests
    b.run("apply", m.v1.source, "--auto-approve")
    assert_kernel_holds_exactly(b, baseline, m.v1_programs, 4)
    steps = steps_of(b, m.v2.source)
    kinds = sorted(a[0] if len(a) == 1 else "replace" for _, a in steps)
    assert kinds == ["create"] * 2 + ["delete", "replace", "replace", "replace", "update"], steps
    paused = 0
    chosen = [k for k, (_, a) in enumerate(steps, 1) if only is None or len(a) == 2]
    for k in chosen:
        if k != chosen[0]:
            b.run("apply", m.v1.source, "--auto-approve")  # back to v1
            assert plan_exit(b, m.v1.source) == 0
        apply = Paused(b, m.v2.source, k, at)
        if apply.marker is None:  # this step never reaches the point (no staging: unload, update)
            assert at == "staged" and apply.proc.returncode == 0
        else:
            assert f"step={k} at={at}" in apply.marker
            paused += 1
            apply.kill()
            # What the plan now says is a repair, and it names the interrupted step.
            plan = b.run("plan", m.v2.source, expect=None)
            assert plan.returncode in (0, 2)
            if steps[k - 1][1] != ["update"]:  # an update touches no kernel: nothing to repair
                assert f"interrupted during {steps[k - 1][0]}" in plan.stderr
        converge_and_check(b, m, veth, baseline)
    assert paused == len(chosen)
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
