"""mount(2) for the pseudo file systems bpfman needs (bpffs, tracefs) on a fresh host."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from reconciler.kernel.sys.libc import libc as _libc

# int mount(const char *source, const char *target, const char *fstype, unsigned long flags,
#           const void *data)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]


def mount(fstype: str, target: Path, options: str | None = None) -> int:
    """Mount ``fstype`` at ``target``; returns 0 or the errno."""
    data = options.encode() if options else None
    if _libc.mount(fstype.encode(), os.fsencode(target), fstype.encode(), 0, data) != 0:
        return ctypes.get_errno()
    return 0
