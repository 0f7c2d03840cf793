"""Tracepoints, uprobes, kprobes, fentry and fexit: perf-event and tracing links created by
libbpf, pinned. (A perf-event or tracing link cannot be detached: it goes with its last
reference, its pin.)"""

from __future__ import annotations

from pathlib import Path

from reconciler.kernel.points import uprobe_path
from reconciler.kernel.sys.bpfobject import LibbpfObject
from reconciler.kernel.types import (
    FentryPoint,
    FexitPoint,
    KprobePoint,
    TracepointPoint,
    UprobePoint,
)

TracingPoint = TracepointPoint | UprobePoint | KprobePoint | FentryPoint | FexitPoint


def attach(obj: LibbpfObject, point: TracingPoint, pin: Path) -> None:
    """Attach ``obj``'s loaded program at ``point`` and pin the link at ``pin``; if pinning
    fails the link is destroyed (nothing stays attached)."""
    if isinstance(point, TracepointPoint):
        link = obj.attach_tracepoint(point.group, point.name)
    elif isinstance(point, UprobePoint):
        link = obj.attach_uprobe(
            uprobe_path(point),
            point.func_name,
            point.offset,
            point.retprobe,
            point.pid,
        )
    elif isinstance(point, KprobePoint):
        link = obj.attach_kprobe(point.func_name, point.offset, point.retprobe)
    else:
        link = obj.attach_trace(point.func_name)
    try:
        link.pin(str(pin))
    except BaseException:
        link.destroy()
        raise
    link.release()
