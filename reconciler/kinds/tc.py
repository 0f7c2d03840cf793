"""TcProgram and BpfApplication's ``type: TC``: a cls_bpf program behind the TC dispatcher of its
interface and direction (attached directly when the kernel has no freplace)."""

from __future__ import annotations

from typing import Any

from reconciler.kernel.types import ProgType, TcHook
from reconciler.kinds import network, sections
from reconciler.kinds.record import (
    AppType,
    FieldPath,
    LinkValues,
    ProgramKind,
    Resolver,
    Target,
    Values,
)

# bpfman-operator's TC proceedOn spelling -> the legacy kind's (and the kernel layer's).
PROCEED_ON = {
    "UnSpec": "unspec",
    "OK": "ok",
    "ReClassify": "reclassify",
    "Shot": "shot",
    "Pipe": "pipe",
    "Stolen": "stolen",
    "Queued": "queued",
    "Repeat": "repeat",
    "ReDirect": "redirect",
    "Trap": "trap",
    "DispatcherReturn": "dispatcher_return",
}


def _legacy(spec: dict[str, Any], at: FieldPath) -> LinkValues:
    base = network.legacy_selector(spec, at)
    return network.with_values(base, proceedon=list(spec["proceedon"]), direction=spec["direction"])


def _app(
    link: dict[str, Any], info: dict[str, Any], app: AppType, path: FieldPath, member: FieldPath
) -> LinkValues:
    base = network.app_selector(link, path)
    proceedon = [PROCEED_ON[v] for v in link["proceedOn"]]
    return network.with_values(
        base, proceedon=proceedon, direction=link["direction"].lower(), per_direction=True
    )


def _targets(v: Values, host: Resolver) -> list[Target]:
    out = []
    for netns, pod in network.namespaces(v, host):
        for ifname in host.interfaces(netns):
            attributes = {
                "interface": ifname,
                "netns": netns,
                "direction": v["direction"],
                "priority": v["priority"],
                "proceedon": list(v["proceedon"]),
            }
            hook = TcHook(ifname, v["direction"], netns=netns)
            out.append(
                Target(
                    network.hook_index(v, network.point_index(netns, pod, ifname)), hook, attributes
                )
            )
    return out


KIND = ProgramKind(
    name="TcProgram",
    prog_type=ProgType.TC,
    article="a",
    app_types=(AppType("TC", "tc"),),
    point_classes=(TcHook,),
    # Behind the TC dispatcher: a cls_bpf (sched_cls) program, loaded as its freplace.
    sections=sections.of("sched_cls", 'SEC("tc")'),
    legacy_link=_legacy,
    app_link=_app,
    targets=_targets,
    index_parts=network.hook_index_parts,
    static_count=network.static_count,
    link_rules=network.link_rules,
    # The dispatcher orders its programs: a new priority or proceedon is a new dispatcher
    # revision that keeps the program.
    attributes=("interface", "netns", "direction", "priority", "proceedon"),
    in_place=frozenset({"priority", "proceedon"}),
    presence_checks=network.interface_present,
    docs_anchor="tcprogram",
    network=True,
)
