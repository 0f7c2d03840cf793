"""Plan-time checks that only this host can answer: does the interface, tracepoint or binary exist,
and is the attach point free? Each problem names the address, the manifest and the fix."""

from __future__ import annotations

import difflib
import os
from collections import defaultdict
from collections.abc import Iterable

from reconciler.kernel.types import (
    Installed,
    Kernel,
    TcxPoint,
    TracepointPoint,
    UprobePoint,
    XdpPoint,
)
from reconciler.spec.model import DesiredAttachment

# The kernel runs at most this many programs on one tracepoint (BPF_TRACE_MAX_PROGS); the next
# attach fails with E2BIG, so the plan refuses before anything is loaded.
TRACE_MAX_PROGS = 64


def _interfaces() -> list[str]:
    import socket

    return sorted(name for _, name in socket.if_nameindex())


def check(
    desired: Iterable[DesiredAttachment], kernel: Kernel, installed: Iterable[Installed]
) -> list[str]:
    problems: list[str] = []
    ours = {i.prog_id for i in installed}
    xdp_by_iface: dict[tuple[str | None, str], list[DesiredAttachment]] = defaultdict(list)
    tracepoints: list[str] | None = None
    per_tracepoint: dict[str, list[DesiredAttachment]] = defaultdict(list)

    for d in desired:
        where = f"{d.address} ({d.origin})"
        p = d.point
        if isinstance(p, XdpPoint | TcxPoint) and not kernel.interface_exists(p.ifname, p.netns):
            names = ", ".join(_interfaces()) if p.netns is None else "?"
            problems.append(
                f"{where}: interface {p.ifname!r} does not exist on this host "
                f"(interfaces: {names}); fix spec.interfaceselector or create the interface"
            )
            continue
        if isinstance(p, XdpPoint):
            xdp_by_iface[(p.netns, p.ifname)].append(d)
            current = kernel.xdp_program_on(p.ifname, p.netns)
            if current is not None and current not in ours:
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
            if not os.path.isfile(p.target):
                problems.append(
                    f"{where}: uprobe target {p.target} does not exist on this host; "
                    f"fix spec.target (an absolute path of a binary or library)"
                )
            if p.pid is not None and not os.path.exists(f"/proc/{p.pid}"):
                problems.append(f"{where}: no process with pid {p.pid} runs on this host")

    for (_, ifname), ds in sorted(xdp_by_iface.items(), key=lambda kv: kv[0][1]):
        if len(ds) > 1:
            names = ", ".join(f"{d.address} ({d.origin})" for d in ds)
            problems.append(
                f"interface {ifname!r}: {len(ds)} XdpPrograms want it ({names}), but several XDP "
                f"programs on one interface need the multi-program dispatcher, which this "
                f"version does not provide yet; keep one XdpProgram per interface"
            )
    for tp, ds in sorted(per_tracepoint.items()):
        if len(ds) > TRACE_MAX_PROGS:
            problems.append(
                f"tracepoint {tp}: {len(ds)} programs want it (first {ds[0].address} at "
                f"{ds[0].origin}), but the kernel runs at most {TRACE_MAX_PROGS} programs on one "
                f"tracepoint (BPF_TRACE_MAX_PROGS); spread them over other tracepoints"
            )
    return problems
