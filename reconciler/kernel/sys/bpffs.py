"""The bpf file system: mounting it, our root under it, and walking/removing trees of pins.

A *managed pin directory* is one holding a ``prog`` pin. ``%next`` (inside a pin directory) is
the staging area of an install or replace and is never reported as managed; neither is anything
starting with '.'.

bpffs refuses every name containing '.' (EPERM: dots are reserved for the kernel's own files,
like ``maps.debug``). Pin directory components are therefore stored with '.' written as
``%2E``, the way ``reconciler.address`` already writes '/' and '%' (an address never yields a
literal ``%2E`` or ``%next``, so the mapping is reversible).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from reconciler.kernel.sys import mounts, statfs
from reconciler.kernel.sys.statfs import BPF_FS_MAGIC
from reconciler.kernel.types import KernelError

DEFAULT_MOUNT = Path("/sys/fs/bpf")
PROG, LINK, MAPS, STAGING = "prog", "link", "maps", "%next"
_DOT = "%2E"
# Linux's limits (linux/limits.h): bytes in one path component, and in a whole path with its
# terminating NUL. A longer name fails only when the kernel sees it (ENAMETOOLONG), so plans
# and validation check names against these first.
NAME_MAX = 255
PATH_MAX = 4096
# The deepest path bpfman makes below a pin dir: a map parked while a replacement commits,
# ``<pin dir>/%next/old-maps/<map>`` (real.py ``_commit``), with a map name of up to NAME_MAX.
DEEPEST_BELOW_PIN_DIR = len(f"/{STAGING}/old-maps/") + NAME_MAX


def encode(pin_dir_component: str) -> str:
    return pin_dir_component.replace(".", _DOT)


def decode(fs_component: str) -> str:
    return fs_component.replace(_DOT, ".")


def check_pin_dir(pin_dir: str) -> None:
    """A pin dir is relative, with no empty, '.'-led or reserved parts (so it cannot escape the
    root, hide as staging, or decode to something else)."""
    parts = pin_dir.split("/")
    if (
        not pin_dir
        or pin_dir.startswith("/")
        or any(not p or p.startswith(".") or STAGING in p or _DOT in p for p in parts)
    ):
        raise KernelError(
            f"invalid pin directory {pin_dir!r}: it must be relative to the bpfman root, "
            f"and no part of it may be empty, start with '.' or contain {STAGING!r} or {_DOT!r}"
        )


def stored_length(component: str) -> int:
    """Bytes that one (decoded) pin dir component takes as a bpffs name: '.' is stored as
    ``%2E``, and names are bytes (UTF-8), not characters."""
    return len(os.fsencode(encode(component)))


def too_long_component(pin_dir: str) -> tuple[str, int] | None:
    """The first component of ``pin_dir`` over NAME_MAX once stored, with its length."""
    for part in pin_dir.split("/"):
        n = stored_length(part)
        if n > NAME_MAX:
            return part, n
    return None


def deepest_path_length(root: Path, pin_dir: str) -> int:
    """Bytes in the longest path bpfman may make for ``pin_dir`` under ``root`` (a path must
    stay under PATH_MAX, its NUL included)."""
    return len(os.fsencode(dir_of(root, pin_dir))) + DEEPEST_BELOW_PIN_DIR


def path_of(root: Path, pin_dir: str) -> Path:
    """Where a (decoded, '/'-separated) pin dir lives under ``root``."""
    return Path(dir_of(root, pin_dir))


def dir_of(root: str | os.PathLike[str], pin_dir: str) -> str:
    """``path_of`` as a string, for the paths walked once per program (no pathlib parsing)."""
    return os.path.join(root, *(encode(p) for p in pin_dir.split("/") if p))


def rel_of(root: str | os.PathLike[str], d: str | os.PathLike[str]) -> str:
    """The (decoded) pin dir of directory ``d`` under ``root``: ``dir_of``'s inverse."""
    top, d = os.path.normpath(root), os.path.normpath(d)
    if not d.startswith(top + "/"):
        raise ValueError(f"{d} is not under {top}")
    return "/".join(decode(p) for p in d[len(top) + 1 :].split("/"))


