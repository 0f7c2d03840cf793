"""TracepointProgram and BpfApplication's ``type: TracePoint``: a program on a kernel tracepoint
(``group/name``), through a perf-event link."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from reconciler.kernel.types import ProgType, TracepointPoint
from reconciler.kinds import sections
from reconciler.kinds.record import (
    AppType,
    FieldPath,
    HostQuery,
    IndexPart,
    LinkValues,
    PointLimit,
    ProgramKind,
    Resolver,
    Target,
    Values,
)

# The kernel runs at most this many programs on one tracepoint (BPF_TRACE_MAX_PROGS); the next
# attach fails with E2BIG, so the plan refuses before anything is loaded.
TRACE_MAX_PROGS = 64


def _legacy(spec: dict[str, Any], at: FieldPath) -> LinkValues:
    return LinkValues({"names": list(spec["names"])}, {"names": (*at, "names")})


def _app(
    link: dict[str, Any], info: dict[str, Any], app: AppType, path: FieldPath, member: FieldPath
) -> LinkValues:
    return LinkValues({"names": [link["name"]]}, {"names": (*path, "name")})


def _targets(v: Values, host: Resolver) -> list[Target]:
    return [
        Target(name, TracepointPoint(*name.split("/", 1)), {"tracepoint": name})
        for name in v["names"]
    ]


def _index_parts(v: Values, stored_length: Callable[[str], int]) -> list[IndexPart]:
    return [IndexPart(name, "names", i, "the tracepoint name") for i, name in enumerate(v["names"])]


def _exists(p: TracepointPoint, q: HostQuery) -> list[str]:
    if q.kernel.tracepoint_exists(p.group, p.name):
        return []
    near = difflib.get_close_matches(f"{p.group}/{p.name}", q.kernel.tracepoints(), n=3)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    return [
        f"tracepoint {p.group}/{p.name} does not exist on this kernel "
        f"(see /sys/kernel/tracing/events){hint}"
    ]


def _too_many(tp: str, count: int, first: str) -> str:
    return (
        f"tracepoint {tp}: {count} programs want it (first {first}), but the kernel runs at "
        f"most {TRACE_MAX_PROGS} programs on one tracepoint (BPF_TRACE_MAX_PROGS); spread them "
        "over other tracepoints"
    )


KIND = ProgramKind(
    name="TracepointProgram",
    prog_type=ProgType.TRACEPOINT,
    article="a",
    app_types=(AppType("TracePoint", "tracepoint"),),
    point_classes=(TracepointPoint,),
    sections=sections.of("tracepoint", 'SEC("tracepoint/syscalls/sys_enter_openat")'),
    legacy_link=_legacy,
    app_link=_app,
    targets=_targets,
    index_parts=_index_parts,
    static_count=lambda v: len(v["names"]),
    attributes=("tracepoint",),
    feature="tracepoint",
    feature_words="tracepoint programs",
    host_checks=_exists,
    point_limit=PointLimit(TRACE_MAX_PROGS, lambda p: f"{p.group}/{p.name}", _too_many),
    docs_anchor="tracepointprogram",
)
