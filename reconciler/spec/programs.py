"""One vocabulary for every kind: the programs a manifest loads and the links each attaches to.

A program kind (``XdpProgram``, ...) is one program with one link, spelled in bpfman-operator
v0.5's lowercase fields; an application (``BpfApplication``, ``ClusterBpfApplication``) is several
programs of one bytecode, each with a list of links, spelled in camelCase. This module reads a
schema-valid spec of either family into :class:`Program` and :class:`LinkSpec` values with the same
normalised keys, so that checking and expanding are written once.

Normalised link values, by program type (each kind's record in :mod:`reconciler.kinds` reads
them from either spelling):

- XDP: ``interfaces`` (list or None), ``primary`` (bool), ``discovery`` (None or
  ``{"allowed": [...], "exclude": [...]}``), ``netns``, ``priority``, ``proceedon`` (lowercase)
- TCX: the same without ``proceedon``, with ``direction`` (``ingress``/``egress``)
- TC: the same as TCX, with ``proceedon`` (lowercase TC return codes or ``dispatcher_return``)
- TRACEPOINT: ``names`` (list of ``group/name``)
- UPROBE: ``target``, ``func_name``, ``offset``, ``retprobe``, ``pid``, ``container_pid``
- KPROBE: ``func_name``, ``offset``, ``retprobe``
- FENTRY, FEXIT: ``func_name``
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from reconciler import kinds
from reconciler.kernel.types import ProgType
from reconciler.kinds import ProgramKind
from reconciler.spec.loader import FieldPath
from reconciler.spec.schema import APPLICATION_KINDS
from reconciler.values import frozen


@frozen
class LinkSpec:
    """One link: where one program attaches (an interface selector may make it several)."""

    path: FieldPath  # the link: ("spec",) for a program kind
    values: dict[str, Any]  # normalised, see the module docstring
    fields: dict[str, FieldPath] = field(default_factory=dict)  # value key -> where it is written

    def where(self, key: str) -> FieldPath:
        return self.fields.get(key, self.path)


@frozen
class Program:
    function: str  # the entry point in the bytecode
    prog_type: ProgType
    type_name: str  # as the manifest says it: "KprobeProgram" or "KRetProbe"
    path: FieldPath  # ("spec",) or ("spec", "programs", i)
    function_path: FieldPath  # ("spec", "bpffunctionname") or (..., "name")
    links: tuple[LinkSpec, ...]
    in_application: bool

    @property
    def kind(self) -> ProgramKind:
        """Its record in the program-kind registry (by type, never by the manifest's kind)."""
        return kinds.by_prog_type(self.prog_type)

    @property
    def index_prefix(self) -> str:
        """Addresses of an application's attachments start with the program's name."""
        return f"{self.function}:" if self.in_application else ""


def is_application(kind: str) -> bool:
    return kind in APPLICATION_KINDS


def spec_keys(kind: str) -> dict[str, str]:
    """How ``kind`` spells the fields every kind has."""
    if is_application(kind):
        return {
            "bytecode": "byteCode",
            "nodeselector": "nodeSelector",
            "globaldata": "globalData",
            "mapownerselector": "mapOwnerSelector",
        }
    return {
        "bytecode": "bytecode",
        "nodeselector": "nodeselector",
        "globaldata": "globaldata",
        "mapownerselector": "mapownerselector",
    }


def programs_of(kind: str, spec: dict[str, Any]) -> list[Program]:
    """The programs of a schema-valid spec of ``kind``."""
    if not is_application(kind):
        record = kinds.by_kind_name(kind)
        at: FieldPath = ("spec",)
        link = record.legacy_link(spec, at)
        return [
            Program(
                spec["bpffunctionname"],
                record.prog_type,
                kind,
                at,
                ("spec", "bpffunctionname"),
                (LinkSpec(at, link.values, link.fields),),
                False,
            )
        ]
    out = []
    for i, program in enumerate(spec["programs"]):
        record, app = kinds.by_app_type(program["type"])
        path: FieldPath = ("spec", "programs", i)
        member: FieldPath = (*path, app.member)
        info = program[app.member]
        links = []
        for j, link in enumerate(info.get("links") or []):
            link_path: FieldPath = (*member, "links", j)
            values = record.app_link(link, info, app, link_path, member)
            links.append(LinkSpec(link_path, values.values, values.fields))
        out.append(
            Program(
                program["name"],
                record.prog_type,
                program["type"],
                path,
                (*path, "name"),
                tuple(links),
                True,
            )
        )
    return out


def static_attachment_count(program: Program) -> int | None:
    """How many attachments the program expands to on any host, or None when that depends on
    the host (interface discovery)."""
    total = 0
    for link in program.links:
        count = program.kind.static_count(link.values)
        if count is None:
            return None
        total += count
    return total
