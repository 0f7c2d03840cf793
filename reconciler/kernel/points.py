"""Attach points: what each kind of program needs from the kernel, and checking a point before
anything is loaded so that a user's mistake fails early, with a clear message, changing nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler.kernel.cgroup import attach as cgroup
from reconciler.kernel.sys import bpf
from reconciler.kernel.tc import tcx
from reconciler.kernel.types import (
    AttachPoint,
    CgroupPoint,
    CgroupSockAddrPoint,
    FentryPoint,
    FexitPoint,
    KprobePoint,
    ProgramSpec,
    ProgType,
    TcHook,
    TcxPoint,
    TracepointPoint,
    UprobePoint,
    XdpPoint,
)
from reconciler.values import frozen

if TYPE_CHECKING:
    from reconciler.kernel.sys.bpfobject import LibbpfObject


@frozen
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
    ProgType.CGROUP_SKB: Kind(bpf.PROG_TYPE_CGROUP_SKB, CgroupPoint, "cgroup_link"),
    ProgType.CGROUP_SOCK_ADDR: Kind(
        bpf.PROG_TYPE_CGROUP_SOCK_ADDR, CgroupSockAddrPoint, "cgroup_link"
    ),
}


def expected_attach(prog_type: ProgType, point: AttachPoint | None) -> int | None:
    """expected_attach_type to load with, for an object whose section did not imply the type
    (the verifier does not depend on a tcx direction: ingress stands in when none is known)."""
    if prog_type is ProgType.TCX:
        direction = point.direction if isinstance(point, TcxPoint) else "ingress"
        return tcx.tcx_attach_type(direction)
    if prog_type is ProgType.XDP:
        return bpf.ATTACH_XDP
    if prog_type is ProgType.FENTRY:
        return bpf.TRACE_FENTRY
    if prog_type is ProgType.FEXIT:
        return bpf.TRACE_FEXIT
    if prog_type is ProgType.CGROUP_SKB:
        direction = point.direction if isinstance(point, CgroupPoint) else "ingress"
        return cgroup.attach_type(direction)
    if prog_type is ProgType.CGROUP_SOCK_ADDR:
        # The verifier checks the context against the hook: without a point, connect4.
        hook = point.hook if isinstance(point, CgroupSockAddrPoint) else "connect4"
        return cgroup.sock_addr_attach_type(hook)
    return None


def attach_target(point: AttachPoint | None) -> str | None:
    """The kernel function a fentry/fexit program must be loaded for (its BTF id is part of
    the program: the verifier checks the program against the function's prototype)."""
    return point.func_name if isinstance(point, FentryPoint | FexitPoint) else None


def prepare(obj: LibbpfObject, spec: ProgramSpec, point: AttachPoint | None) -> None:
    """Everything set on the opened object before load: which program, as what type (and for
    which kernel function), and the initial values of its global variables. Install and the
    verifier's dry run both go through here, so they load the same program."""
    from reconciler.kernel.sys import btfinfo

    kind = KINDS[spec.prog_type]
    obj.select(
        spec.function, kind.prog_type, expected_attach(spec.prog_type, point), attach_target(point)
    )
    btfinfo.set_global_data(obj, spec.global_data)


def uprobe_path(point: UprobePoint) -> str:
    """The target as seen from our mount namespace: a container's file is reached through
    /proc/<pid>/root, and the uprobe (set on the file's inode) fires in the container."""
    if point.container_pid is None:
        return point.target
    return f"/proc/{point.container_pid}/root{point.target}"
