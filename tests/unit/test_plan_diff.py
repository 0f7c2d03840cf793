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
    assert c.replace_paths == ["bytecode_digest"]
    assert plan.counts() == (1, 0, 1)


def test_moved_bytecode_file_with_same_digest_is_in_place():
    d = xdp("a")
    plan = build_plan([d], [installed(d)], {str(d.address): record(d, bytecode="old/xdp.o")})
    assert plan.changes[0].action is Action.UPDATE


def test_tcx_priority_change_forces_replacement():
    d = tcx("a", priority=10)
    plan = build_plan([d], [installed(d)], {str(d.address): record(d, priority=20)})
    (c,) = plan.changes
    assert c.action is Action.REPLACE and c.replace_paths == ["priority"]


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
    assert plan.changes == []


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
