"""Plans and applies through dispatchers, on the FakeKernel: one swap per hook per apply, in-place
reorders that keep program ids, foreign programs kept."""

from __future__ import annotations

import dataclasses

import pytest

from reconciler.apply import apply_plan
from reconciler.engine import Context, plan_for
from reconciler.kernel import FakeKernel
from reconciler.kernel.types import ProgType, TcHook, XdpHook
from reconciler.plan import Action
from reconciler.spec.model import DesiredState
from reconciler.state import StateStore
from tests.unit.factories import xdp

HOOK = XdpHook("eth0")


@pytest.fixture
def ctx(tmp_path):
    k = FakeKernel(tmp_path / "bpffs", check_files=False)
    k.add_interface("eth0")
    return Context(kernel=k, store=StateStore(tmp_path / "state"))


def plan(ctx, desired):
    return plan_for(ctx, DesiredState(manifests=[], attachments=list(desired), source="t"))


def apply(ctx, desired):
    p = plan(ctx, desired)
    apply_plan(p, ctx.kernel, ctx.store)
    return p


def order(ctx, hook=HOOK):
    return [s.name for s in ctx.kernel.hook_state(hook).slots]


def ids(ctx):
    return {k: r.prog_id for k, r in ctx.store.load().items()}


def test_three_programs_one_swap_in_priority_order_then_no_changes(ctx):
    p = apply(ctx, [xdp("c", priority=30), xdp("a", priority=10), xdp("b", priority=20)])
    assert p.dispatching and all(c.hook == HOOK for c in p.changes)
    assert ctx.kernel.hook_swaps(HOOK) == 1
    assert order(ctx) == ["xdp_stats"] * 3
    assert [s.priority for s in ctx.kernel.hook_state(HOOK).slots] == [10, 20, 30]
    assert not plan(
        ctx, [xdp("c", priority=30), xdp("a", priority=10), xdp("b", priority=20)]
    ).has_changes


def test_reorder_is_in_place_keeps_ids_and_swaps_once(ctx):
    apply(ctx, [xdp("a", priority=10), xdp("b", priority=20), xdp("c", priority=30)])
    before = ids(ctx)
    p = apply(ctx, [xdp("a", priority=40), xdp("b", priority=20), xdp("c", priority=5)])
    assert {c.action for c in p.actionable} == {Action.UPDATE}
    assert ctx.kernel.hook_swaps(HOOK) == 2  # the first apply, and this one
    assert ids(ctx) == before
    assert [s.priority for s in ctx.kernel.hook_state(HOOK).slots] == [5, 20, 40]


def test_add_remove_reorder_and_replace_in_one_apply_is_one_swap(ctx):
    apply(ctx, [xdp("a", priority=10), xdp("b", priority=20), xdp("c", priority=30)])
    kept = ids(ctx)["XdpProgram/a[eth0]"]
    p = apply(
        ctx,
        [
            xdp("a", priority=50),  # reordered
            xdp("c", priority=30, digest="sha256:new"),  # replaced
            xdp("d", priority=1),  # added; b removed
        ],
    )
    actions = {str(c.address): c.action for c in p.actionable}
    assert actions == {
        "XdpProgram/a[eth0]": Action.UPDATE,
        "XdpProgram/b[eth0]": Action.DELETE,
        "XdpProgram/c[eth0]": Action.REPLACE,
        "XdpProgram/d[eth0]": Action.CREATE,
    }
    assert ctx.kernel.hook_swaps(HOOK) == 2
    assert ids(ctx)["XdpProgram/a[eth0]"] == kept
    assert [s.priority for s in ctx.kernel.hook_state(HOOK).slots] == [1, 30, 50]
    assert "XdpProgram/b[eth0]" not in ids(ctx)


def test_foreign_program_on_our_dispatcher_is_kept(ctx):
    apply(ctx, [xdp("a", priority=10), xdp("b", priority=30)])
    ctx.kernel.add_foreign_program(HOOK, "their_prog", 20, ("pass",))
    apply(ctx, [xdp("a", priority=40), xdp("b", priority=30)])
    slots = ctx.kernel.hook_state(HOOK).slots
    assert [(s.name, s.pin_dir is None) for s in slots][:1] == [("their_prog", True)]
    apply(ctx, [])
    (only,) = ctx.kernel.hook_state(HOOK).slots
    assert only.name == "their_prog" and only.pin_dir is None
    assert ctx.store.load() == {}


def test_tc_hooks_go_through_the_dispatcher_too(ctx):
    hook = TcHook("eth0", "ingress")
    a, b = xdp("a", priority=20), xdp("b", priority=10)
    tc = [
        dataclasses.replace(
            d,
            address=dataclasses.replace(d.address, kind="TcProgram"),
            point=hook,
            program=dataclasses.replace(d.program, prog_type=ProgType.TC),
            proceedon=("pipe", "dispatcher_return"),
        )
        for d in (a, b)
    ]
    apply(ctx, tc)
    assert ctx.kernel.hook_swaps(hook) == 1
    assert [s.priority for s in ctx.kernel.hook_state(hook).slots] == [10, 20]
    assert not plan(ctx, tc).has_changes
