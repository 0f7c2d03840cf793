"""cgroup_skb: BPF_LINK_CREATE with a cgroup v2 directory's fd as the target. Cgroup links are
multi-program (other programs on the same cgroup and direction keep running), so a replacement
creates the new link before the old one goes."""

from __future__ import annotations

import errno
import os

from reconciler.kernel.sys import bpf, statfs
from reconciler.kernel.types import CgroupPoint, CgroupSockAddrPoint, KernelError

CGROUP2_SUPER_MAGIC = 0x63677270


def attach_type(direction: str) -> int:
    if direction == "ingress":
        return bpf.CGROUP_INET_INGRESS
    if direction == "egress":
        return bpf.CGROUP_INET_EGRESS
    raise KernelError(f"cgroup_skb direction must be ingress or egress, not {direction!r}")


def sock_addr_attach_type(hook: str) -> int:
    found = bpf.CGROUP_SOCK_ADDR.get(hook)
    if found is None:
        raise KernelError(
            f"cgroup_sock_addr attach type must be one of {', '.join(bpf.CGROUP_SOCK_ADDR)}, "
            f"not {hook!r}"
        )
    return found


def problem(path: str) -> str | None:
    """None when ``path`` is a directory on a cgroup v2 file system; otherwise why not."""
    if not os.path.isabs(path):
        return f"cgroup {path} must be an absolute path (of a cgroup v2 directory)"
    if not os.path.isdir(path):
        return f"cgroup directory {path} does not exist on this host; create the cgroup first"
    try:
        magic = statfs.fs_type(path)
    except OSError as e:
        return f"cgroup directory {path} cannot be examined ({e.strerror})"
    if magic != CGROUP2_SUPER_MAGIC:
        return (
            f"{path} is on {statfs.name_of(magic)}, not on a cgroup v2 file system; give a "
            "directory under the cgroup2 mount (see `grep cgroup2 /proc/self/mounts`)"
        )
    return None


def cgroup_id(path: str) -> int:
    """The id the kernel reports for a cgroup (its cgroup2 inode number, on 64-bit)."""
    return os.stat(path).st_ino


def create(prog_fd: int, point: CgroupPoint | CgroupSockAddrPoint) -> int:
    """A cgroup link of ``prog_fd`` at ``point``; its fd (the caller pins and closes it)."""
    if isinstance(point, CgroupPoint):
        atype, what = attach_type(point.direction), point.direction
    else:
        atype, what = sock_addr_attach_type(point.hook), point.hook
    where = f"cgroup {point.path} ({what})"
    try:
        cgroup_fd = os.open(point.path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise KernelError(f"cannot open {where}: {e.strerror}") from e
    try:
        return bpf.link_create_cgroup(prog_fd, cgroup_fd, atype)
    except OSError as e:
        hint = {
            errno.EINVAL: "this kernel may not support cgroup links (needs Linux 5.7+)",
            errno.EBADF: "not a cgroup directory",
        }.get(e.errno or 0, "")
        raise KernelError(
            f"cannot attach to {where}: {e.strerror}" + (f" ({hint})" if hint else "")
        ) from e
    finally:
        os.close(cgroup_fd)
