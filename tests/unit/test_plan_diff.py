import dataclasses

import pytest

from reconciler.plan import Action, build_plan
from tests.unit.factories import installed, record, tcx, tracepoint, xdp


def actions(plan):
    return {str(c.address): c.action for c in plan.changes}


def test_new_manifest_is_loaded():
    d = xdp("a")
    plan = build_plan([d], [], {})
    assert actions(plan) == {"XdpProgram/a[eth0]": Action.CREATE}
    assert plan.counts() == (1, 0, 0)


def test_unchanged_is_noop_and_plan_has_no_changes():
    d = xdp("a")
    plan = build_plan([d], [installed(d)], {str(d.address): record(d)})
    assert actions(plan) == {"XdpProgram/a[eth0]": Action.NOOP}
    assert not plan.has_changes
    assert plan.counts() == (0, 0, 0)


def test_removed_manifest_is_unloaded_with_reason():
    d = xdp("a")
    plan = build_plan([], [installed(d)], {str(d.address): record(d)})
    (c,) = plan.changes
    assert c.action is Action.DELETE
    assert "no longer in the manifests" in (c.reason or "")
    assert c.before == d.attributes


def test_xdp_priority_change_is_in_place():
    d = xdp("a", priority=60)
    plan = build_plan([d], [installed(d)], {str(d.address): record(d, priority=55)})
    (c,) = plan.changes
    assert c.action is Action.UPDATE
    assert c.before["priority"] == 55 and c.after["priority"] == 60


def test_bytecode_change_forces_replacement():
    d = xdp("a", digest="sha256:new")
    plan = build_plan(
        [d], [installed(d)], {str(d.address): record(d, bytecode_digest="sha256:old")}
    )
    (c,) = plan.changes
    assert c.action is Action.REPLACE
    assert c.replace_paths == ("bytecode_digest",)
    assert plan.counts() == (1, 0, 1)


def test_moved_bytecode_file_with_same_digest_is_in_place():
    d = xdp("a")
    plan = build_plan([d], [installed(d)], {str(d.address): record(d, bytecode="old/xdp.o")})
    assert plan.changes[0].action is Action.UPDATE


def test_tcx_priority_change_forces_replacement():
    d = tcx("a", priority=10)
    plan = build_plan([d], [installed(d)], {str(d.address): record(d, priority=20)})
    (c,) = plan.changes
    assert c.action is Action.REPLACE and c.replace_paths == ("priority",)


def test_detached_program_is_replaced_with_drift_reason():
    d = tracepoint("t")
    plan = build_plan([d], [installed(d, attached=False)], {str(d.address): record(d)})
    (c,) = plan.changes
    assert c.action is Action.REPLACE
    assert "no longer attached" in (c.reason or "")


def test_pins_without_record_are_replaced():
    d = xdp("a")
    plan = build_plan([d], [installed(d)], {})
    assert plan.changes[0].action is Action.REPLACE
    assert "no record" in (plan.changes[0].reason or "")


def test_record_without_pins_is_loaded_again():
    d = xdp("a")
    plan = build_plan([d], [], {str(d.address): record(d)})
    (c,) = plan.changes
    assert c.action is Action.CREATE and "missing" in (c.reason or "")


def test_order_is_unloads_then_replacements_then_updates_then_loads():
    gone, rep, upd, new = (
        xdp("gone", "eth1"),
        xdp("rep", "eth2", digest="sha256:x"),
        xdp("upd", "eth3", priority=1),
        xdp("new", "eth4"),
    )
    inst = [installed(gone), installed(rep), installed(upd)]
    recs = {
        str(gone.address): record(gone),
        str(rep.address): record(rep, bytecode_digest="sha256:y"),
        str(upd.address): record(upd, priority=2),
    }
    plan = build_plan([new, upd, rep], inst, recs)
    assert [c.action for c in plan.actionable] == [
        Action.DELETE,
        Action.REPLACE,
        Action.UPDATE,
        Action.CREATE,
    ]


def test_foreign_pin_layout_is_ignored():
    d = xdp("a")
    odd = installed(d)
    odd = type(odd)(**{**odd.__dict__, "pin_dir": "not/ours"})
    plan = build_plan([], [odd], {})
    assert plan.changes == ()


def with_owner(d, owner):
    return type(d)(**{**d.__dict__, "depends_on": (owner.address,)})


def test_map_owner_loads_before_its_users_whatever_the_names():
    owner = tracepoint("zz-owner")
    user = with_owner(tracepoint("aa-user"), owner)
    plan = build_plan([user, owner], [], {})
    assert [str(c.address) for c in plan.actionable] == [str(owner.address), str(user.address)]


