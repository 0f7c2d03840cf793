"""The host paths bpfman keeps things in, checked before any command uses them.

Every command that touches the host (plan, apply, destroy, list, get) makes its context with
:func:`reconciler.engine.make_context`, which checks both paths here first; ``validate`` never
asks the host. Each refusal is one line naming the value, what it is, and the fix:

- the **bpffs root** (``--bpffs-root``, ``BPFMAN_BPFFS_ROOT``) must be a non-empty absolute path;
  symlinks resolved, it must be a directory on bpffs or, if it does not exist yet, be created
  on bpffs (its nearest existing ancestor is). The exception is a root under ``/sys/fs/bpf``
  while nothing is mounted there: bpfman mounts bpffs there itself (a fresh host).
- the **state dir** (``--state-dir``, ``BPFMAN_STATE_DIR``) must be non-empty; if it exists, a
  directory; and it (or, not created yet, its nearest existing ancestor) must be on a file
  system that can keep a file, not a pseudo one (procfs, sysfs, bpffs...:
  :data:`reconciler.kernel.statfs.PSEUDO`). The files bpfman keeps in it (``state.json``,
  ``journal.jsonl``, ``lock``) must be regular files when they exist.

Pin paths are derived from addresses: :func:`pin_path_errors` checks a plan's against NAME_MAX
and PATH_MAX with the root (validation has already checked what it could without the host).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.files import kind_of
from reconciler.kernel.sys import bpffs, statfs
from reconciler.lock import LOCK_FILE
from reconciler.state import JOURNAL_FILE, STATE_FILE

if TYPE_CHECKING:
    from reconciler.spec.model import DesiredAttachment

ROOT_FIX = (
    f"give a directory on bpffs, e.g. --bpffs-root {bpffs.DEFAULT_MOUNT}/bpfman (the default)"
)
MOUNT_FIX = f"{ROOT_FIX}, or mount bpffs there first: mount -t bpf bpf DIR"
STATE_FIX = (
    "choose a directory on a real file system, e.g. --state-dir /run/bpfman (the default) or "
    "/var/lib/bpfman"
)


class HostPathError(Exception):
    """The bpffs root or the state dir cannot be used; the message says why and the fix."""


def shown(value: str | os.PathLike[str]) -> str:
    """A path as messages show it: as is when printable, else quoted with escapes (a control
    character in a path must not reach a terminal raw)."""
    text = os.fspath(value)
    return text if text.isprintable() else ascii(text)


def _existing(path: Path) -> tuple[Path, os.stat_result]:
    """The nearest of ``path`` and its ancestors that exists, and its stat (symlinks followed;
    ``path`` is absolute and resolved)."""
    for p in [path, *path.parents]:
        try:
            return p, os.stat(p)
        except (FileNotFoundError, NotADirectoryError):
            continue
    raise FileNotFoundError(f"no part of {path} exists")  # "/" always does


def _resolve(path: Path, what: str) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop: RuntimeError before Python 3.13
        raise HostPathError(f"{what} {shown(path)} cannot be resolved ({e})") from None


def check_bpffs_root(value: str | os.PathLike[str]) -> Path:
    """``value`` as a Path if it can be the bpffs root, else HostPathError."""
    text = os.fspath(value)
    if not text:
        raise HostPathError(
            f"the bpffs root is empty (--bpffs-root or BPFMAN_BPFFS_ROOT); {ROOT_FIX}"
        )
    what = f"the bpffs root {shown(text)}"
    if not os.path.isabs(text):
        raise HostPathError(f"{what} is a relative path, not an absolute one; {ROOT_FIX}")
    real = _resolve(Path(text), "the bpffs root")
    via = f" ({shown(real)})" if real != Path(text) else ""
    if (real == bpffs.DEFAULT_MOUNT or bpffs.DEFAULT_MOUNT in real.parents) and not bpffs.is_bpffs(
        bpffs.DEFAULT_MOUNT
    ):
        return Path(text)  # a fresh host: apply mounts bpffs at /sys/fs/bpf itself
    try:
        existing, st = _existing(real)
        magic = statfs.fs_type(existing)
    except PermissionError:
        raise  # not root: the CLI says so
    except OSError as e:
        raise HostPathError(f"{what}{via} cannot be used: {e.strerror or e}; {ROOT_FIX}") from None
    if existing == real:
        if not stat.S_ISDIR(st.st_mode):
            raise HostPathError(
                f"{what}{via} is {kind_of(st.st_mode)}, not a directory; {ROOT_FIX}"
            )
        if magic != statfs.BPF_FS_MAGIC:
            raise HostPathError(
                f"{what}{via} is on {statfs.name_of(magic)}, not on bpffs (a bpf file system), "
                f"so nothing can be pinned there; {MOUNT_FIX}"
            )
        return Path(text)
    if not stat.S_ISDIR(st.st_mode):
        raise HostPathError(
            f"{what}{via} cannot be created: {shown(existing)} is {kind_of(st.st_mode)}, not a "
            f"directory; {ROOT_FIX}"
        )
    if magic != statfs.BPF_FS_MAGIC:
        raise HostPathError(
            f"{what}{via} does not exist and would be created in {shown(existing)}, which is on "
            f"{statfs.name_of(magic)}, not on bpffs (a bpf file system); {MOUNT_FIX}"
        )
    return Path(text)


def check_state_dir(value: str | os.PathLike[str]) -> Path:
    """``value`` as a Path if it can be the state dir, else HostPathError."""
    text = os.fspath(value)
    if not text:
        raise HostPathError(
            f"the state dir is empty (--state-dir or BPFMAN_STATE_DIR); {STATE_FIX}"
        )
    what = f"the state dir {shown(text)}"
    real = _resolve(Path(text), "the state dir")
    via = f" ({shown(real)})" if real != Path(text).absolute() else ""
    try:
        existing, st = _existing(real)
        magic = statfs.fs_type(existing)
    except PermissionError:
        raise
    except OSError as e:
        raise HostPathError(f"{what}{via} cannot be used: {e.strerror or e}; {STATE_FIX}") from None
    if not stat.S_ISDIR(st.st_mode):
        if existing == real:
            raise HostPathError(
                f"{what}{via} is {kind_of(st.st_mode)}, not a directory; remove it, or {STATE_FIX}"
            )
        raise HostPathError(
            f"{what}{via} cannot be created: {shown(existing)} is {kind_of(st.st_mode)}, not a "
            f"directory; {STATE_FIX}"
        )
    if magic in statfs.PSEUDO:
        where = "is" if existing == real else f"would be created in {shown(existing)}, which is"
        raise HostPathError(
            f"{what}{via} {where} on {statfs.name_of(magic)}, a pseudo file system that cannot "
            f"keep bpfman's state; {STATE_FIX}"
        )
    if existing == real:
        for name, role in STATE_FILES.items():
            _require_regular(Path(text) / name, role)
    return Path(text)


# The files bpfman keeps in the state dir, as messages name them.
STATE_FILES = {STATE_FILE: "state file", JOURNAL_FILE: "state journal", LOCK_FILE: "lock file"}


def _require_regular(path: Path, role: str) -> None:
    """A file bpfman writes in the state dir, if it exists, must be a regular file (not even a
    symlink: the lock and the journal are written as root and must not be redirected)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except PermissionError:
        raise
    except OSError as e:
        raise HostPathError(f"the {role} {shown(path)} cannot be used: {e.strerror or e}") from None
    if not stat.S_ISREG(mode):
        raise HostPathError(
            f"the {role} {shown(path)} is {kind_of(mode)}, not a regular file; bpfman only ever "
            "writes a regular file there, so it does not move this aside itself: remove it (or "
            "move it away) and run again"
        )


