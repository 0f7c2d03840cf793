"""The bpffs root and the state dir through the real executable: every command that uses them
refuses a bad one with one clear line before it touches anything, `validate` never looks at
them, and a state dir that cannot be created (read-only file system) is an error, not a
traceback. Pin paths too long for the root are a plan error naming the address."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests import support
from tests.cli.conftest import EXAMPLES, tracepoint_manifest

pytestmark = pytest.mark.kernel

COMMANDS = [
    ("plan", "{src}"),
    ("apply", "{src}", "--auto-approve"),
    ("destroy", "--auto-approve"),
    ("list",),
    ("get", "TracepointProgram/tp[syscalls/sys_enter_getpid]"),
]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BPFMAN_")}
    return subprocess.run(
        [support.BPFMAN, "--no-color", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**base, **(env or {})},
        timeout=60,
    )


def one_error(p: subprocess.CompletedProcess, *fragments: str) -> str:
    shown = f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    assert p.returncode == 1, shown
    assert "Traceback" not in p.stderr, shown
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), shown
    for fragment in fragments:
        assert fragment in lines[0], f"missing {fragment!r}\n{shown}"
    return lines[0]


@pytest.fixture
def source(mdir) -> str:
    bc = mdir.bytecode(EXAMPLES / "bytecode" / "tracepoint_counter.o")
    mdir.write("tp.yaml", tracepoint_manifest("tp", bc, "syscalls/sys_enter_getpid"))
    return mdir.source


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_every_command_refuses_a_bpffs_root_off_bpffs(no_leaks, tmp_path, source, command):
    args = [a.replace("{src}", source) for a in command]
    state = tmp_path / "state"
    p = run("--bpffs-root", "/etc", "--state-dir", str(state), *args)
    one_error(p, "the bpffs root /etc is on", "not on bpffs", "--bpffs-root /sys/fs/bpf/bpfman")
    # The environment variable goes through the same check.
    p = run("--state-dir", str(state), *args, env={"BPFMAN_BPFFS_ROOT": "relative/root"})
    one_error(p, "the bpffs root relative/root is a relative path")
    assert not state.exists()  # refused before anything was made


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_every_command_refuses_a_state_dir_on_procfs(no_leaks, source, command):
    args = [a.replace("{src}", source) for a in command]
    root = f"/sys/fs/bpf/{support.unique('bpfman-test-')}"
    p = run("--bpffs-root", root, "--state-dir", "/proc/bpfman", *args)
    one_error(p, "the state dir /proc/bpfman would be created in /proc, which is on procfs")
    p = run("--bpffs-root", root, *args, env={"BPFMAN_STATE_DIR": ""})
    one_error(p, "the state dir is empty (--state-dir or BPFMAN_STATE_DIR)")
    assert not Path(root).exists()


def test_validate_never_looks_at_the_host_paths(source):
    p = run("--bpffs-root", "/etc", "--state-dir", "/proc/bpfman", "validate", source)
    assert p.returncode == 0 and "Success! 1 manifest valid." in p.stdout, p.stderr


def test_a_state_dir_on_a_read_only_file_system(no_leaks, tmp_path, source):
    """plan reads only, so it works; apply must create the state dir: one clear error, and the
    kernel is untouched (the lock is taken before any step)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    root = f"/sys/fs/bpf/{support.unique('bpfman-test-')}"
    b = f"{support.BPFMAN} --no-color --bpffs-root {root} --state-dir {ro}/state"
    script = f"""
set -e
mount -t tmpfs -o ro tmpfs {ro}
{b} plan {source} >/dev/null
{b} apply {source} --auto-approve >/dev/null 2>{tmp_path}/err && exit 9 || echo "exit $?"
"""
    p = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0 and p.stdout.strip() == "exit 1", p.stdout + p.stderr
    err = (tmp_path / "err").read_text()
    assert err.count("Error:") == 1 and "Traceback" not in err, err
    assert f"cannot create the state dir {ro}/state: Read-only file system" in err
    assert "choose a --state-dir on a writable file system" in err
    assert not Path(root).exists()  # refused before the root was even created


def test_a_bpffs_root_too_long_for_path_max_is_a_plan_error(no_leaks, tmp_path, source):
    """Each part of the root fits in NAME_MAX, but with the pin paths under it the whole path
    would not fit in PATH_MAX: the plan says so by address, before anything is created."""
    base = Path("/sys/fs/bpf") / support.unique("bpfman-test-")
    root = base.joinpath(*["d" * 250] * 15)  # about 3.8 KiB: the root itself is a valid path
    p = run("--bpffs-root", str(root), "--state-dir", str(tmp_path / "state"), "plan", source)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "Traceback" not in p.stderr and p.stderr.count("Error:") == 1, p.stderr
    assert "TracepointProgram/tp[syscalls/sys_enter_getpid] (manifests/tp.yaml:1)" in p.stdout
    assert "over the limit of 4095 (PATH_MAX); choose a shorter --bpffs-root" in p.stdout
    assert not base.exists()
