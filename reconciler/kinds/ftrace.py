"""FentryProgram and FexitProgram (and BpfApplication's ``type: FEntry``/``FExit``): a tracing
program on a kernel function's entry or exit, through a BPF trampoline. The two differ only in
names and the point class, so :func:`make` builds both records
(:mod:`.fentry`, :mod:`.fexit`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reconciler.kernel.types import FentryPoint, FexitPoint, ProgType
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


def _legacy(spec: dict[str, Any], at: FieldPath) -> LinkValues:
    return LinkValues({"func_name": spec["func_name"]}, {"func_name": (*at, "func_name")})


def _app(
    link: dict[str, Any], info: dict[str, Any], app: AppType, path: FieldPath, member: FieldPath
) -> LinkValues:
    # The function belongs to the program; a link only says "attach".
    return LinkValues({"func_name": info["function"]}, {"func_name": (*member, "function")})


def _index_parts(v: Values, stored_length: Callable[[str], int]) -> list[IndexPart]:
    return [IndexPart(v["func_name"], "func_name", None, "the function name")]


def _function_exists(p: FentryPoint | FexitPoint, q: HostQuery) -> list[str]:
    why = q.kernel.missing_kernel_function(p.func_name, True)  # with BTF: the trampoline needs it
    return [] if why is None else [f"kernel function {p.func_name} {why}; fix spec.func_name"]


def make(
    name: str, prog_type: ProgType, app: AppType, point_class: type[FentryPoint | FexitPoint]
) -> ProgramKind:
    prefix = app.member  # "fentry" | "fexit": the section and the feature have its name

    def targets(v: Values, host: Resolver) -> list[Target]:
        return [Target(v["func_name"], point_class(v["func_name"]), {"func_name": v["func_name"]})]

    return ProgramKind(
        name=name,
        prog_type=prog_type,
        article="an",
        app_types=(app,),
        point_classes=(point_class,),
        sections=sections.of(prefix, f'SEC("{prefix}/do_unlinkat")'),
        legacy_link=_legacy,
        app_link=_app,
        targets=targets,
        index_parts=_index_parts,
        attributes=("func_name",),
        feature=prefix,
        feature_words=f"{prefix} programs",
        host_checks=_function_exists,
        docs_anchor="fentryprogram-and-fexitprogram",
    )
