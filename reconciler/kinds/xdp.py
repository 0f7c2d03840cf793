"""XdpProgram and BpfApplication's ``type: XDP``: an XDP program on an interface (through a
dispatcher when the hook is shared)."""

from __future__ import annotations

from typing import Any

from reconciler.kernel.types import ProgType, XdpHook, XdpPoint
from reconciler.kinds import network, sections
from reconciler.kinds.record import (
    AppType,
    FieldPath,
    HostQuery,
    LinkValues,
    ProgramKind,
    Resolver,
    Target,
    Values,
)

# bpfman-operator's XDP proceedOn spelling -> the legacy kind's (and the kernel layer's).
PROCEED_ON = {
    "Aborted": "aborted",
    "Drop": "drop",
    "Pass": "pass",
    "TX": "tx",
    "ReDirect": "redirect",
    "DispatcherReturn": "dispatcher_return",
}


def _legacy(spec: dict[str, Any], at: FieldPath) -> LinkValues:
    base = network.legacy_selector(spec, at)
    return network.with_values(base, proceedon=list(spec["proceedon"]), xdpmode=spec.get("xdpmode"))


def _app(
    link: dict[str, Any], info: dict[str, Any], app: AppType, path: FieldPath, member: FieldPath
) -> LinkValues:
    base = network.app_selector(link, path)
    proceedon = [PROCEED_ON[v] for v in link["proceedOn"]]
    return network.with_values(base, proceedon=proceedon, xdpmode=link.get("xdpMode"))


def _targets(v: Values, host: Resolver) -> list[Target]:
    out = []
    for netns, pod in network.namespaces(v, host):
        for ifname in host.interfaces(netns):
            mode = v.get("xdpmode") or host.xdp_mode(ifname, netns) or "auto"
            attributes = {
                "interface": ifname,
                "netns": netns,
                "priority": v["priority"],
                "proceedon": list(v["proceedon"]),
                "xdpmode": mode,
            }
            point = XdpPoint(ifname, mode=mode, netns=netns)
            out.append(Target(network.point_index(netns, pod, ifname), point, attributes))
    return out


def _foreign_program(p: XdpPoint, q: HostQuery) -> list[str]:
    """Without a dispatcher, bpfman never replaces a program it does not manage."""
    current = q.kernel.xdp_program_on(p.ifname, p.netns)
    if current is not None and current not in q.ours and not q.dispatching:
        return [
            f"interface {p.ifname!r} already runs XDP program id {current}, "
            f"which bpfman does not manage; bpfman never replaces a foreign program: "
            f"detach it (e.g. `ip link set dev {p.ifname} xdp off`) or choose another "
            f"interface"
        ]
    return []


KIND = ProgramKind(
    name="XdpProgram",
    prog_type=ProgType.XDP,
    article="an",
    app_types=(AppType("XDP", "xdp"),),
    point_classes=(XdpPoint, XdpHook),
    sections=sections.of("xdp", 'SEC("xdp")'),
    legacy_link=_legacy,
    app_link=_app,
    targets=_targets,
    index_parts=network.index_parts,
    static_count=network.static_count,
    link_rules=network.link_rules,
    # A single XDP program's priority and proceedon matter only once a dispatcher orders several;
    # a new mode moves the hook's dispatcher, not the program.
    attributes=("interface", "netns", "priority", "proceedon", "xdpmode"),
    in_place=frozenset({"priority", "proceedon", "xdpmode"}),
    presence_checks=network.interface_present,
    host_checks=_foreign_program,
    docs_anchor="xdpprogram",
    network=True,
)
