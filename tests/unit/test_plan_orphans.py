"""bpfman.io/prune: disabled: an attachment whose manifest is gone stays loaded, is listed as
orphaned, keeps its record, and goes only when asked (destroy, or --target); on a dispatcher hook
that a plan changes it is a plan error, never a silent unload. On the FakeKernel."""

from __future__ import annotations

import dataclasses

import pytest

from reconciler.apply import apply_plan
from reconciler.engine import Context, plan_for
from reconciler.kernel import FakeKernel
from reconciler.plan import Action
from reconciler.plan.jsonout import plan_document
from reconciler.plan.render import render_plan
from reconciler.spec.model import DesiredAttachment, DesiredState
from reconciler.state import StateStore
from tests.unit.factories import tracepoint, xdp


@pytest.fixture
def ctx(tmp_path):
    k = FakeKernel(tmp_path / "bpffs", check_files=False)
    k.add_interface("eth0")
    return Context(kernel=k, store=StateStore(tmp_path / "state"))


def kept(d: DesiredAttachment) -> DesiredAttachment:
    return dataclasses.replace(d, attributes={**d.attributes, "prune": "disabled"})


def plan(ctx, desired):
    return plan_for(ctx, DesiredState(manifests=[], attachments=list(desired), source="t"))


def apply(ctx, desired):
    p = plan(ctx, desired)
    apply_plan(p, ctx.kernel, ctx.store)
    return p


def test_a_removed_manifest_with_prune_disabled_is_kept_and_listed(ctx):
    a, b = kept(tracepoint("a")), tracepoint("b")
    apply(ctx, [a, b])
    p = plan(ctx, [])
    assert {str(c.address): c.action for c in p.actionable} == {str(b.address): Action.DELETE}
    assert p.orphans == ((str(a.address), "tp.yaml:1"),)
    assert "Orphaned:" in render_plan(p) and str(a.address) in render_plan(p)
    assert plan_document(p)["orphans"] == [{"address": str(a.address), "origin": "tp.yaml:1"}]
    apply_plan(p, ctx.kernel, ctx.store)
    assert str(a.address) in ctx.store.load()  # its record stays: the next plan still knows
    assert [i.pin_dir for i in ctx.kernel.observe()] == [a.address.pin_dir()]
    again = plan(ctx, [])
    assert not again.has_changes and again.orphans == p.orphans


def test_the_annotation_added_later_is_an_in_place_update(ctx):
    a = tracepoint("a")
    apply(ctx, [a])
    p = plan(ctx, [kept(a)])
    assert [(c.action, c.after and c.after.get("prune")) for c in p.actionable] == [
        (Action.UPDATE, "disabled")
    ]
    apply_plan(p, ctx.kernel, ctx.store)
    assert plan(ctx, []).orphans == ((str(a.address), "tp.yaml:1"),)


def test_destroy_unloads_orphans(ctx):
    a = kept(tracepoint("a"))
    apply(ctx, [a])
    p = plan_for(ctx, None)
    assert [c.action for c in p.actionable] == [Action.DELETE] and p.orphans == ()


def test_restoring_the_manifest_adopts_the_orphan_unchanged(ctx):
    a = kept(tracepoint("a"))
    apply(ctx, [a])
    apply(ctx, [])
    p = plan(ctx, [a])
    assert not p.has_changes and p.orphans == ()


def test_an_orphan_on_a_dispatcher_hook_that_the_plan_changes_is_an_error(ctx):
    a, b = kept(xdp("a", priority=10)), xdp("b", priority=20)
    apply(ctx, [a, b])
    p = plan(ctx, [xdp("b", priority=30)])
    assert p.dispatching
    assert len(p.errors) == 1
    assert (
        p.errors[0].startswith("XdpProgram/a[eth0]: orphaned")
        and "destroy --target" in (p.errors[0])
    )
    # Unchanged hook: nothing to refuse.
    assert plan(ctx, [b]).errors == ()


MANIFEST = """
apiVersion: bpfman.io/v1alpha1
kind: TracepointProgram
metadata:
  name: tp
  annotations: {{bpfman.io/prune: {value}}}
spec:
  bpffunctionname: tp_openat
  bytecode: {{path: ../bytecode/spec_progs.o}}
  names: [syscalls/sys_enter_openat]
"""


def test_the_annotation_becomes_an_attribute_only_when_disabled(tmp_path):
    from reconciler.spec import load_desired
    from tests.unit.spec_support import StubHost, write_tree

    root = write_tree(tmp_path, {"a.yaml": MANIFEST.format(value="disabled")})
    [d] = load_desired(root, StubHost()).attachments
    assert d.attributes["prune"] == "disabled"
    (tmp_path / "e").mkdir()
    root = write_tree(tmp_path / "e", {"a.yaml": MANIFEST.format(value="enabled")})
    [d] = load_desired(root, StubHost()).attachments
    assert "prune" not in d.attributes  # existing records, without the key, stay unchanged


def test_an_unknown_prune_value_is_a_validation_error(tmp_path):
    from tests.unit.spec_support import problems_of

    [problem] = problems_of(tmp_path, {"a.yaml": MANIFEST.format(value="never")})
    assert problem.startswith('a.yaml:5: metadata.annotations["bpfman.io/prune"]:')
    assert "must be one of: enabled, disabled (got 'never')" in problem
