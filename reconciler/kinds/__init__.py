"""The program-kind registry: one :class:`ProgramKind` record per program type, looked up by every
layer above the kernel (spec, plan, apply) instead of tables of their own.

Adding a kind is adding a module here with its record and listing it in ``_KINDS`` (see
docs/adding-a-program-kind.md). Lookups: :func:`by_kind_name` (the manifest's legacy kind),
:func:`by_app_type` (a BpfApplication program's ``type``), :func:`by_prog_type` and
:func:`by_point_class` (a point or hook in a plan). The order of :func:`all` is the order kinds
are listed in messages and tried when a section fits several.

This package sits above :mod:`reconciler.kernel` (it speaks its types) and below spec, plan and
apply; the kernel never imports it: it keeps its own attach mechanics per point class.
"""

from __future__ import annotations

from typing import Any

from reconciler.kernel.types import ProgType
from reconciler.kinds import (
    cgroupskb,
    cgroupsockaddr,
    fentry,
    fexit,
    kprobe,
    tc,
    tcx,
    tracepoint,
    uprobe,
    xdp,
)
from reconciler.kinds.record import (
    AppType,
    FieldPath,
    HostQuery,
    IndexPart,
    LinkValues,
    PointLimit,
    ProgramKind,
    Resolver,
    Sections,
    Target,
    encode_point,
)

__all__ = [
    "AppType",
    "FieldPath",
    "HostQuery",
    "IndexPart",
    "LinkValues",
    "PointLimit",
    "ProgramKind",
    "Resolver",
    "Sections",
    "Target",
    "all",
    "by_app_type",
    "by_kind_name",
    "by_point_class",
    "by_prog_type",
    "forcing",
    "kind_names",
    "point_from_json",
    "point_to_json",
]

_KINDS: tuple[ProgramKind, ...] = (
    xdp.KIND,
    tcx.KIND,
    tc.KIND,
    tracepoint.KIND,
    uprobe.KIND,
    kprobe.KIND,
    fentry.KIND,
    fexit.KIND,
    cgroupskb.KIND,
    cgroupsockaddr.KIND,
)
_BY_NAME = {k.name: k for k in _KINDS}
_BY_TYPE = {k.prog_type: k for k in _KINDS}
_BY_POINT = {cls: k for k in _KINDS for cls in k.point_classes}
_BY_POINT_NAME = {cls.__name__: k for k in _KINDS for cls in k.point_classes}
_BY_APP_TYPE = {a.name: (k, a) for k in _KINDS for a in k.app_types}
# Attributes that force a replacement wherever they appear: those some kind says so of and no
# kind changes in place. An attribute left in a record by another type at the same address (an
# application's program whose type changed) is judged by this.
_FORCING_ANYWHERE = frozenset().union(*(k.forcing for k in _KINDS)) - frozenset().union(
    *(k.in_place for k in _KINDS)
)

# Registry-wide invariants: a lookup must never be ambiguous.
assert len(_BY_NAME) == len(_BY_TYPE) == len(_KINDS), "a kind registered twice"
assert len(_BY_POINT) == sum(len(k.point_classes) for k in _KINDS), "a point class in two kinds"
assert len(_BY_APP_TYPE) == sum(len(k.app_types) for k in _KINDS), "an app type in two kinds"


def all() -> tuple[ProgramKind, ...]:  # noqa: A001 - the registry's vocabulary: kinds.all()
    return _KINDS


def kind_names() -> tuple[str, ...]:
    return tuple(k.name for k in _KINDS)


def by_kind_name(name: str) -> ProgramKind:
    """The kind a legacy manifest kind names (KeyError for applications and unknown names)."""
    return _BY_NAME[name]


def by_prog_type(prog_type: ProgType) -> ProgramKind:
    return _BY_TYPE[prog_type]


def by_point_class(cls: type) -> ProgramKind:
    """The kind whose programs attach to points (or hooks) of class ``cls``."""
    return _BY_POINT[cls]


def by_app_type(name: str) -> tuple[ProgramKind, AppType]:
    """The kind an application program's ``type`` names, and that type's spelling."""
    return _BY_APP_TYPE[name]


def forcing(prog_type: ProgType) -> frozenset[str]:
    """The plan attributes whose change forces a new program (or link) for ``prog_type``: its
    kind's, and those that force one for every kind that has them."""
    return by_prog_type(prog_type).forcing | _FORCING_ANYWHERE


def point_to_json(point: object | None) -> dict[str, Any] | None:
    """A point or hook as a saved plan stores it."""
    return None if point is None else encode_point(point)


def point_from_json(doc: dict[str, Any] | None) -> Any:
    if doc is None:
        return None
    return _BY_POINT_NAME[doc["type"]].decode_point(doc)