def pin_path_errors(attachments: Iterable[DesiredAttachment], root: Path) -> list[str]:
    """Plan errors for attachments whose pins would have a name over NAME_MAX or a path over
    PATH_MAX under ``root`` (the kernel would refuse them with ENAMETOOLONG mid-apply).

    Validation already refuses every name it can compute without the host; what is left here is
    what only the host knows: discovered interface names, and the root's own length."""
    errors = []
    for d in attachments:
        dirs = [(d.address.pin_dir(), "its pin directory")]
        if d.program.maps_dir:
            dirs.append((d.program.maps_dir, "its maps directory"))
        for pin_dir, which in dirs:
            too_long = bpffs.too_long_component(pin_dir)
            if too_long is not None:
                part, n = too_long
                errors.append(
                    f"{d.address} ({d.origin}): {which} name {shown(_cut(part))} is {n} bytes in "
                    f"bpffs ('/', '%' and '.' take 3 bytes each), over the limit of "
                    f"{bpffs.NAME_MAX} (NAME_MAX); shorten the manifest's name or what its "
                    "index is made of"
                )
                break
            length = bpffs.deepest_path_length(root, pin_dir)
            if length >= bpffs.PATH_MAX:
                errors.append(
                    f"{d.address} ({d.origin}): {which} under the bpffs root {shown(root)} would "
                    f"hold paths of up to {length} bytes, over the limit of "
                    f"{bpffs.PATH_MAX - 1} (PATH_MAX); choose a shorter --bpffs-root"
                )
                break
    return errors


def _cut(text: str, keep: int = 60) -> str:
    return text if len(text) <= keep else f"{text[: keep - 3]}..."
