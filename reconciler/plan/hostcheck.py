"""Plan-time checks that only this host can answer: does the interface, tracepoint or binary exist,
and is the attach point free? Each problem names the address, the manifest and the fix."""

from __future__ import annotations

import difflib
import os
from collections import defaultdict
from collections.abc import Iterable

from reconciler.kernel.types import (
    MAX_DISPATCHER_SLOTS,
    Hook,
    Installed,
    Kernel,
    KprobePoint,
    ProgType,
    TcHook,
    TcxPoint,
    TracepointPoint,
    UprobePoint,
    XdpHook,
    XdpPoint,
)
from reconciler.plan.hooks import hook_label, hook_of_point
from reconciler.spec.model import DesiredAttachment

# The kernel runs at most this many programs on one tracepoint (BPF_TRACE_MAX_PROGS); the next
# attach fails with E2BIG, so the plan refuses before anything is loaded.
TRACE_MAX_PROGS = 64

# The kernel feature each program type needs, named as Kernel.probe knows it.
FEATURE = {
    ProgType.TCX: "tcx",
    ProgType.TRACEPOINT: "tracepoint",
    ProgType.UPROBE: "uprobe",
    ProgType.KPROBE: "kprobe",
    ProgType.FENTRY: "fentry",
    ProgType.FEXIT: "fexit",
}
_FEATURE_NAME = {
    "tcx": "tcx links",
    "tracepoint": "tracepoint programs",
    "uprobe": "uprobes",
    "kprobe": "kprobes",
    "fentry": "fentry programs",
    "fexit": "fexit programs",
}


def _missing_features(desired: list[DesiredAttachment], kernel: Kernel) -> list[str]:
    """One problem per manifest whose program type this kernel cannot run."""
    problems = []
    reported: set[tuple[str, str]] = set()
    for d in desired:
        feature = FEATURE.get(d.program.prog_type)
        if feature is None or (d.address.resource, feature) in reported:
            continue
        probe = kernel.probe(feature)
        if not probe:
            reported.add((d.address.resource, feature))
            problems.append(
                f"{d.address} ({d.origin}): needs {_FEATURE_NAME[feature]}, which kernel "
                f"{kernel.release()} does not support ({probe.reason}); run it on a kernel "
                f"that has them, or select other hosts with nodeselector"
            )
    return problems


def _missing_owners(desired: list[DesiredAttachment]) -> list[str]:
    wanted = {d.address for d in desired}
    return [
        f"{d.address} ({d.origin}): uses the maps of {owner}, which is not wanted on this host "
        f"(removed, or not selected); a map owner cannot be unloaded while its users remain"
        for d in desired
        for owner in d.depends_on
        if owner not in wanted
    ]


def _crowded_hooks(
    per_hook: dict[Hook, list[DesiredAttachment]], kernel: Kernel, dispatching: bool
) -> list[str]:
    """Several programs on one XDP or TC hook need a dispatcher (and so freplace); a
    dispatcher runs at most MAX_DISPATCHER_SLOTS."""
    problems = []
    modes: dict[tuple[str | None, str], dict[str, list[DesiredAttachment]]] = defaultdict(dict)
    for hook, ds in per_hook.items():
        if isinstance(hook, XdpHook):
            modes[(hook.netns, hook.ifname)][hook.mode] = ds
    for (_, ifname), by_mode in sorted(modes.items(), key=lambda kv: kv[0][1]):
        if len(by_mode) > 1:
            wants = "; ".join(
                f"{mode}: {', '.join(str(d.address) for d in ds)}"
                for mode, ds in sorted(by_mode.items())
            )
            problems.append(
                f"interface {ifname!r}: its XDP programs want different modes ({wants}); an "
                f"interface runs XDP in one mode: give them the same spec.xdpmode, or set it once "
                f"in the host's config (interfaces.{ifname}.xdpmode)"
            )
    for hook, ds in sorted(per_hook.items(), key=lambda kv: hook_label(kv[0])):
        names = ", ".join(f"{d.address} ({d.origin})" for d in ds)
        if dispatching and len(ds) > MAX_DISPATCHER_SLOTS:
            problems.append(
                f"{hook_label(hook)}: {len(ds)} programs want it ({names}), but a dispatcher runs "
                f"at most {MAX_DISPATCHER_SLOTS}; move some to another interface or direction"
            )
        elif not dispatching and len(ds) > 1:
            probe = kernel.probe("freplace")
            problems.append(
                f"{hook_label(hook)}: {len(ds)} programs want it ({names}); several programs on "
                f"one hook run through a dispatcher, which needs freplace (BPF_PROG_TYPE_EXT), "
                f"and kernel {kernel.release()} does not support it ({probe.reason}); keep one "
                f"program per hook on this kernel"
            )
    return problems


