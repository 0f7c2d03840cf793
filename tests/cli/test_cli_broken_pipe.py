"""A reader that goes away (``bpfman apply | head -1``) must not stop an apply half-way or end
in a traceback: the output it would have read is dropped and the work is done, as bpftool and
bpfman's own list then show."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests import support
from tests.cli.conftest import EXAMPLES, tracepoint_manifest

pytestmark = pytest.mark.kernel

TP_O = EXAMPLES / "bytecode" / "tracepoint_counter.o"
EVENTS = ["getpid", "getppid", "getuid", "geteuid", "getgid", "getegid"]


def piped(bpfman, *args: str) -> subprocess.CompletedProcess[str]:
    """``bpfman ARGS | head -c 1``: the reader leaves after the first byte."""
    cmd = [support.BPFMAN, "--bpffs-root", str(bpfman.root), "--state-dir", str(bpfman.state),
           *args]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPFMAN_")}
    script = " ".join(f"'{a}'" for a in cmd) + " 2>&3 | head -c 1 >/dev/null"
    return subprocess.run(
        ["bash", "-c", f"exec 3>&2; {script}; echo ${{PIPESTATUS[0]}} >&2"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


def test_apply_and_destroy_finish_when_the_reader_goes_away(no_leaks, bpfman, mdir) -> None:
    code = mdir.bytecode(TP_O)
    for event in EVENTS:
        mdir.write(f"{event}.yaml", tracepoint_manifest(event, code, f"syscalls/sys_enter_{event}"))
    p = piped(bpfman, "apply", mdir.source, "--auto-approve")
    assert "Traceback" not in p.stderr and p.stderr.strip().splitlines()[-1] == "0", p.stderr
    listed = json.loads(bpfman.run("list", "--json").stdout)["attachments"]
    assert len(listed) == len(EVENTS) and all(e["kernel"]["attached"] for e in listed)
    ids = {e["kernel"]["prog_id"] for e in listed}
    assert ids <= support.prog_ids()  # bpftool sees every one
    p = piped(bpfman, "destroy", "--auto-approve", "--json")
    assert "Traceback" not in p.stderr and p.stderr.strip().splitlines()[-1] == "0", p.stderr
    assert json.loads(bpfman.run("list", "--json").stdout)["attachments"] == []
