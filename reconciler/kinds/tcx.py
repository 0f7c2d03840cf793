"""TcxProgram and BpfApplication's ``type: TCX``: a TC program on a tcx link, ordered among the
hook's links by priority."""

from __future__ import annotations

from typing import Any

from reconciler.kernel.types import ProgType, TcxPoint
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


def _legacy(spec: dict[str, Any], at: FieldPath) -> LinkValues:
    return network.with_values(network.legacy_selector(spec, at), direction=spec["direction"])


def _app(
    link: dict[str, Any], info: dict[str, Any], app: AppType, path: FieldPath, member: FieldPath
) -> LinkValues:
    base = network.app_selector(link, path)
    return network.with_values(base, direction=link["direction"].lower(), per_direction=True)


def _targets(v: Values, host: Resolver) -> list[Target]:
    out = []
    for netns, pod in network.namespaces(v, host):
        for ifname in host.interfaces(netns):
            attributes = {
                "interface": ifname,
                "netns": netns,
                "direction": v["direction"],
                "priority": v["priority"],
            }
            point = TcxPoint(ifname, v["direction"], netns=netns)
            out.append(
                Target(
                    network.hook_index(v, network.point_index(netns, pod, ifname)),
                    point,
                    attributes,
                )
            )
    return out


KIND = ProgramKind(
    name="TcxProgram",
    prog_type=ProgType.TCX,
    article="a",
    app_types=(AppType("TCX", "tcx"),),
    point_classes=(TcxPoint,),
    sections=sections.of("sched_cls", 'SEC("tcx/ingress")'),
    legacy_link=_legacy,
    app_link=_app,
    targets=_targets,
    index_parts=network.hook_index_parts,
    static_count=network.static_count,
    link_rules=network.link_rules,
    # A tcx link cannot move: a new priority means a new link at the new position
    # (apply/execute.py places it there), so priority forces a replacement.
    attributes=("interface", "netns", "direction", "priority"),
    feature="tcx",
    feature_words="tcx links",
    presence_checks=network.interface_present,
    docs_anchor="tcxprogram",
    network=True,
)