def skipped(name: str) -> bool:
    """bpfman's own bookkeeping (``%next`` staging, ``%tc``/``%xdp`` hooks, ``%spec-…`` marks:
    ``%`` and a letter, which no encoded pin-dir component starts with — those start ``%2``) and
    hidden entries: never part of the managed state."""
    return name.startswith(".") or (len(name) > 1 and name[0] == "%" and name[1].isalpha())


def fs_type(path: Path) -> int | None:
    """statfs(2) f_type of the file system holding ``path`` (None if it cannot be asked)."""
    try:
        return statfs.fs_type(path)
    except OSError:
        return None


def is_bpffs(path: Path) -> bool:
    return fs_type(path) == BPF_FS_MAGIC


def mount(target: Path = DEFAULT_MOUNT) -> None:
    """Mount bpffs at ``target`` unless it already is one (a fresh host may not have it)."""
    if is_bpffs(target):
        return
    target.mkdir(parents=True, exist_ok=True)
    err = mounts.mount("bpf", target, "mode=0700")
    if err:
        raise KernelError(f"cannot mount bpffs at {target}: {os.strerror(err)} (are you root?)")


def ensure_root(root: Path) -> None:
    """Make sure ``root`` is a directory on bpffs, owner-only, mounting /sys/fs/bpf if needed."""
    if (root == DEFAULT_MOUNT or DEFAULT_MOUNT in root.parents) and not is_bpffs(DEFAULT_MOUNT):
        mount(DEFAULT_MOUNT)
    existing = next((p for p in [root, *root.parents] if p.exists()), root)
    if not is_bpffs(existing):
        raise KernelError(
            f"bpfman root {root} is not on a bpf file system; choose a root under "
            f"{DEFAULT_MOUNT} or mount bpffs there first (mount -t bpf bpf DIR)"
        )
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Unpin every object under ``path`` and remove its directories (missing is fine).

    Unpinning drops the pin's reference: an object nobody else holds (no fd, no attachment,
    no other pin) is freed by the kernel.
    """
    path = os.fspath(path)
    try:
        os.rmdir(path)  # most often already emptied by the caller: one syscall
        return
    except FileNotFoundError:
        return
    except NotADirectoryError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    except OSError:
        pass  # not empty
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        for name in filenames:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(dirpath, name))
        for name in dirnames:
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(os.path.join(dirpath, name))
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(path)


def prune_empty_parents(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> None:
    """Remove now-empty directories from ``path`` up to (not including) ``root``."""
    p, top = os.path.normpath(path), os.path.normpath(root)
    while p.startswith(top + "/"):
        try:
            os.rmdir(p)
        except OSError:
            return
        p = os.path.dirname(p)


def makedirs(root: str | os.PathLike[str], path: str, mode: int = 0o777) -> list[str]:
    """Create ``path`` and its missing parents below ``root`` (which exists): top down, one
    mkdir each (os.makedirs stats every level bottom up first). ``path`` gets ``mode``, its
    parents the default. Returns the directories it created, top down."""
    top = os.path.normpath(root)
    if not path.startswith(top + "/"):
        raise ValueError(f"{path} is not under {top}")
    parts = path[len(top) + 1 :].split("/")
    here, created = top, []
    for i, part in enumerate(parts):
        here = f"{here}/{part}"
        try:
            os.mkdir(here, mode if i == len(parts) - 1 else 0o777)
            created.append(here)
        except FileExistsError:
            pass
    return created


def managed_dirs(root: Path) -> list[str]:
    """Pin directories (relative to root, decoded, '/'-separated, sorted) holding a ``prog``."""
    found: list[str] = []
    top = os.path.normpath(root)
    if not os.path.isdir(top):
        return found
    for dirpath, dirnames, filenames in os.walk(top):
        # Staging entries are skipped; so is everything inside a managed dir (its maps).
        dirnames[:] = sorted(d for d in dirnames if not skipped(d))
        if PROG in filenames and dirpath != top:
            found.append("/".join(decode(p) for p in dirpath[len(top) + 1 :].split("/")))
            dirnames[:] = []
    return sorted(found)
