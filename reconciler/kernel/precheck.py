"""Checking a program and its attach point before anything is loaded, so that a user's mistake
fails early, with a clear message, changing nothing.

Both kernels run these same checks: each answers the questions in ``Facts`` (does this file,
interface, tracepoint, process or kernel function exist; what does a feature probe say), the
real one from the host (``HOST``), the fake one from its knobs. So each message exists once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

from reconciler.kernel import probes
from reconciler.kernel.cgroup import attach as cgroup
from reconciler.kernel.points import KINDS, uprobe_path
from reconciler.kernel.sys import ifaces, tracefs
from reconciler.kernel.tc import tcx
from reconciler.kernel.tracing.ksyms import kallsyms_has
from reconciler.kernel.types import (
    AttachPoint,
    CgroupPoint,
    CgroupSockAddrPoint,
    FentryPoint,
    FexitPoint,
    KernelError,
    KprobePoint,
    Probe,
    ProgramSpec,
    TcHook,
    TcxPoint,
    TracepointPoint,
    UprobePoint,
    XdpPoint,
)
from reconciler.kernel.xdp import attach as xdpattach


class Facts(Protocol):
    """What the checks ask of a kernel and its host."""

    def file_exists(self, path: str, pid: int | None = None) -> bool:
        """Whether ``path`` is a regular file in the mount namespace of process ``pid`` (None:
        ours)."""
        ...

    def process_exists(self, pid: int) -> bool: ...

    def interface_exists(self, ifname: str, netns: str | None) -> bool: ...

    def tracepoint_exists(self, group: str, name: str) -> bool: ...

    def cgroup_problem(self, path: str) -> str | None:
        """None when ``path`` is a cgroup v2 directory; otherwise why not."""
        ...

    def kernel_function_exists(self, name: str) -> bool | None:
        """In /proc/kallsyms (None: cannot tell)."""
        ...

    def kernel_function_has_btf(self, name: str) -> bool | None:
        """Has BTF, so fentry/fexit can attach (None: not known before loading)."""
        ...

    def probe(self, feature: str) -> Probe: ...

    def release(self) -> str: ...


class HostFacts:
    """The running kernel's and this host's answers. ``tracepoint_ids``: the tracepoints one
    transaction already attached to (and the ids it read), which need no second look."""

    def __init__(self, tracepoint_ids: Mapping[tuple[str, str], int] | None = None) -> None:
        self._attached = tracepoint_ids if tracepoint_ids is not None else {}

    def file_exists(self, path: str, pid: int | None = None) -> bool:
        return os.path.isfile(path if pid is None else f"/proc/{pid}/root{path}")

    def process_exists(self, pid: int) -> bool:
        return os.path.isdir(f"/proc/{pid}")

    def interface_exists(self, ifname: str, netns: str | None) -> bool:
        # A namespace that cannot be entered raises its own error (the namespace is named).
        return ifaces.has_interface(ifname, netns)

    def tracepoint_exists(self, group: str, name: str) -> bool:
        return (group, name) in self._attached or tracefs.exists(group, name)

    def cgroup_problem(self, path: str) -> str | None:
        return cgroup.problem(path)

    def kernel_function_exists(self, name: str) -> bool | None:
        return kallsyms_has(name)

    def kernel_function_has_btf(self, name: str) -> bool | None:
        return None  # libbpf's load says so, naming the function

    def probe(self, feature: str) -> Probe:
        return probes.probe(feature)

    def release(self) -> str:
        return os.uname().release


HOST = HostFacts()


def check(spec: ProgramSpec, point: AttachPoint, facts: Facts = HOST) -> None:
    """Fail early, with a clear message, before loading anything."""
    kind = KINDS[spec.prog_type]
    if not isinstance(point, kind.point):
        raise KernelError(
            f"a {spec.prog_type.value} program cannot attach to {type(point).__name__}"
        )
    object_file(spec, facts)
    if isinstance(point, XdpPoint | TcxPoint | TcHook):
        if isinstance(point, TcxPoint | TcHook):
            tcx.tcx_attach_type(point.direction)  # ingress or egress, or a clear error
        else:
            xdpattach.check_mode(point.mode)
        if not facts.interface_exists(point.ifname, point.netns):
            raise ifaces.no_interface(point.ifname, point.netns)
    elif isinstance(point, TracepointPoint):
        if not facts.tracepoint_exists(point.group, point.name):
            raise KernelError(
                f"tracepoint {point.group}/{point.name} does not exist on this kernel; see "
                f"{tracefs.TRACEFS}/available_events for the ones it has"
            )
    elif isinstance(point, UprobePoint):
        _check_uprobe(point, facts)
    elif isinstance(point, CgroupPoint | CgroupSockAddrPoint):
        if isinstance(point, CgroupPoint):
            cgroup.attach_type(point.direction)  # ingress or egress, or a clear error
        else:
            cgroup.sock_addr_attach_type(point.hook)
        found = facts.cgroup_problem(point.path)
        if found is not None:
            raise KernelError(found)
    require_feature(spec, facts)
    kernel_function(point, facts)


def object_file(spec: ProgramSpec, facts: Facts = HOST) -> None:
    if not facts.file_exists(spec.object_path):
        raise KernelError(f"BPF object {spec.object_path} not found; build it or fix the path")


def kernel_function(point: AttachPoint, facts: Facts = HOST) -> None:
    """A kprobe's or fentry/fexit's kernel function: there, and traceable that way."""
    if isinstance(point, KprobePoint):
        _check_kprobe(point, facts)
    elif isinstance(point, FentryPoint | FexitPoint) and (
        facts.kernel_function_has_btf(point.func_name) is False
    ):
        raise KernelError(
            f"kernel function {point.func_name} has no BTF on this kernel (not in "
            "/sys/kernel/btf/vmlinux nor in a module's BTF), so fentry/fexit cannot attach to it"
        )


def require_feature(spec: ProgramSpec, facts: Facts = HOST) -> None:
    """Refuse, naming the kernel and the reason, a program type this kernel cannot run."""
    feature = KINDS[spec.prog_type].feature
    if feature is None:
        return
    found = facts.probe(feature)
    if not found:
        raise KernelError(
            f"this kernel ({facts.release()}) cannot run {feature} programs "
            f"({spec.function} from {spec.object_path}): {found.reason}"
        )


def _check_uprobe(point: UprobePoint, facts: Facts) -> None:
    if not os.path.isabs(point.target):
        raise KernelError(f"uprobe target {point.target} must be an absolute path")
    pid = point.container_pid
    if pid is not None and not facts.process_exists(pid):
        raise KernelError(
            f"container process {pid} does not exist, so uprobe target {point.target} cannot "
            "be found in its mount namespace; give the pid of a running process of the container"
        )
    if not facts.file_exists(point.target, pid):
        if pid is None:
            raise KernelError(
                f"uprobe target {point.target} is not an existing file (give an absolute path)"
            )
        raise KernelError(
            f"uprobe target {point.target} is not an existing file in the mount namespace of "
            f"process {pid} (looked for {uprobe_path(point)})"
        )


def _check_kprobe(point: KprobePoint, facts: Facts) -> None:
    if point.retprobe and point.offset:
        raise KernelError(
            f"a kretprobe on {point.func_name} fires when the function returns: it takes no "
            f"offset (got {point.offset:#x}); drop the offset or use a kprobe"
        )
    if point.offset < 0:
        raise KernelError(f"kprobe offset must not be negative, got {point.offset}")
    if facts.kernel_function_exists(point.func_name) is False:
        raise KernelError(
            f"kernel function {point.func_name} does not exist on this kernel (not in "
            "/proc/kallsyms); check the name, e.g. `grep -w NAME /proc/kallsyms`"
        )
