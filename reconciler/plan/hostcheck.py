"""Plan-time checks that only this host can answer: does the interface, tracepoint, kernel function
or binary (and the function in it) exist, and is the attach point free? Each problem names the
address, the manifest and the fix. A program whose type this kernel cannot run gets that one
problem, and no other check of its attach point."""

from __future__ import annotations

import difflib
import os
from collections import defaultdict
from collections.abc import Iterable

from reconciler.address import Address
from reconciler.kernel.tracing.elfsyms import ElfFile, Lookup, TargetError, printable
from reconciler.kernel.types import (
    MAX_DISPATCHER_SLOTS,
    FentryPoint,
    FexitPoint,
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
from reconciler.plan.hookgroups import hook_label, hook_of_point
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


def _missing_features(
    desired: list[DesiredAttachment], kernel: Kernel, unsupported: set[Address]
) -> list[str]:
    """One problem per manifest whose program type this kernel cannot run; the addresses of
    such programs are added to ``unsupported``."""
    problems = []
    reported: set[tuple[str, str]] = set()
    for d in desired:
        feature = FEATURE.get(d.program.prog_type)
        if feature is None:
            continue
        probe = kernel.probe(feature)
        if not probe:
            unsupported.add(d.address)
        if not probe and (d.address.resource, feature) not in reported:
            reported.add((d.address.resource, feature))
            problems.append(
                f"{d.address} ({d.origin}): needs {_FEATURE_NAME[feature]}, which kernel "
                f"{kernel.release()} does not support ({probe.reason}); run it on a kernel "
                f"that has them, or select other hosts with nodeselector"
            )
    return problems


def _missing_owners(desired: list[DesiredAttachment], flagged: set[Address]) -> list[str]:
    wanted = {d.address for d in desired}
    problems = []
    for d in desired:
        for owner in d.depends_on:
            if owner not in wanted:
                flagged.add(d.address)
                problems.append(
                    f"{d.address} ({d.origin}): uses the maps of {owner}, which is not wanted on "
                    "this host (removed, or not selected); a map owner cannot be unloaded while "
                    "its users remain"
                )
    return problems


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


def check(
    desired: Iterable[DesiredAttachment],
    kernel: Kernel,
    installed: Iterable[Installed],
    dispatching: bool = False,
) -> list[str]:
    return check_host(desired, kernel, installed, dispatching)[0]


def check_host(
    desired: Iterable[DesiredAttachment],
    kernel: Kernel,
    installed: Iterable[Installed],
    dispatching: bool = False,
) -> tuple[list[str], set[Address]]:
    """The problems, and the addresses they are about (which the verifier need not see)."""
    desired = list(desired)
    flagged: set[Address] = set()
    problems = _missing_features(desired, kernel, flagged) + _missing_owners(desired, flagged)
    ours = {i.prog_id for i in installed}
    per_hook: dict[Hook, list[DesiredAttachment]] = defaultdict(list)
    per_tracepoint: dict[str, list[DesiredAttachment]] = defaultdict(list)

    for d in desired:
        if d.address in flagged:
            continue  # it has its problem already (a type this kernel cannot run, no map owner)
        where = f"{d.address} ({d.origin})"
        before = len(problems)
        _check_point(d, where, kernel, ours, dispatching, problems, per_hook, per_tracepoint)
        if len(problems) > before:
            flagged.add(d.address)

    problems += _crowded_hooks(per_hook, kernel, dispatching)
    for tp, ds in sorted(per_tracepoint.items()):
        if len(ds) > TRACE_MAX_PROGS:
            problems.append(
                f"tracepoint {tp}: {len(ds)} programs want it (first {ds[0].address} at "
                f"{ds[0].origin}), but the kernel runs at most {TRACE_MAX_PROGS} programs on one "
                f"tracepoint (BPF_TRACE_MAX_PROGS); spread them over other tracepoints"
            )
    return problems, flagged


def _check_point(
    d: DesiredAttachment,
    where: str,
    kernel: Kernel,
    ours: set[int],
    dispatching: bool,
    problems: list[str],
    per_hook: dict[Hook, list[DesiredAttachment]],
    per_tracepoint: dict[str, list[DesiredAttachment]],
) -> None:
    """The problems of one attachment's point (appended to ``problems``)."""
    p = d.point
    if isinstance(p, XdpPoint | TcxPoint | TcHook):
        if p.netns and not os.path.exists(p.netns):
            problems.append(
                f"{where}: network namespace {p.netns} does not exist; create it first (e.g. "
                "`ip netns add NAME` for /run/netns/NAME) or fix the netns path"
            )
            return
        if not kernel.interface_exists(p.ifname, p.netns):
            names = ", ".join(sorted(kernel.interfaces(p.netns)))
            problems.append(
                f"{where}: interface {p.ifname!r} does not exist on this host "
                f"(interfaces: {names}); fix spec.interfaceselector or create the interface"
            )
            return
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
            near = difflib.get_close_matches(f"{p.group}/{p.name}", kernel.tracepoints(), n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            problems.append(
                f"{where}: tracepoint {p.group}/{p.name} does not exist on this kernel "
                f"(see /sys/kernel/tracing/events){hint}"
            )
    elif isinstance(p, UprobePoint):
        problems += [f"{where}: {problem}" for problem in uprobe_problems(p)]
    elif isinstance(p, KprobePoint | FentryPoint | FexitPoint):
        why = kernel.missing_kernel_function(p.func_name, not isinstance(p, KprobePoint))
        if why is not None:
            problems.append(f"{where}: kernel function {p.func_name} {why}; fix spec.func_name")


def uprobe_problems(p: UprobePoint) -> list[str]:
    """What stops a uprobe from being set at ``p``: the process, the target file (a regular ELF
    executable or library of this machine) and the function in it, as libbpf resolves it."""
    if p.container_pid is not None and not os.path.exists(f"/proc/{p.container_pid}"):
        return [
            f"no process with pid {p.container_pid} runs on this host, so its mount namespace "
            "(spec.containers.pid) cannot be entered"
        ]
    problems = []
    if p.pid is not None and not os.path.exists(f"/proc/{p.pid}"):
        problems.append(f"no process with pid {p.pid} runs on this host")
    seen_from = f"/proc/{p.container_pid}/root" if p.container_pid else ""
    inside = f" inside the mount namespace of pid {p.container_pid}" if seen_from else ""
    target = printable(p.target)
    try:
        with ElfFile(seen_from + p.target) as elf:
            offset = 0
            if p.func_name is not None:
                found = elf.find_function(p.func_name)
                if found.offset is None:
                    return [*problems, _no_function(target + inside, p.func_name, found)]
                offset = found.offset
            if offset + p.offset > elf.size:
                problems.append(
                    f"uprobe target {target}{inside}: offset {offset + p.offset:#x} lies beyond "
                    f"its end ({elf.size} bytes), so the kernel refuses the probe; fix spec.offset"
                )
    except TargetError as e:
        if str(e) == "does not exist":
            problems.append(
                f"uprobe target {target} does not exist{inside} on this host; fix spec.target "
                "(a path, or a library name such as libc)"
            )
        else:
            problems.append(f"uprobe target {target}{inside} {e}; fix spec.target")
    return problems


def _no_function(target: str, func_name: str, found: Lookup) -> str:
    name = printable(func_name)
    if found.problem is not None:
        return (
            f"uprobe target {target} has no function {name} that libbpf can probe: {found.problem}"
        )
    where = (
        "not among the functions it exports (.dynsym), and it has no .symtab: it is stripped"
        if found.stripped
        else "not in its .dynsym or .symtab"
    )
    hint = f" (did you mean {', '.join(found.near)}?)" if found.near else ""
    return (
        f"uprobe target {target} has no function {name} ({where}); fix spec.func_name{hint}, "
        "or give spec.offset"
    )
