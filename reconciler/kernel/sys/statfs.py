"""statfs(2): which file system holds a path, told by its magic number (``linux/magic.h``).

Python has ``os.statvfs`` but no ``os.statfs``, and only statfs says *which* file system it is
(``f_type``), so this calls libc through ctypes. The names are for messages ("on ext4"); the
pseudo file systems are the ones nothing but the kernel can keep files in.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from reconciler.kernel.sys.libc import libc as _libc

BPF_FS_MAGIC = 0xCAFE4A11

# f_type -> a name people know. ext2, ext3 and ext4 share one magic number.
NAMES: dict[int, str] = {
    BPF_FS_MAGIC: "bpffs",
    0xEF53: "ext4",
    0x01021994: "tmpfs",
    0x858458F6: "ramfs",
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0x2FC12FC1: "zfs",
    0xF2F52010: "f2fs",
    0x794C7630: "overlayfs",
    0x01021997: "9p",
    0x6969: "nfs",
    0xFF534D42: "cifs",
    0xFE534D42: "smb2",
    0x00C36400: "ceph",
    0x65735546: "fuse",
    0x4D44: "vfat",
    0x73717368: "squashfs",
    0xE0F5E1E2: "erofs",
    0x9660: "iso9660",
    0x9FA0: "procfs",
    0x62656572: "sysfs",
    0x74726163: "tracefs",
    0x64626720: "debugfs",
    0x27E0EB: "cgroup",
    0x63677270: "cgroup2",
    0x1CD1: "devpts",
    0x73636673: "securityfs",
    0x62656570: "configfs",
    0x6165676C: "pstore",
    0xDE5E81E4: "efivarfs",
    0xF97CFF8C: "selinuxfs",
    0x43415D53: "smackfs",
    0x42494E4D: "binfmt_misc",
    0x65735543: "fusectl",
    0x958458F6: "hugetlbfs",
    0x19800202: "mqueue",
    0x6E736673: "nsfs",
    0x50495045: "pipefs",
    0x534F434B: "sockfs",
    0x67596969: "rpc_pipefs",
    0x0187: "autofs",
}

# File systems that only present kernel objects: a regular file written there is refused, lost,
# or means something else (a bpffs "file" is a pinned object). A denylist, because every real
# file system (local, network, 9p, overlay, tmpfs) can hold a state file.
PSEUDO: frozenset[int] = frozenset(
    magic
    for magic, name in NAMES.items()
    if name
    in {
        "bpffs",
        "procfs",
        "sysfs",
        "tracefs",
        "debugfs",
        "cgroup",
        "cgroup2",
        "devpts",
        "securityfs",
        "configfs",
        "pstore",
        "efivarfs",
        "selinuxfs",
        "smackfs",
        "binfmt_misc",
        "fusectl",
        "hugetlbfs",
        "mqueue",
        "nsfs",
        "pipefs",
        "sockfs",
        "rpc_pipefs",
        "autofs",
    }
)

_libc.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
# struct statfs is 120 bytes on 64-bit Linux; f_type (__fsword_t, a long) is its first field.
_STATFS_SIZE = 256


def fs_type(path: str | Path) -> int:
    """The ``f_type`` of the file system holding ``path`` (symlinks followed); OSError (with
    its errno: ENOENT, EACCES, ENAMETOOLONG, ...) if statfs fails."""
    buf = ctypes.create_string_buffer(_STATFS_SIZE)
    if _libc.statfs(os.fsencode(path), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))
    return ctypes.c_ulong.from_buffer(buf).value & 0xFFFFFFFF


def name_of(magic: int) -> str:
    """``ext4``, ``procfs``...; an unknown file system by its magic number."""
    return NAMES.get(magic, f"a file system of type {magic:#x}")