def _kernel_function_exists(name: str) -> bool | None:
    """None when /proc/kallsyms cannot tell (unreadable, or addresses hidden)."""
    try:
        with open("/proc/kallsyms") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == name:
                    return True
    except OSError:
        return None
    return False


def check(
    desired: Iterable[DesiredAttachment],
    kernel: Kernel,
    installed: Iterable[Installed],
    dispatching: bool = False,
) -> list[str]:
    desired = list(desired)
    problems = _missing_features(desired, kernel) + _missing_owners(desired)
    ours = {i.prog_id for i in installed}
    per_hook: dict[Hook, list[DesiredAttachment]] = defaultdict(list)
    tracepoints: list[str] | None = None
    per_tracepoint: dict[str, list[DesiredAttachment]] = defaultdict(list)

    for d in desired:
        where = f"{d.address} ({d.origin})"
        p = d.point
        if isinstance(p, XdpPoint | TcxPoint | TcHook) and p.netns and not os.path.exists(p.netns):
            problems.append(
                f"{where}: network namespace {p.netns} does not exist; create it first (e.g. "
                "`ip netns add NAME` for /run/netns/NAME) or fix the netns path"
            )
            continue
        if isinstance(p, XdpPoint | TcxPoint | TcHook) and not kernel.interface_exists(
            p.ifname, p.netns
        ):
            names = ", ".join(sorted(kernel.interfaces(p.netns)))
            problems.append(
                f"{where}: interface {p.ifname!r} does not exist on this host "
                f"(interfaces: {names}); fix spec.interfaceselector or create the interface"
            )
            continue
        hook = hook_of_point(p)
        if hook is not None:
            per_hook[hook].append(d)
        if isinstance(p, XdpPoint):
            current = kernel.xdp_program_on(p.ifname, p.netns)
            if current is not None and current not in ours and not dispatching:
                problems.append(
                    f"{where}: interface {p.ifname!r} already runs XDP program id {current}, "
                    f"which bpfman does not manage; bpfman never replaces a foreign program: "
                    f"detach it (e.g. `ip link set dev {p.ifname} xdp off`) or choose another "
                    f"interface"
                )
        elif isinstance(p, TracepointPoint):
            per_tracepoint[f"{p.group}/{p.name}"].append(d)
            if not kernel.tracepoint_exists(p.group, p.name):
                if tracepoints is None:
                    tracepoints = kernel.tracepoints()
                near = difflib.get_close_matches(f"{p.group}/{p.name}", tracepoints, n=3)
                hint = f"; did you mean {', '.join(near)}?" if near else ""
                problems.append(
                    f"{where}: tracepoint {p.group}/{p.name} does not exist on this kernel "
                    f"(see /sys/kernel/tracing/events){hint}"
                )
        elif isinstance(p, UprobePoint):
            if p.container_pid is not None and not os.path.exists(f"/proc/{p.container_pid}"):
                problems.append(
                    f"{where}: no process with pid {p.container_pid} runs on this host, so its "
                    f"mount namespace (spec.containers.pid) cannot be entered"
                )
                continue
            seen_from = f"/proc/{p.container_pid}/root" if p.container_pid else ""
            if not os.path.isfile(seen_from + p.target):
                inside = (
                    f" inside the mount namespace of pid {p.container_pid}" if seen_from else ""
                )
                problems.append(
                    f"{where}: uprobe target {p.target} does not exist{inside} on this host; "
                    f"fix spec.target (a path, or a library name such as libc)"
                )
            if p.pid is not None and not os.path.exists(f"/proc/{p.pid}"):
                problems.append(f"{where}: no process with pid {p.pid} runs on this host")
        elif isinstance(p, KprobePoint) and _kernel_function_exists(p.func_name) is False:
            problems.append(
                f"{where}: kernel function {p.func_name} does not exist on kernel "
                f"{kernel.release()} (see /proc/kallsyms); fix spec.func_name"
            )

    problems += _crowded_hooks(per_hook, kernel, dispatching)
    for tp, ds in sorted(per_tracepoint.items()):
        if len(ds) > TRACE_MAX_PROGS:
            problems.append(
                f"tracepoint {tp}: {len(ds)} programs want it (first {ds[0].address} at "
                f"{ds[0].origin}), but the kernel runs at most {TRACE_MAX_PROGS} programs on one "
                f"tracepoint (BPF_TRACE_MAX_PROGS); spread them over other tracepoints"
            )
    return problems
