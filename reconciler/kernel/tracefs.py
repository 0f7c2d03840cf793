"""tracefs: which tracepoints exist. libbpf resolves tracepoint ids through /sys/kernel/tracing,
so on a fresh host (tracefs not mounted) attaching fails with ENOENT until it is mounted."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

from reconciler.kernel.types import KernelError

TRACEFS = Path("/sys/kernel/tracing")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 4 + [ctypes.c_ulong, ctypes.c_char_p]


def ensure_mounted() -> Path:
    if (TRACEFS / "events").is_dir():
        return TRACEFS
    if _libc.mount(b"tracefs", os.fsencode(TRACEFS), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise KernelError(
            f"cannot mount tracefs at {TRACEFS}: {os.strerror(err)}; "
            f"mount it (mount -t tracefs tracefs {TRACEFS}) to use tracepoints"
        )
    return TRACEFS


def exists(group: str, name: str) -> bool:
    if not group or not name or "/" in group + name or group.startswith("."):
        return False
    return (ensure_mounted() / "events" / group / name / "id").is_file()


def all_tracepoints() -> list[str]:
    """``group/name`` of every tracepoint (available_events lists them as ``group:name``)."""
    text = (ensure_mounted() / "available_events").read_text()
    return sorted(line.strip().replace(":", "/", 1) for line in text.splitlines() if line.strip())
