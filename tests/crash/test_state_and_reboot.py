"""A damaged state file is reported, moved aside and rebuilt from the pins; a reboot (empty
bpffs, empty state) or half of one is planned honestly and converges without leaks."""

from __future__ import annotations

import json
import shutil

import pytest

from tests import support
from tests.crash.conftest import assert_kernel_holds_exactly, managed_pins, plan_exit

pytestmark = pytest.mark.kernel


def _truncate(path):
    path.write_text(path.read_text()[: len(path.read_text()) // 2])


def _garbage(path):
    path.write_bytes(b"\x00\xffnot json at all\n")


def _journal_middle(state):
    (state / "state.json").unlink()
    lines = (state / "journal.jsonl").read_text().splitlines(keepends=True)
    lines.insert(len(lines) // 2, "{corrupt\n")
    (state / "journal.jsonl").write_text("".join(lines))


def _journal_torn_tail(state):
    (state / "state.json").unlink()
    with open(state / "journal.jsonl", "a") as f:
        f.write('{"op":"put","record":{"addr')


def _journal_of_everything(state):
    """Turn the snapshot into a journal (what a killed first apply would leave)."""
    doc = json.loads((state / "state.json").read_text())
    with open(state / "journal.jsonl", "w") as f:
        for r in doc["records"]:
            f.write(json.dumps({"op": "put", "record": r}) + "\n")


@pytest.mark.parametrize(
    "damage, file, reported",
    [
        ("truncated", "state.json", "truncated"),
        ("garbage", "state.json", "is corrupt"),
        ("journal-middle", "journal.jsonl", "is corrupt"),
        ("journal-torn-tail", None, None),
    ],
)
def test_damaged_state_is_reported_moved_aside_and_rebuilt(
    baseline, b, veth, manifests, damage, file, reported
):
    m = manifests
    b.run("apply", m.v2.source, "--auto-approve")
    if damage == "truncated":
        _truncate(b.state / "state.json")
    elif damage == "garbage":
        _garbage(b.state / "state.json")
    else:
        _journal_of_everything(b.state)
        (_journal_middle if damage == "journal-middle" else _journal_torn_tail)(b.state)
    plan = b.run("plan", m.v2.source, expect=None)
    if file is None:  # a torn last line is what a kill leaves: ignored, nothing else lost
        assert plan.returncode == 0 and "corrupt" not in plan.stderr
    else:
        assert f"Warning: the state is corrupt: {b.state / file}" in plan.stderr
        assert reported in plan.stderr and f"moved aside to {file}.corrupt-" in plan.stderr
        assert len(list(b.state.glob(f"{file}.corrupt-*"))) == 1
        assert "no record in the state file" in plan.stdout  # rebuilt: pins planned as replaced
    b.run("apply", m.v2.source, "--auto-approve")
    assert plan_exit(b, m.v2.source) == 0
    assert_kernel_holds_exactly(b, baseline, m.v2_programs, m.v2_links)
    b.run("destroy", "--auto-approve")
    assert_kernel_holds_exactly(b, baseline, 0, 0)


def _reboot_bpffs(b, veth) -> None:
    """What a reboot does to the kernel: every pin gone, netlink XDP gone (links and programs
    then have no reference left)."""
    support.sh("ip", "-n", veth.ns_a, "link", "set", "eth0", "xdpgeneric", "off")
    support.sh("ip", "-n", veth.ns_a, "link", "set", "eth0", "xdp", "off", check=False)
    support.remove_tree(b.root)


def test_reboot_empty_bpffs_and_state_plans_everything_and_restores_it(
    baseline, b, veth, manifests
):
    m = manifests
    b.run("apply", m.v2.source, "--auto-approve")
    _reboot_bpffs(b, veth)
    shutil.rmtree(b.state)
    assert_kernel_holds_exactly(b, baseline, 0, 0)
    plan = b.run("plan", m.v2.source, expect=None).stdout
    assert "Plan: 6 to add, 0 to change, 0 to destroy." in plan
    b.run("apply", m.v2.source, "--auto-approve")
    assert plan_exit(b, m.v2.source) == 0
    assert_kernel_holds_exactly(b, baseline, m.v2_programs, m.v2_links)


def test_stale_state_after_a_bpffs_wipe_plans_loads_and_says_why(baseline, b, veth, manifests):
    m = manifests
    b.run("apply", m.v2.source, "--auto-approve")
    _reboot_bpffs(b, veth)  # /run/bpfman on disk survived, bpffs did not
    plan = b.run("plan", m.v2.source, expect=None).stdout
    assert "Plan: 6 to add" in plan and "pins are missing" in plan
    b.run("apply", m.v2.source, "--auto-approve")
    assert plan_exit(b, m.v2.source) == 0
    assert_kernel_holds_exactly(b, baseline, m.v2_programs, m.v2_links)


def test_pins_without_state_are_replaced_without_leaking_the_old_programs(
    baseline, b, veth, manifests
):
    m = manifests
    b.run("apply", m.v2.source, "--auto-approve")
    shutil.rmtree(b.state)
    plan = b.run("plan", m.v2.source, expect=None).stdout
    assert "no record in the state file" in plan
    b.run("apply", m.v2.source, "--auto-approve")
    assert plan_exit(b, m.v2.source) == 0
    assert len(managed_pins(b.root)[0]) == 6
    assert_kernel_holds_exactly(b, baseline, m.v2_programs, m.v2_links)
