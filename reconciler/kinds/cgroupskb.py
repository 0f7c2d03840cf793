"""CgroupSkbProgram and ClusterBpfApplication's ``type: CgroupSkb``: a cgroup_skb program on a
cgroup v2 directory, for the packets its processes send (egress) or receive (ingress), through a
cgroup link (multi-program: other programs on the same cgroup keep running)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reconciler.kernel.types import CgroupPoint, ProgType
from reconciler.kinds import sections
from reconciler.kinds.record import (
    AppType,
    FieldPath,
    HostQuery,
    IndexPart,
    LinkValues,
    ProgramKind,
    Resolver,
    Target,
    Values,
)


def cgroup_index(cgroup: str, direction: str) -> str:
    """``/sys/fs/cgroup/app.slice:egress`` (its '/' are encoded in the pin name, as a uprobe
    target's are)."""
    return f"{cgroup}:{direction}"


def _legacy(spec: dict[str, Any], at: FieldPath) -> LinkValues:
    values = {"cgroup": spec["cgroup"], "direction": spec["direction"]}
    fields = {"cgroup": (*at, "cgroup"), "direction": (*at, "direction")}
    return LinkValues(values, fields)


def _app(
    link: dict[str, Any], info: dict[str, Any], app: AppType, path: FieldPath, member: FieldPath
) -> LinkValues:
    values = {"cgroup": link["cgroup"], "direction": link["direction"].lower()}
    fields = {"cgroup": (*path, "cgroup"), "direction": (*path, "direction")}
    return LinkValues(values, fields)


def _targets(v: Values, host: Resolver) -> list[Target]:
    point = CgroupPoint(v["cgroup"], v["direction"])
    attributes = {"cgroup": v["cgroup"], "direction": v["direction"]}
    return [Target(cgroup_index(v["cgroup"], v["direction"]), point, attributes)]


def _index_parts(v: Values, stored_length: Callable[[str], int]) -> list[IndexPart]:
    index = cgroup_index(v["cgroup"], v["direction"])
    return [IndexPart(index, "cgroup", None, "the cgroup path")]


def cgroup_presence(p: Any, q: HostQuery) -> list[str]:
    """That the point's cgroup (``p.path``) is a cgroup v2 directory of this host."""
    found = q.kernel.cgroup_problem(p.path)
    return [found] if found is not None else []


KIND = ProgramKind(
    name="CgroupSkbProgram",
    prog_type=ProgType.CGROUP_SKB,
    article="a",
    app_types=(AppType("CgroupSkb", "cgroupSkb"),),
    point_classes=(CgroupPoint,),
    sections=sections.of("cgroup_skb", 'SEC("cgroup_skb/egress")'),
    legacy_link=_legacy,
    app_link=_app,
    targets=_targets,
    index_parts=_index_parts,
    # A cgroup link cannot move to another cgroup or direction: a change is a new link.
    attributes=("cgroup", "direction"),
    feature="cgroup_link",
    feature_words="cgroup links",
    presence_checks=cgroup_presence,
    docs_anchor="cgroupskbprogram",
)
