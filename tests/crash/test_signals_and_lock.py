"""SIGTERM/SIGINT finish the step in progress and stop; two applies never interleave; plan never
waits for an apply."""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.crash.conftest import Paused, assert_kernel_holds_exactly, plan_exit

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_the_step_stops_and_the_next_apply_converges(
    baseline, b, veth, manifests, signum
):
    m = manifests
    b.run("apply", m.v1.source, "--auto-approve")
    plan = json.loads(b.run("plan", m.v2.source, "--json").stdout)
    steps = [c for c in plan["resource_changes"] if c["change"]["actions"] != ["no-op"]]
    # Paused in the worst window of step 2: the signal arrives with its kernel change unrecorded.
    apply = Paused(b, m.v2.source, 2, "kernel")
    code, out, err = apply.signal(signum)
    assert code == 1
    assert f"interrupted by {signal.Signals(signum).name}: stopped after 2 of 7 steps" in err
    for c in steps[:2]:
        assert f"{c['address']}: " in out and "complete after" in out
    for c in steps[2:]:
        assert f"{c['address']}: " not in out  # later steps never started
    # The state is compacted and consistent: no journal, and the plan holds exactly the 5 rest.
    assert not (b.state / "journal.jsonl").exists()
    rest = json.loads(b.run("plan", m.v2.source, "--json").stdout)
    left = [c["address"] for c in rest["resource_changes"] if c["change"]["actions"] != ["no-op"]]
    assert left == [c["address"] for c in steps[2:]]
    b.run("apply", m.v2.source, "--auto-approve")
    assert plan_exit(b, m.v2.source) == 0
    assert_kernel_holds_exactly(b, baseline, m.v2_programs, m.v2_links)


def test_second_apply_waits_then_fails_naming_the_holder_and_plan_never_waits(
    baseline, b, veth, manifests
):
    m = manifests
    b.run("apply", m.v1.source, "--auto-approve")
    holder = Paused(b, m.v2.source, 1, "kernel")
    try:
        t0 = time.monotonic()
        second = b.run("apply", m.v2.source, "--auto-approve", "--lock-timeout", "0.5", expect=1)
        assert f"pid {holder.pid} (bpfman " in second.stderr and " apply " in second.stderr
        assert time.monotonic() - t0 < 8
        # plan reads lock-free (the snapshot is replaced atomically, the journal is append-only
        # and its in-flight step is shown as interrupted): it answers while the apply holds
        # the lock, without waiting for it.
        t0 = time.monotonic()
        p = b.run("plan", m.v2.source, "--detailed-exitcode", expect=2)
        assert time.monotonic() - t0 < 8 and "Plan:" in p.stdout
    finally:
        holder.kill()
    # The killed holder's lock is no obstacle.
    b.run("apply", m.v2.source, "--auto-approve", "--lock-timeout", "0.5")
    assert plan_exit(b, m.v2.source) == 0
    assert_kernel_holds_exactly(b, baseline, m.v2_programs, m.v2_links)
