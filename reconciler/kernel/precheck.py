"""Checking a program and its attach point before anything is loaded, so that a user's mistake
fails early, with a clear message, changing nothing."""

from __future__ import annotations

import os
from pathlib import Path

from reconciler.kernel import maps
from reconciler.kernel.points import KINDS, require_feature, uprobe_path
from reconciler.kernel.sys import ifaces, tracefs
from reconciler.kernel.tc import tcx
from reconciler.kernel.tracing.ksyms import kallsyms_has
from reconciler.kernel.types import (
    AttachPoint,
    KernelError,
    KprobePoint,
    ProgramSpec,
    TcxPoint,
    TracepointPoint,
    UprobePoint,
    XdpPoint,
)


def program(root: Path, spec: ProgramSpec, point: AttachPoint) -> None:
    """Everything ``check`` checks, and that the shared maps directory (if any) is usable."""
    check(spec, point)
    if spec.maps_dir is not None:
        maps.directory(root, spec.maps_dir)


def check(spec: ProgramSpec, point: AttachPoint) -> None:
    """Fail early, with a clear message, before loading anything."""
    kind = KINDS[spec.prog_type]
    if not isinstance(point, kind.point):
        raise KernelError(
            f"a {spec.prog_type.value} program cannot attach to {type(point).__name__}"
        )
    if not os.path.isfile(spec.object_path):
        raise KernelError(f"BPF object {spec.object_path} not found; build it or fix the path")
    if isinstance(point, XdpPoint | TcxPoint):
        if isinstance(point, TcxPoint):
            tcx.tcx_attach_type(point.direction)
        elif point.mode not in ("auto", "native", "generic"):
            raise KernelError(f"XDP mode must be auto, native or generic, not {point.mode!r}")
        ifaces.ifindex(point.ifname, point.netns)
    elif isinstance(point, TracepointPoint):
        if not tracefs.exists(point.group, point.name):
            raise KernelError(
                f"tracepoint {point.group}/{point.name} does not exist on this kernel; see "
                f"{tracefs.TRACEFS}/available_events for the ones it has"
            )
    elif isinstance(point, UprobePoint):
        _check_uprobe(point)
    require_feature(spec)
    if isinstance(point, KprobePoint):
        _check_kprobe(point)


def _check_uprobe(point: UprobePoint) -> None:
    if not os.path.isabs(point.target):
        raise KernelError(f"uprobe target {point.target} must be an absolute path")
    pid = point.container_pid
    if pid is not None and not os.path.isdir(f"/proc/{pid}"):
        raise KernelError(
            f"container process {pid} does not exist, so uprobe target {point.target} cannot "
            "be found in its mount namespace; give the pid of a running process of the container"
        )
    if not os.path.isfile(uprobe_path(point)):
        if pid is None:
            raise KernelError(
                f"uprobe target {point.target} is not an existing file (give an absolute path)"
            )
        raise KernelError(
            f"uprobe target {point.target} is not an existing file in the mount namespace of "
            f"process {pid} (looked for {uprobe_path(point)})"
        )


def _check_kprobe(point: KprobePoint) -> None:
    if point.retprobe and point.offset:
        raise KernelError(
            f"a kretprobe on {point.func_name} fires when the function returns: it takes no "
            f"offset (got {point.offset:#x}); drop the offset or use a kprobe"
        )
    if point.offset < 0:
        raise KernelError(f"kprobe offset must not be negative, got {point.offset}")
    found = kallsyms_has(point.func_name)
    if found is False:
        raise KernelError(
            f"kernel function {point.func_name} does not exist on this kernel (not in "
            "/proc/kallsyms); check the name, e.g. `grep -w NAME /proc/kallsyms`"
        )
