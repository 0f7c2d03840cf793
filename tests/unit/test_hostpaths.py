"""The bpffs root and the state dir are checked against real paths of this host (statfs on /proc,
/sys, /etc, a temporary directory and /sys/fs/bpf), and every state file that is not a regular
file is one clear error: never a traceback, never a hang on a FIFO."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from reconciler import hostpaths
from reconciler.hostpaths import HostPathError, check_bpffs_root, check_state_dir
from reconciler.kernel.sys import bpffs, statfs
from reconciler.lock import ApplyLock, LockTimeout, LockUnusable
from reconciler.plan.planfile import PlanFileError
from reconciler.plan.planfile import load as load_plan
from reconciler.state import Record, StateError, StateStore

BPFFS = Path("/sys/fs/bpf")
needs_bpffs = pytest.mark.skipif(not bpffs.is_bpffs(BPFFS), reason="bpffs is not mounted")


def _refused(check, value) -> str:
    with pytest.raises(HostPathError) as e:
        check(value)
    message = str(e.value)
    assert "\n" not in message  # one line
    return message


# --- statfs --------------------------------------------------------------------------------------


def test_statfs_tells_the_pseudo_file_systems_from_real_ones(tmp_path):
    assert statfs.name_of(statfs.fs_type("/proc")) == "procfs"
    assert statfs.name_of(statfs.fs_type("/sys")) == "sysfs"
    assert statfs.fs_type("/proc") in statfs.PSEUDO
    assert statfs.fs_type("/sys") in statfs.PSEUDO
    for real in (tmp_path, Path("/etc")):
        assert statfs.fs_type(real) not in statfs.PSEUDO
    assert statfs.name_of(0x12345678) == "a file system of type 0x12345678"
    with pytest.raises(FileNotFoundError):
        statfs.fs_type(tmp_path / "absent")


@needs_bpffs
def test_statfs_knows_bpffs():
    assert statfs.fs_type(BPFFS) == statfs.BPF_FS_MAGIC
    assert statfs.name_of(statfs.BPF_FS_MAGIC) == "bpffs"
    assert statfs.BPF_FS_MAGIC in statfs.PSEUDO  # a state file cannot live there


# --- the bpffs root ------------------------------------------------------------------------------


def test_bpffs_root_must_be_given_and_absolute():
    assert "the bpffs root is empty (--bpffs-root or BPFMAN_BPFFS_ROOT)" in _refused(
        check_bpffs_root, ""
    )
    message = _refused(check_bpffs_root, "sys/fs/bpf/bpfman")
    assert "sys/fs/bpf/bpfman is a relative path" in message
    assert "--bpffs-root /sys/fs/bpf/bpfman" in message  # the fix


def test_bpffs_root_on_another_file_system_names_it(tmp_path):
    message = _refused(check_bpffs_root, "/etc")
    assert f"/etc is on {statfs.name_of(statfs.fs_type('/etc'))}, not on bpffs" in message
    assert "mount -t bpf bpf DIR" in message
    assert "is on procfs" in _refused(check_bpffs_root, "/proc")
    message = _refused(check_bpffs_root, str(tmp_path / "not" / "yet"))
    assert f"does not exist and would be created in {tmp_path}, which is on " in message


def test_bpffs_root_that_is_not_a_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    assert "file is a regular file, not a directory" in _refused(
        check_bpffs_root, str(tmp_path / "file")
    )
    message = _refused(check_bpffs_root, str(tmp_path / "file" / "below"))
    assert f"cannot be created: {tmp_path}/file is a regular file" in message


def test_bpffs_root_symlinks_are_resolved_first(tmp_path):
    (tmp_path / "to-etc").symlink_to("/etc")
    message = _refused(check_bpffs_root, str(tmp_path / "to-etc"))
    assert f"{tmp_path}/to-etc (/etc) is on " in message  # both what was given and where it leads


@needs_bpffs
def test_bpffs_root_on_bpffs_is_accepted_as_given(tmp_path):
    assert check_bpffs_root("/sys/fs/bpf") == BPFFS
    assert check_bpffs_root("/sys/fs/bpf/bpfman-absent/deeper") == BPFFS / "bpfman-absent/deeper"
    (tmp_path / "to-bpffs").symlink_to(BPFFS)
    assert check_bpffs_root(str(tmp_path / "to-bpffs" / "x")) == tmp_path / "to-bpffs" / "x"


def test_bpffs_root_under_an_unmounted_sys_fs_bpf_is_left_to_mount(monkeypatch):
    """A fresh host: nothing at /sys/fs/bpf yet, and apply mounts bpffs there itself
    (tests/cli/test_fresh_host.py does it for real); elsewhere there is no such exception."""
    monkeypatch.setattr(bpffs, "is_bpffs", lambda path: False)
    assert check_bpffs_root("/sys/fs/bpf/bpfman") == Path("/sys/fs/bpf/bpfman")
    assert "/etc is on " in _refused(check_bpffs_root, "/etc")


def test_a_symlink_loop_is_one_clear_error(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    assert "cannot be resolved" in _refused(check_bpffs_root, str(tmp_path / "a"))
    assert "cannot be resolved" in _refused(check_state_dir, str(tmp_path / "b"))


def test_a_control_character_in_a_path_is_escaped():
    message = _refused(check_bpffs_root, "bad\x1b[31mroot")
    assert "\x1b" not in message and "\\x1b" in message


# --- the state dir -------------------------------------------------------------------------------


def test_state_dir_must_be_given():
    message = _refused(check_state_dir, "")
    assert "the state dir is empty (--state-dir or BPFMAN_STATE_DIR)" in message
    assert "/run/bpfman" in message


def test_state_dir_that_is_not_a_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    message = _refused(check_state_dir, str(tmp_path / "file"))
    assert f"the state dir {tmp_path}/file is a regular file, not a directory" in message
    os.mkfifo(tmp_path / "fifo")
    assert "is a FIFO (named pipe), not a directory" in _refused(
        check_state_dir, str(tmp_path / "fifo")
    )
    message = _refused(check_state_dir, str(tmp_path / "file" / "state"))
    assert f"cannot be created: {tmp_path}/file is a regular file" in message


@pytest.mark.parametrize(
    "path, fs",
    [("/proc", "procfs"), ("/proc/bpfman", "procfs"), ("/sys/bpfman", "sysfs")],
)
def test_state_dir_on_a_pseudo_file_system_is_refused(path, fs):
    message = _refused(check_state_dir, path)
    assert f"on {fs}, a pseudo file system that cannot keep bpfman's state" in message


@needs_bpffs
def test_state_dir_on_bpffs_is_refused():
    assert "on bpffs, a pseudo file system" in _refused(check_state_dir, "/sys/fs/bpf/state")


def test_state_dir_on_a_real_file_system_is_accepted_as_given(tmp_path):
    assert check_state_dir(str(tmp_path)) == tmp_path
    assert check_state_dir(str(tmp_path / "a" / "b")) == tmp_path / "a" / "b"


@pytest.mark.parametrize("name, role", sorted(hostpaths.STATE_FILES.items()))
@pytest.mark.parametrize("make, kind", [(os.mkdir, "a directory"), (os.mkfifo, "a FIFO")])
def test_state_files_that_are_not_regular_files_are_refused(tmp_path, name, role, make, kind):
    make(tmp_path / name)
    message = _refused(check_state_dir, str(tmp_path))
    assert f"the {role} {tmp_path}/{name} is {kind}" in message
    assert "remove it (or move it away) and run again" in message


def test_state_files_that_are_symlinks_are_refused(tmp_path):
    (tmp_path / "lock").symlink_to("/etc/passwd")
    assert "the lock file" in _refused(check_state_dir, str(tmp_path))


# --- reading and writing the state files --------------------------------------------------------


def _bounded(fn, *args):
    """Run ``fn`` in a thread that must finish within 5 s (a FIFO must never block it)."""
    out: list[BaseException | None] = []

    def body():
        try:
            fn(*args)
            out.append(None)
        except BaseException as e:
            out.append(e)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(5)
    assert out, f"{fn} blocked"
    return out[0]


@pytest.mark.parametrize(
    "name, what", [("state.json", "state file"), ("journal.jsonl", "state journal")]
)
def test_load_refuses_a_state_file_that_is_a_directory_or_fifo(tmp_path, name, what):
    (tmp_path / name).mkdir()
    with pytest.raises(StateError, match=f"the {what} ") as e:
        StateStore(tmp_path).load(repair=True)
    assert "is a directory, not a regular file" in str(e.value)
    assert (tmp_path / name).is_dir()  # not moved aside: it is not a state bpfman wrote
    (tmp_path / name).rmdir()
    os.mkfifo(tmp_path / name)
    error = _bounded(StateStore(tmp_path).load)
    assert isinstance(error, StateError) and "a FIFO (named pipe)" in str(error)


def test_load_refuses_a_state_file_over_the_limit(tmp_path, monkeypatch):
    import reconciler.state

    monkeypatch.setattr(reconciler.state, "MAX_FILE_SIZE", 100)
    (tmp_path / "state.json").write_text(" " * 101)
    with pytest.raises(StateError, match="is 101 bytes, over the limit of 100 bytes"):
        StateStore(tmp_path).load()


def test_journal_append_never_blocks_on_a_fifo_nor_follows_a_symlink(tmp_path):
    os.mkfifo(tmp_path / "journal.jsonl")
    error = _bounded(StateStore(tmp_path).put, Record("a", {}))
    assert isinstance(error, StateError) and "is a FIFO" in str(error)
    os.unlink(tmp_path / "journal.jsonl")
    target = tmp_path / "elsewhere"
    target.write_text("untouched\n")
    (tmp_path / "journal.jsonl").symlink_to(target)
    error = _bounded(StateStore(tmp_path).put, Record("a", {}))
    assert isinstance(error, StateError) and "a symbolic link" in str(error)
    assert target.read_text() == "untouched\n"


@pytest.mark.parametrize(
    "make, kind",
    [
        (os.mkdir, "a directory"),
        (os.mkfifo, "a FIFO (named pipe)"),
        (lambda p: p.symlink_to(p.parent / "elsewhere"), "a symbolic link"),
    ],
)
def test_lock_that_is_not_a_regular_file_is_one_clear_error(tmp_path, make, kind):
    (tmp_path / "elsewhere").write_text("untouched\n")
    make(tmp_path / "lock")
    error = _bounded(ApplyLock(tmp_path, timeout=0).acquire)
    assert isinstance(error, LockUnusable) and isinstance(error, LockTimeout)
    assert f"the lock file {tmp_path}/lock is {kind}, not a regular file" in str(error)
    assert (tmp_path / "elsewhere").read_text() == "untouched\n"  # never written through


def test_lock_says_when_the_state_dir_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(LockUnusable, match="cannot create the state dir .*Not a directory"):
        ApplyLock(tmp_path / "file" / "state").acquire()


# --- saved plan files ----------------------------------------------------------------------------


@pytest.mark.parametrize("make, kind", [(os.mkdir, "a directory"), (os.mkfifo, "a FIFO")])
def test_a_saved_plan_that_is_not_a_regular_file_is_refused(tmp_path, make, kind):
    make(tmp_path / "plan")
    error = _bounded(load_plan, tmp_path / "plan", tmp_path)
    assert isinstance(error, PlanFileError)
    assert f"cannot read saved plan {tmp_path}/plan: it is {kind}" in str(error)
