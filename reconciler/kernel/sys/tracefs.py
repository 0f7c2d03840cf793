"""tracefs: which tracepoints exist. libbpf resolves tracepoint ids through /sys/kernel/tracing,
so on a fresh host (tracefs not mounted) attaching fails with ENOENT until it is mounted."""

from __future__ import annotations

import os
from pathlib import Path

from reconciler.kernel.sys import mounts
from reconciler.kernel.types import KernelError

TRACEFS = Path("/sys/kernel/tracing")
_EVENTS = f"{TRACEFS}/events"


def ensure_mounted() -> Path:
    if os.path.isdir(_EVENTS):
        return TRACEFS
    err = mounts.mount("tracefs", TRACEFS)
    if err:
        raise KernelError(
            f"cannot mount tracefs at {TRACEFS}: {os.strerror(err)}; "
            f"mount it (mount -t tracefs tracefs {TRACEFS}) to use tracepoints"
        )
    return TRACEFS


def exists(group: str, name: str) -> bool:
    if not group or not name or "/" in group + name or group.startswith("."):
        return False
    ensure_mounted()
    return os.path.isfile(f"{_EVENTS}/{group}/{name}/id")


def event_id(group: str, name: str) -> int:
    """The tracepoint's id, which perf_event_open(2) takes (OSError if it does not exist)."""
    ensure_mounted()
    fd = os.open(f"{_EVENTS}/{group}/{name}/id", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return int(os.read(fd, 32))
    finally:
        os.close(fd)


def all_tracepoints() -> list[str]:
    """``group/name`` of every tracepoint (available_events lists them as ``group:name``)."""
    text = (ensure_mounted() / "available_events").read_text()
    return sorted(line.strip().replace(":", "/", 1) for line in text.splitlines() if line.strip())
