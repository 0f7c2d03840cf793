"""Attach points: what each kind of program needs from the kernel, and checking a point before
anything is loaded so that a user's mistake fails early, with a clear message, changing nothing."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.kernel import attach, bpf, probes, tracefs
from reconciler.kernel.types import (
    AttachPoint,
    FentryPoint,
    FexitPoint,
    KernelError,
    KprobePoint,
    ProgramSpec,
    ProgType,
    TcHook,
    TcxPoint,
    TracepointPoint,
    UprobePoint,
    XdpPoint,
)

if TYPE_CHECKING:
    from reconciler.kernel.bpfobject import BpfObject


@dataclass(frozen=True)
class Kind:
    prog_type: int  # the kernel's program type
    point: type  # the attach point class it needs
    feature: str | None = None  # the probe that must succeed first (None: always there)


KINDS: dict[ProgType, Kind] = {
    ProgType.XDP: Kind(bpf.PROG_TYPE_XDP, XdpPoint),
    ProgType.TCX: Kind(bpf.PROG_TYPE_SCHED_CLS, TcxPoint),
    # A TC program alone on its hook, attached directly (with freplace, dispatch() takes TC).
    ProgType.TC: Kind(bpf.PROG_TYPE_SCHED_CLS, TcHook),
    ProgType.TRACEPOINT: Kind(bpf.PROG_TYPE_TRACEPOINT, TracepointPoint),
    ProgType.UPROBE: Kind(bpf.PROG_TYPE_KPROBE, UprobePoint),  # uprobes are kprobe programs
    ProgType.KPROBE: Kind(bpf.PROG_TYPE_KPROBE, KprobePoint, "kprobe"),
    ProgType.FENTRY: Kind(bpf.PROG_TYPE_TRACING, FentryPoint, "fentry"),
    ProgType.FEXIT: Kind(bpf.PROG_TYPE_TRACING, FexitPoint, "fexit"),
}


def expected_attach(prog_type: ProgType, point: AttachPoint | None) -> int | None:
    """expected_attach_type to load with, for an object whose section did not imply the type
    (the verifier does not depend on a tcx direction: ingress stands in when none is known)."""
    if prog_type is ProgType.TCX:
        direction = point.direction if isinstance(point, TcxPoint) else "ingress"
        return attach.tcx_attach_type(direction)
    if prog_type is ProgType.XDP:
        return bpf.ATTACH_XDP
    if prog_type is ProgType.FENTRY:
        return bpf.TRACE_FENTRY
    if prog_type is ProgType.FEXIT:
        return bpf.TRACE_FEXIT
    return None


def attach_target(point: AttachPoint | None) -> str | None:
    """The kernel function a fentry/fexit program must be loaded for (its BTF id is part of
    the program: the verifier checks the program against the function's prototype)."""
    return point.func_name if isinstance(point, FentryPoint | FexitPoint) else None


def prepare(obj: BpfObject, spec: ProgramSpec, point: AttachPoint | None) -> None:
    """Everything set on the opened object before load: which program, as what type (and for
    which kernel function), and the initial values of its global variables. Install and the
    verifier's dry run both go through here, so they load the same program."""
    from reconciler.kernel import btf

    kind = KINDS[spec.prog_type]
    obj.select(
        spec.function, kind.prog_type, expected_attach(spec.prog_type, point), attach_target(point)
    )
    btf.set_global_data(obj, spec.global_data)


def require_feature(spec: ProgramSpec) -> None:
    """Refuse, naming the kernel and the reason, a program type this kernel cannot run."""
    feature = KINDS[spec.prog_type].feature
    if feature is None:
        return
    found = probes.probe(feature)
    if not found:
        raise KernelError(
            f"this kernel ({os.uname().release}) cannot run {feature} programs "
            f"({spec.function} from {spec.object_path}): {found.reason}"
        )


def uprobe_path(point: UprobePoint) -> str:
    """The target as seen from our mount namespace: a container's file is reached through
    /proc/<pid>/root, and the uprobe (set on the file's inode) fires in the container."""
    if point.container_pid is None:
        return point.target
    return f"/proc/{point.container_pid}/root{point.target}"


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
            attach.tcx_attach_type(point.direction)
        elif point.mode not in ("auto", "native", "generic"):
            raise KernelError(f"XDP mode must be auto, native or generic, not {point.mode!r}")
        attach.ifindex(point.ifname, point.netns)
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


def kallsyms_has(name: str) -> bool | None:
    """Whether /proc/kallsyms lists a text symbol ``name`` (None: kallsyms unreadable)."""
    try:
        with open("/proc/kallsyms") as f:
            text = f.read()
    except OSError:
        return None
    # "<addr> <type> <name>[\t[module]]"; functions are text symbols (t/T), weak ones w/W.
    return re.search(rf"^\S+ [tTwW] {re.escape(name)}(\t|$)", text, re.M) is not None
