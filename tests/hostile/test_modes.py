"""What bpfman writes is owner-only: the state dir and the bpffs root are created 0700, so other
users can neither read what runs where nor reach the pinned programs and maps."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.cli.conftest import EXAMPLES, tracepoint_manifest

pytestmark = pytest.mark.kernel


def test_state_and_pin_directories_are_owner_only(no_leaks, bpfman, mdir) -> None:
    bc = mdir.bytecode(EXAMPLES / "bytecode" / "tracepoint_counter.o")
    mdir.write("tp.yaml", tracepoint_manifest("tp", bc, "syscalls/sys_enter_getpid"))
    bpfman.run("apply", mdir.source, "--auto-approve")
    try:
        for directory in (bpfman.state, bpfman.root):
            mode = stat.S_IMODE(Path(directory).stat().st_mode)
            assert mode == 0o700, f"{directory} is {oct(mode)}, not 0o700"
    finally:
        bpfman.run("destroy", "--auto-approve")
