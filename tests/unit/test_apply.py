"""apply_plan against the FakeKernel (which passes the same contract tests as the real one)."""

from __future__ import annotations

import pytest

from reconciler.apply import ApplyFailed, apply_plan
from reconciler.kernel import FakeKernel
from reconciler.kernel.types import KernelError
from reconciler.plan import Action, build_plan
from reconciler.state import StateStore
from tests.unit.factories import tcx, tracepoint, xdp


@pytest.fixture
def kernel(tmp_path):
    k = FakeKernel(tmp_path / "bpffs", check_files=False)
    for name in ("eth0", "eth1", "eth2"):
        k.add_interface(name)
    return k


@pytest.fixture
def store(tmp_path):
    return StateStore(tmp_path / "state")


def plan(kernel, store, desired):
    return build_plan(desired, kernel.observe(), store.load())


def converge(kernel, store, desired):
    apply_plan(plan(kernel, store, desired), kernel, store)
    return plan(kernel, store, desired)


def test_apply_then_plan_has_no_changes(kernel, store):
    desired = [xdp("a"), tcx("t"), tracepoint("tp")]
    after = converge(kernel, store, desired)
    assert not after.has_changes
    assert {str(a) for a in store.load()} == {str(d.address) for d in desired}
    assert kernel.xdp_program_on("eth0") == store.load()["XdpProgram/a[eth0]"].prog_id


def test_tcx_links_follow_priority_then_name_whatever_the_apply_order(kernel, store):
    converge(kernel, store, [tcx("m", priority=20)])
    converge(kernel, store, [tcx("m", priority=20), tcx("z", priority=10), tcx("a", priority=20)])
    recs = store.load()
    ids = [recs[f"TcxProgram/{n}[eth0]"].prog_id for n in ("z", "a", "m")]
    assert kernel.tcx_order("eth0", "ingress") == ids


def test_tcx_priority_change_moves_the_link(kernel, store):
    converge(kernel, store, [tcx("a", priority=10), tcx("b", priority=20)])
    p = plan(kernel, store, [tcx("a", priority=30), tcx("b", priority=20)])
    assert [c.action for c in p.actionable] == [Action.REPLACE]
    apply_plan(p, kernel, store)
    recs = store.load()
    assert kernel.tcx_order("eth0", "ingress") == [
        recs["TcxProgram/b[eth0]"].prog_id,
        recs["TcxProgram/a[eth0]"].prog_id,
    ]


def test_verifier_rejection_anywhere_changes_nothing(kernel, store):
    good, bad = xdp("good", "eth1"), xdp("bad", "eth2", function="xdp_reject")
    bad = type(bad)(
        **{
            **bad.__dict__,
            "program": type(bad.program)("/x/r.o", "xdp_reject", bad.program.prog_type),
        }
    )
    with pytest.raises(ApplyFailed, match="verifier rejected xdp_reject") as e:
        apply_plan(plan(kernel, store, [good, bad]), kernel, store)
    assert e.value.outcomes == []
    assert kernel.observe() == [] and store.load() == {}


def test_failure_mid_apply_keeps_what_succeeded_recorded(kernel, store):
    a, b = tracepoint("a"), tracepoint("b")
    kernel.fail_next["attach"] = KernelError("boom")
    p = plan(kernel, store, [a, b])
    with pytest.raises(ApplyFailed, match="boom") as e:
        apply_plan(p, kernel, store)
    assert [o.error for o in e.value.outcomes] == ["boom"]
    # The failed load left nothing; the next plan loads exactly what is missing.
    assert store.load() == {}
    assert len(plan(kernel, store, [a, b]).actionable) == 2
    assert not converge(kernel, store, [a, b]).has_changes


def test_unload_frees_the_interface_for_a_renamed_manifest(kernel, store):
    converge(kernel, store, [xdp("old")])
    after = converge(kernel, store, [xdp("new")])
    assert not after.has_changes
    assert list(store.load()) == ["XdpProgram/new[eth0]"]


def test_detached_outside_bpfman_is_repaired(kernel, store):
    converge(kernel, store, [xdp("a")])
    kernel.detach_xdp("eth0")
    p = plan(kernel, store, [xdp("a")])
    assert [c.action for c in p.changes] == [Action.REPLACE]
    apply_plan(p, kernel, store)
    assert kernel.xdp_program_on("eth0") == store.load()["XdpProgram/a[eth0]"].prog_id
