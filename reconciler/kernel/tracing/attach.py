"""Tracepoints, uprobes, kprobes, fentry and fexit: perf-event and tracing links, pinned. (A
perf-event or tracing link cannot be detached: it goes with its last reference, its pin.)

Tracepoints are linked here with two syscalls (``sys/perf.py`` says why); the others go
through libbpf, which resolves uprobe functions, probe PMUs and BTF targets."""

from __future__ import annotations

import errno
import os

from reconciler.kernel.points import uprobe_path
from reconciler.kernel.sys import bpf, perf, tracefs
from reconciler.kernel.sys.bpfobject import LibbpfObject
from reconciler.kernel.types import (
    FentryPoint,
    FexitPoint,
    KernelError,
    KprobePoint,
    TracepointPoint,
    UprobePoint,
)

TracingPoint = TracepointPoint | UprobePoint | KprobePoint | FentryPoint | FexitPoint
# The kernel runs at most this many programs on one tracepoint (BPF_TRACE_MAX_PROGS).
TRACE_MAX_PROGS = 64


def attach(
    obj: LibbpfObject,
    prog_fd: int,
    point: TracingPoint,
    pin: str,
    tracepoint_ids: dict[tuple[str, str], int] | None = None,
) -> int:
    """Attach ``obj``'s loaded program (``prog_fd``) at ``point`` and pin the link at ``pin``;
    returns the link's fd, which the caller closes (the pin keeps the link). If pinning fails
    the link is released (nothing stays attached). ``tracepoint_ids`` caches tracefs ids."""
    if isinstance(point, TracepointPoint):
        return _tracepoint(prog_fd, point, pin, tracepoint_ids)
    if isinstance(point, UprobePoint):
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
        link.pin(pin)
    except BaseException:
        link.destroy()
        raise
    return link.release(keep_fd=True)


def _tracepoint(
    prog_fd: int, point: TracepointPoint, pin: str, ids: dict[tuple[str, str], int] | None
) -> int:
    what = f"tracepoint {point.group}/{point.name}"
    key = (point.group, point.name)
    try:
        tp_id = ids.get(key) if ids is not None else None
        if tp_id is None:
            tp_id = tracefs.event_id(point.group, point.name)
            if ids is not None:
                ids[key] = tp_id
        perf_fd = perf.tracepoint_event(tp_id)
    except OSError as e:
        raise KernelError(f"cannot attach to {what}: {e.strerror}", errno=e.errno) from e
    try:
        # The link holds the perf event from here on: our fd of it is not needed.
        link_fd = bpf.link_create_perf_event(prog_fd, perf_fd)
    except OSError as e:
        hint = ""
        if e.errno == errno.E2BIG:
            hint = f" (the kernel runs at most {TRACE_MAX_PROGS} programs on one tracepoint)"
        raise KernelError(f"cannot attach to {what}: {e.strerror}{hint}", errno=e.errno) from e
    finally:
        os.close(perf_fd)
    try:
        bpf.obj_pin(link_fd, pin)
    except OSError as e:
        os.close(link_fd)  # its only reference: the program is detached again
        raise KernelError(f"cannot pin link at {pin}: {e.strerror}", errno=e.errno) from e
    return link_fd
