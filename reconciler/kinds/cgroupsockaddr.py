"""CgroupSockAddrProgram and ClusterBpfApplication's ``type: CgroupSockAddr``: a
cgroup_sock_addr program on a cgroup v2 directory, run in one socket call of its processes
(``connect4``, ``sendmsg6``, ...), through a cgroup link (multi-program)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reconciler.kernel.types import CgroupSockAddrPoint, ProgType
from reconciler.kinds import sections
from reconciler.kinds.cgroupskb import cgroup_presence
from reconciler.kinds.record import (
    AppType,
    FieldPath,
    IndexPart,
    LinkValues,
    ProgramKind,
    Resolver,
    Target,
    Values,
)


def _legacy(spec: dict[str, Any], at: FieldPath) -> LinkValues:
    values = {"cgroup": spec["cgroup"], "attachtype": spec["attachtype"]}
    fields = {"cgroup": (*at, "cgroup"), "attachtype": (*at, "attachtype")}
    return LinkValues(values, fields)


def _app(
    link: dict[str, Any], info: dict[str, Any], app: AppType, path: FieldPath, member: FieldPath
) -> LinkValues:
    values = {"cgroup": link["cgroup"], "attachtype": link["attachType"]}
    fields = {"cgroup": (*path, "cgroup"), "attachtype": (*path, "attachType")}
    return LinkValues(values, fields)


def _targets(v: Values, host: Resolver) -> list[Target]:
    point = CgroupSockAddrPoint(v["cgroup"], v["attachtype"])
    attributes = {"cgroup": v["cgroup"], "attachtype": v["attachtype"]}
    return [Target(f"{v['cgroup']}:{v['attachtype']}", point, attributes)]


def _index_parts(v: Values, stored_length: Callable[[str], int]) -> list[IndexPart]:
    return [IndexPart(f"{v['cgroup']}:{v['attachtype']}", "cgroup", None, "the cgroup path")]


KIND = ProgramKind(
    name="CgroupSockAddrProgram",
    prog_type=ProgType.CGROUP_SOCK_ADDR,
    article="a",
    app_types=(AppType("CgroupSockAddr", "cgroupSockAddr"),),
    point_classes=(CgroupSockAddrPoint,),
    sections=sections.of("cgroup_sock_addr", 'SEC("cgroup/connect4")'),
    legacy_link=_legacy,
    app_link=_app,
    targets=_targets,
    index_parts=_index_parts,
    # A cgroup link cannot move to another cgroup or hook: a change is a new link.
    attributes=("cgroup", "attachtype"),
    feature="cgroup_link",
    feature_words="cgroup links",
    presence_checks=cgroup_presence,
    docs_anchor="cgroupsockaddrprogram",
)