def test_users_are_unloaded_before_their_map_owner():
    owner, user = tracepoint("aa-owner"), tracepoint("zz-user")
    rec_user = record(user)
    rec_user.extra["depends_on"] = [str(owner.address)]
    plan = build_plan(
        [],
        [installed(owner), installed(user)],
        {str(owner.address): record(owner), str(user.address): rec_user},
    )
    assert [str(c.address) for c in plan.actionable] == [str(user.address), str(owner.address)]


def test_replacing_a_map_owner_reloads_its_users():
    owner = tracepoint("owner")
    user = with_owner(tracepoint("user", "syscalls/sys_enter_getppid"), owner)
    plan = build_plan(
        [owner, user],
        [installed(owner), installed(user)],
        {
            str(owner.address): record(owner, bytecode_digest="sha256:old"),
            str(user.address): record(user),
        },
    )
    by = {str(c.address): c for c in plan.changes}
    assert by[str(owner.address)].action is Action.REPLACE
    assert by[str(user.address)].action is Action.REPLACE
    assert "map owner" in by[str(user.address)].reason
    assert [c.address for c in plan.actionable] == [owner.address, user.address]


# --- what forces a replacement is decided by the program type, whatever kind spelled it --------

_TCX_KINDS = {
    "TcxProgram": """
        apiVersion: bpfman.io/v1alpha1
        kind: TcxProgram
        metadata: {{name: t}}
        spec:
          bpffunctionname: tcx_ingress
          bytecode: {{path: ../bytecode/spec_progs.o}}
          interfaceselector: {{interfaces: [eth0]}}
          direction: ingress
          priority: {priority}
        """,
    "BpfApplication": """
        apiVersion: bpfman.io/v1alpha1
        kind: BpfApplication
        metadata: {{name: t, namespace: team-a}}
        spec:
          byteCode: {{path: ../bytecode/spec_progs.o}}
          programs:
            - name: tcx_ingress
              type: TCX
              tcx:
                links:
                  - {{interfaceSelector: {{interfaces: [eth0]}}, direction: Ingress,
                      priority: {priority}}}
        """,
    "ClusterBpfApplication": """
        apiVersion: bpfman.io/v1alpha1
        kind: ClusterBpfApplication
        metadata: {{name: t}}
        spec:
          byteCode: {{path: ../bytecode/spec_progs.o}}
          programs:
            - name: tcx_ingress
              type: TCX
              tcx:
                links:
                  - {{interfaceSelector: {{interfaces: [eth0]}}, direction: Ingress,
                      priority: {priority}}}
        """,
}


def _loaded(tmp_path, kind: str, priority: int):
    """The one attachment the real loader makes of a ``kind`` manifest at ``priority``."""
    from reconciler.spec import load_desired
    from tests.unit.spec_support import StubHost, write_tree

    text = _TCX_KINDS[kind].format(priority=priority)
    (tmp_path / f"p{priority}").mkdir()
    root = write_tree(tmp_path / f"p{priority}", {"t.yaml": text})
    [d] = load_desired(root, StubHost()).attachments
    return d


@pytest.mark.parametrize("kind", sorted(_TCX_KINDS))
def test_tcx_priority_change_forces_replacement_in_every_kind(tmp_path, kind):
    """A TCX link cannot move: a new priority is a new link at the new place, whether the program
    is a TcxProgram or one program of an application."""
    from reconciler.kernel.types import ProgType

    before, after = _loaded(tmp_path, kind, 10), _loaded(tmp_path, kind, 30)
    assert after.program.prog_type is ProgType.TCX
    assert str(after.address).startswith(f"{kind}/t[")
    plan = build_plan([after], [installed(after)], {str(after.address): record(before)})
    (c,) = plan.changes
    assert (c.action, c.replace_paths) == (Action.REPLACE, ("priority",))
    assert (c.before["priority"], c.after["priority"]) == (10, 30)


@pytest.mark.parametrize("kind", ["XdpProgram", "BpfApplication"])
def test_xdp_priority_change_stays_in_place_in_every_kind(kind):
    """The same attribute on another program type is in place (a dispatcher reorders it)."""
    from reconciler.address import Address

    d = xdp("a", priority=60)
    if kind != "XdpProgram":
        d = dataclasses.replace(d, address=Address(kind, "a", "xdp_stats:eth0"))
    plan = build_plan([d], [installed(d)], {str(d.address): record(d, priority=55)})
    assert plan.changes[0].action is Action.UPDATE and plan.changes[0].replace_paths == ()
