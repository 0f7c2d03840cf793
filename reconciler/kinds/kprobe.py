"""KprobeProgram and BpfApplication's ``type: KProbe``/``KRetProbe``: a program on a kernel
function's entry (at an offset) or return."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reconciler.kernel.types import KprobePoint, ProgType
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


def kprobe_index(func_name: str, offset: int) -> str:
    return func_name + (f"+{offset}" if offset else "")


def _legacy(spec: dict[str, Any], at: FieldPath) -> LinkValues:
    values = {
        "func_name": spec["func_name"],
        "offset": spec["offset"],
        "retprobe": spec["retprobe"],
    }
    return LinkValues(values, {"func_name": (*at, "func_name"), "offset": (*at, "offset")})


def _app(
    link: dict[str, Any], info: dict[str, Any], app: AppType, path: FieldPath, member: FieldPath
) -> LinkValues:
    values = {
        "func_name": link["function"],
        "offset": link.get("offset", 0),
        "retprobe": app.retprobe,
    }
    return LinkValues(values, {"func_name": (*path, "function"), "offset": (*path, "offset")})


def _targets(v: Values, host: Resolver) -> list[Target]:
    attributes = {"func_name": v["func_name"], "offset": v["offset"], "retprobe": v["retprobe"]}
    point = KprobePoint(v["func_name"], v["offset"], v["retprobe"])
    return [Target(kprobe_index(v["func_name"], v["offset"]), point, attributes)]


def _index_parts(v: Values, stored_length: Callable[[str], int]) -> list[IndexPart]:
    return [IndexPart(kprobe_index(v["func_name"], v["offset"]), "func_name", None, "the function")]


def _rules(v: Values, in_application: bool) -> list[tuple[str | None, str]]:
    if v["retprobe"] and v["offset"]:
        return [
            (
                "offset",
                f"a kretprobe runs when {v['func_name']} returns, so it takes no offset (got "
                f"{v['offset']}); remove offset, or set retprobe: false for a kprobe",
            )
        ]
    return []


def _function_exists(p: KprobePoint, q: HostQuery) -> list[str]:
    why = q.kernel.missing_kernel_function(p.func_name, False)
    return [] if why is None else [f"kernel function {p.func_name} {why}; fix spec.func_name"]


KIND = ProgramKind(
    name="KprobeProgram",
    prog_type=ProgType.KPROBE,
    article="a",
    app_types=(AppType("KProbe", "kprobe"), AppType("KRetProbe", "kretprobe", retprobe=True)),
    point_classes=(KprobePoint,),
    sections=sections.of("kprobe", 'SEC("kprobe/do_unlinkat")'),
    legacy_link=_legacy,
    app_link=_app,
    targets=_targets,
    index_parts=_index_parts,
    attributes=("func_name", "offset", "retprobe"),
    link_rules=_rules,
    feature="kprobe",
    feature_words="kprobes",
    host_checks=_function_exists,
    docs_anchor="kprobeprogram",
)
