"""Two bpfman runs at once: the second waits for the state lock *before* it observes the kernel or
reads the state, so it plans against what the first one did, and its summary counts only what it
did itself. The first is held mid-step with the test-only pause hook, released with SIGUSR1."""

from __future__ import annotations

import json
import os
import pty
import select
import time

import pytest

from tests.cli.conftest import tracepoint_manifest
from tests.crash.conftest import (
    TP_O,
    Paused,
    Started,
    assert_kernel_holds_exactly,
    command,
    plan_exit,
)

pytestmark = pytest.mark.kernel

WAITING = "Waiting for the state lock held by pid"
GETGID = "syscalls/sys_enter_getgid"


def waiting_behind(second: Started, holder: Paused) -> None:
    """The second run says, once, that it waits, and for whom."""
    line = second.wait_line(WAITING)
    assert line is not None, second.seen
    assert f"{WAITING} {holder.pid} (bpfman " in line


@pytest.mark.parametrize("output", ["text", "json"])
def test_second_apply_of_the_same_manifests_waits_then_has_nothing_to_do(
    baseline, b, veth, manifests, output
):
    m = manifests
    b.run("apply", m.v1.source, "--auto-approve")
    first = Paused(b, m.v2.source, 3, "kernel")  # mid-plan: an unload and a reorder done
    json_flag = ("--json",) if output == "json" else ()
    second = Started(b, "apply", m.v2.source, "--auto-approve", "--lock-timeout", "60", *json_flag)
    waiting_behind(second, first)
    code, out, err = first.resume()
    assert code == 0 and "Apply complete! Resources: 5 added, 1 changed, 4 destroyed." in out, err
    code, out, err = second.finish()
    assert code == 0, out + err
    assert err.count(WAITING) == 1
    if output == "json":
        doc = json.loads(out)
        assert doc["applied"] is True and doc["outcomes"] == []
        assert doc["result"] == {"added": 0, "changed": 0, "destroyed": 0}
    else:
        assert "Apply complete! Resources: 0 added, 0 changed, 0 destroyed." in out
        assert "will be" not in out  # it planned nothing: no stale plan shown either
    assert plan_exit(b, m.v2.source) == 0
    assert_kernel_holds_exactly(b, baseline, m.v2_programs, m.v2_links)


def test_second_apply_of_other_manifests_makes_exactly_its_own_changes(
    baseline, b, veth, manifests, tmp_path
):
    m = manifests
    m.v2.write("tp4.yaml", tracepoint_manifest("tp4", m.v2.bytecode(TP_O), GETGID))
    b.run("apply", m.v1.source, "--auto-approve")
    # The first applies v2 without tp4 (it read its manifests before the second was written).
    m.v2.remove("tp4.yaml")
    first = Paused(b, m.v2.source, 2, "kernel")
    m.v2.write("tp4.yaml", tracepoint_manifest("tp4", m.v2.bytecode(TP_O), GETGID))
    second = Started(b, "apply", m.v2.source, "--auto-approve", "--lock-timeout", "60")
    waiting_behind(second, first)
    code, out, err = first.resume()
    assert code == 0, out + err
    code, out, err = second.finish()
    assert code == 0, out + err
    assert "TracepointProgram/tp4[syscalls/sys_enter_getgid]: Loading complete" in out
    assert "Apply complete! Resources: 1 added, 0 changed, 0 destroyed." in out
    assert plan_exit(b, m.v2.source) == 0
    assert_kernel_holds_exactly(b, baseline, m.v2_programs + 1, m.v2_links + 1)


def test_destroy_racing_an_apply_destroys_what_the_apply_made(baseline, b, veth, manifests):
    m = manifests
    b.run("apply", m.v1.source, "--auto-approve")
    first = Paused(b, m.v2.source, 2, "kernel")
    destroy = Started(b, "destroy", "--auto-approve", "--lock-timeout", "60")
    waiting_behind(destroy, first)
    code, out, err = first.resume()
    assert code == 0, out + err
    code, out, err = destroy.finish()
    assert code == 0, out + err
    assert f"Destroy complete! Resources: 0 added, 0 changed, {m.v2_programs} destroyed." in out
    assert_kernel_holds_exactly(b, baseline, 0, 0)
    assert plan_exit(b, m.v1.source) == 2  # everything is to be loaded again


def test_apply_racing_a_destroy_loads_everything_again(baseline, b, veth, manifests):
    m = manifests
    b.run("apply", m.v1.source, "--auto-approve")
    destroy = Paused(b, "", 2, "kernel", args=("destroy", "--auto-approve"))
    assert destroy.marker is not None
    second = Started(b, "apply", m.v1.source, "--auto-approve", "--lock-timeout", "60")
    waiting_behind(second, destroy)
    code, out, err = destroy.resume()
    assert code == 0, out + err
    assert f"Destroy complete! Resources: 0 added, 0 changed, {m.v1_programs} destroyed." in out
    code, out, err = second.finish()
    assert code == 0, out + err
    assert f"Apply complete! Resources: {m.v1_programs} added, 0 changed, 0 destroyed." in out
    assert plan_exit(b, m.v1.source) == 0
    assert_kernel_holds_exactly(b, baseline, m.v1_programs, 4)


def test_the_lock_is_held_while_asking(baseline, b, veth, manifests):
    """As Terraform holds its state lock at the prompt: what was shown is what is applied."""
    m = manifests
    cmd = command(b, "apply", m.v1.source)
    pid, fd = pty.fork()
    if pid == 0:  # the child: bpfman on a terminal, asking
        env = {k: v for k, v in os.environ.items() if not k.startswith("BPFMAN_")}
        os.execvpe(cmd[0], cmd, env)
    out = b""
    try:
        deadline = time.monotonic() + 30
        while b"Enter a value:" not in out and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                out += os.read(fd, 4096)
        assert b"Enter a value:" in out, out
        other = b.run("apply", m.v1.source, "--auto-approve", "--lock-timeout", "0.3", expect=1)
        assert f"pid {pid} (bpfman " in other.stderr, other.stderr
        destroy = b.run("destroy", "--auto-approve", "--lock-timeout", "0.3", expect=1)
        assert f"pid {pid} (bpfman " in destroy.stderr
        assert b.run("plan", m.v1.source, "--detailed-exitcode", expect=2)  # never waits
        os.write(fd, b"yes\n")
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert b"Apply complete! Resources: 5 added, 0 changed, 0 destroyed." in out
    assert_kernel_holds_exactly(b, baseline, m.v1_programs, 4)
