"""A plan is a value: built once, frozen, made of tuples; nothing changes it afterwards."""

from __future__ import annotations

import dataclasses

import pytest

from reconciler.engine import Context, plan_for
from reconciler.kernel import FakeKernel
from reconciler.plan import Drift, Orphan, Plan, ResourceChange
from reconciler.plan.target import Narrowing
from reconciler.spec.model import DesiredState
from reconciler.state import StateStore
from tests.unit.factories import tracepoint, xdp


@pytest.fixture
def ctx(tmp_path):
    k = FakeKernel(tmp_path / "bpffs", check_files=False)
    k.add_interface("eth0")
    return Context(kernel=k, store=StateStore(tmp_path / "state"))


def _plan(ctx, narrowing=None) -> Plan:
    desired = DesiredState(manifests=[], attachments=[xdp("a"), tracepoint("t")], source="t")
    return plan_for(ctx, desired, narrowing)


def test_a_plan_and_its_changes_are_frozen(ctx):
    p = _plan(ctx)
    assert p.changes and all(isinstance(c, ResourceChange) for c in p.changes)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.errors = ("x",)  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.changes[0].reason = "x"  # type: ignore[misc]


@pytest.mark.parametrize("narrowing", [None, Narrowing(targets=("XdpProgram/a",))])
def test_every_collection_of_a_plan_is_a_tuple(ctx, narrowing):
    p = _plan(ctx, narrowing)
    for f in ("changes", "errors", "warnings", "drift", "unselected", "orphans"):
        assert isinstance(getattr(p, f), tuple), f
    for c in p.changes:
        assert isinstance(c.replace_paths, tuple) and isinstance(c.uses_maps_of, tuple)
    assert isinstance(p.actionable, tuple)


def test_typed_entries_unpack_as_before():
    o = Orphan("TracepointProgram/t[a/b]", "tp.yaml:1")
    address, origin = o
    assert (address, origin) == ("TracepointProgram/t[a/b]", "tp.yaml:1")
    assert Drift("X/y[z]", "was detached").to_json() == {
        "address": "X/y[z]",
        "change": "was detached",
    }


def test_an_invalid_target_is_refused_before_planning():
    with pytest.raises(ValueError, match="expected KIND/NAME"):
        Narrowing(targets=("nonsense",))
