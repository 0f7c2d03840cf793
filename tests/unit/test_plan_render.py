import json

from reconciler.plan import build_plan
from reconciler.plan.jsonout import plan_document
from reconciler.plan.render import render_plan
from tests.unit.factories import installed, record, tcx, xdp


def test_no_changes_message():
    d = xdp("a")
    text = render_plan(build_plan([d], [installed(d)], {str(d.address): record(d)}))
    assert text.strip() == "No changes. Kernel state matches the manifests."


def test_create_block_and_summary():
    text = render_plan(build_plan([xdp("xdp-counter")], [], {}, source="manifests"))
    assert "  # XdpProgram/xdp-counter[eth0] will be loaded" in text
    assert "  + XdpProgram/xdp-counter[eth0] {" in text
    assert '      + function        = "xdp_stats"' in text
    assert text.rstrip().endswith("Plan: 1 to add, 0 to change, 0 to destroy.")
    # The legend lists only the symbols this plan uses.
    assert "  + load" in text and "unload" not in text


def test_update_replace_and_delete_blocks():
    upd = xdp("upd", "eth1", priority=60)
    rep = tcx("rep", "eth2", priority=5)
    gone = xdp("gone", "eth3")
    plan = build_plan(
        [upd, rep],
        [installed(upd), installed(rep), installed(gone)],
        {
            str(upd.address): record(upd, priority=55),
            str(rep.address): record(rep, priority=9),
            str(gone.address): record(gone),
        },
    )
    text = render_plan(plan)
    assert "# XdpProgram/upd[eth1] will be updated in-place" in text
    assert "~ priority        = 55 -> 60" in text
    assert "# TcxProgram/rep[eth2] must be replaced" in text
    assert "+/- TcxProgram/rep[eth2] {" in text
    assert "~ priority        = 9 -> 5  # forces replacement" in text
    assert "# XdpProgram/gone[eth3] will be unloaded" in text
    assert "# (because it is no longer in the manifests)" in text
    assert "Plan: 1 to add, 1 to change, 2 to destroy." in text


def test_json_document_shape():
    gone = xdp("gone", "eth3")
    rep = tcx("rep", priority=5)
    plan = build_plan(
        [xdp("new"), rep],
        [installed(gone), installed(rep)],
        {str(gone.address): record(gone), str(rep.address): record(rep, priority=1)},
        source="dir",
        revision="abc",
    )
    doc = json.loads(json.dumps(plan_document(plan)))
    assert doc["format_version"] == "1.0"
    by_addr = {c["address"]: c for c in doc["resource_changes"]}
    assert by_addr["XdpProgram/new[eth0]"]["change"]["actions"] == ["create"]
    assert by_addr["XdpProgram/new[eth0]"]["change"]["before"] is None
    assert by_addr["XdpProgram/gone[eth3]"]["change"]["actions"] == ["delete"]
    assert by_addr["TcxProgram/rep[eth0]"]["change"]["actions"] == ["create", "delete"]
    assert by_addr["TcxProgram/rep[eth0]"]["change"]["replace_paths"] == ["priority"]
    assert doc["summary"] == {"add": 2, "change": 0, "destroy": 2}
    assert doc["revision"] == "abc"


def test_error_lines_are_shown():
    plan = build_plan([], [], {}, errors=["XdpProgram/a[eth9] (x.yaml:1): interface 'eth9' ..."])
    assert render_plan(plan).startswith("Error: XdpProgram/a[eth9]")


def test_unselected_manifests_are_listed_on_request_and_in_json():
    from reconciler.plan.render import render_unselected

    why = 'label kubernetes.io/hostname is "web1", not in [db1]'
    plan = build_plan([], [], {}, unselected=[("XdpProgram/db-fw", "db.yaml:1", why)])
    text = render_unselected(plan)
    assert "Manifests not selected for this host:" in text
    assert f"  XdpProgram/db-fw (db.yaml:1): {why}" in text
    assert plan_document(plan)["unselected"] == [
        {"resource": "XdpProgram/db-fw", "origin": "db.yaml:1", "reason": why}
    ]
    assert "All manifests are selected" in render_unselected(build_plan([], [], {}))


def test_the_plan_says_why_a_map_user_waits_for_its_owner():
    from tests.unit.factories import tracepoint

    owner = tracepoint("owner")
    user = tracepoint("user")
    user = type(user)(**{**user.__dict__, "depends_on": (owner.address,)})
    text = render_plan(build_plan([owner, user], [], {}))
    assert f"# (uses the maps of {owner.address}, so it is loaded after it)" in text
    doc = plan_document(build_plan([owner, user], [], {}))
    by = {c["address"]: c["change"] for c in doc["resource_changes"]}
    assert by[str(user.address)]["uses_maps_of"] == [str(owner.address)]
