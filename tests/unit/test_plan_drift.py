import dataclasses

from reconciler.kernel.types import TracepointLinkView, XdpView
from reconciler.plan import build_plan
from reconciler.plan.drift import detect
from reconciler.plan.jsonout import plan_document
from reconciler.plan.render import render_plan
from tests.unit.factories import installed, record, xdp

A = xdp("a")
KEY = str(A.address)
HERE = {(None, "eth0")}


def rec(**extra):
    r = record(A)
    r.extra.update(extra)
    return r


def test_nothing_changed_is_no_drift():
    assert detect([installed(A)], {KEY: rec(attach={"ifname": "eth0", "ifindex": 3})}, HERE) == []


def test_pins_removed_outside_bpfman():
    (d,) = detect([], {KEY: rec()}, HERE)
    assert "its pins are gone" in d.what and "program id 10" in d.what


def test_program_detached_outside_bpfman():
    (d,) = detect([installed(A, attached=False)], {KEY: rec(attach={"ifname": "eth0"})}, HERE)
    assert d.what.startswith("was detached outside bpfman on eth0")


def test_interface_deleted():
    (d,) = detect([installed(A, attached=False)], {KEY: rec(attach={"ifname": "eth0"})}, set())
    assert d.what == "lost its interface: eth0 no longer exists"


def test_interface_recreated_or_renamed():
    recorded = {KEY: rec(attach={"ifindex": 3, "ifname": "eth0", "mode": "native"})}
    moved = dataclasses.replace(installed(A), attach=XdpView(9, "eth0", "native"))
    (d,) = detect([moved], recorded, HERE)
    assert d.what == "runs on a recreated interface: ifindex 3 -> 9"
    renamed = dataclasses.replace(installed(A), attach=XdpView(3, "lan0", "native"))
    (d,) = detect([renamed], recorded, HERE)
    assert d.what == "runs on a renamed interface: eth0 -> lan0"


def test_a_view_without_an_interface_is_no_interface_drift():
    recorded = {KEY: rec(attach={"ifindex": 3, "ifname": "eth0"})}
    elsewhere = dataclasses.replace(installed(A), attach=TracepointLinkView("sys_enter_getpid"))
    assert detect([elsewhere], recorded, HERE) == []


def test_program_replaced_by_another_loader():
    (d,) = detect([installed(A, prog_id=99)], {KEY: rec()}, HERE)
    assert "program id 10 -> 99" in d.what


def test_pins_without_a_record():
    (d,) = detect([installed(A)], {}, HERE)
    assert "no record in the state file" in d.what


def test_drift_is_shown_before_the_actions_and_in_json():
    plan = build_plan(
        [A],
        [installed(A, attached=False)],
        {KEY: rec()},
        drift=detect([installed(A, attached=False)], {KEY: rec()}, HERE),
    )
    text = render_plan(plan)
    assert text.index("Objects have changed outside of bpfman") < text.index("will perform")
    assert plan_document(plan)["resource_drift"] == [
        {"address": KEY, "change": dataclasses.asdict(plan.drift[0])["what"]}
    ]
