"""One vocabulary for every kind: the programs a manifest loads and the links each attaches to.

A program kind (``XdpProgram``, ...) is one program with one link, spelled in bpfman-operator
v0.5's lowercase fields; an application (``BpfApplication``, ``ClusterBpfApplication``) is several
programs of one bytecode, each with a list of links, spelled in camelCase. This module reads a
schema-valid spec of either family into :class:`Program` and :class:`LinkSpec` values with the same
normalised keys, so that checking and expanding are written once.

Normalised link values, by program type:

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

from dataclasses import dataclass, field
from typing import Any

from reconciler.kernel.types import ProgType
from reconciler.spec.loader import FieldPath
from reconciler.spec.schema import APPLICATION_KINDS

LEGACY_TYPES = {
    "XdpProgram": ProgType.XDP,
    "TcxProgram": ProgType.TCX,
    "TcProgram": ProgType.TC,
    "TracepointProgram": ProgType.TRACEPOINT,
    "UprobeProgram": ProgType.UPROBE,
    "KprobeProgram": ProgType.KPROBE,
    "FentryProgram": ProgType.FENTRY,
    "FexitProgram": ProgType.FEXIT,
}
# Application program types (bpfman-operator's spelling) -> (member field, type, retprobe).
APP_TYPES: dict[str, tuple[str, ProgType, bool]] = {
    "XDP": ("xdp", ProgType.XDP, False),
    "TC": ("tc", ProgType.TC, False),
    "TCX": ("tcx", ProgType.TCX, False),
    "TracePoint": ("tracepoint", ProgType.TRACEPOINT, False),
    "UProbe": ("uprobe", ProgType.UPROBE, False),
    "URetProbe": ("uretprobe", ProgType.UPROBE, True),
    "KProbe": ("kprobe", ProgType.KPROBE, False),
    "KRetProbe": ("kretprobe", ProgType.KPROBE, True),
    "FEntry": ("fentry", ProgType.FENTRY, False),
    "FExit": ("fexit", ProgType.FEXIT, False),
}
# The program kind whose section rules a program type follows.
KIND_OF_TYPE = {t: kind for kind, t in LEGACY_TYPES.items()}
_PROCEED_ON = {
    "Aborted": "aborted",
    "Drop": "drop",
    "Pass": "pass",
    "TX": "tx",
    "ReDirect": "redirect",
    "DispatcherReturn": "dispatcher_return",
}
# bpfman-operator's TC proceedOn spelling -> the legacy kind's (and the kernel layer's).
_TC_PROCEED_ON = {
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
_NETWORK = (ProgType.XDP, ProgType.TCX, ProgType.TC)


@dataclass(frozen=True)
class LinkSpec:
    """One link: where one program attaches (an interface selector may make it several)."""

    path: FieldPath  # the link: ("spec",) for a program kind
    values: dict[str, Any]  # normalised, see the module docstring
    fields: dict[str, FieldPath] = field(default_factory=dict)  # value key -> where it is written

    def where(self, key: str) -> FieldPath:
        return self.fields.get(key, self.path)


@dataclass(frozen=True)
class Program:
    function: str  # the entry point in the bytecode
    prog_type: ProgType
    type_name: str  # as the manifest says it: "KprobeProgram" or "KRetProbe"
    path: FieldPath  # ("spec",) or ("spec", "programs", i)
    function_path: FieldPath  # ("spec", "bpffunctionname") or (..., "name")
    links: tuple[LinkSpec, ...]
    in_application: bool

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
        prog_type = LEGACY_TYPES[kind]
        link = _legacy_link(prog_type, spec)
        return [
            Program(
                spec["bpffunctionname"],
                prog_type,
                kind,
                ("spec",),
                ("spec", "bpffunctionname"),
                (link,),
                False,
            )
        ]
    out = []
    for i, program in enumerate(spec["programs"]):
        member, prog_type, retprobe = APP_TYPES[program["type"]]
        path: FieldPath = ("spec", "programs", i)
        info = program[member]
        out.append(
            Program(
                program["name"],
                prog_type,
                program["type"],
                path,
                (*path, "name"),
                tuple(_app_links(prog_type, retprobe, info, (*path, member))),
                True,
            )
        )
    return out


def _legacy_link(prog_type: ProgType, spec: dict[str, Any]) -> LinkSpec:
    at: FieldPath = ("spec",)
    if prog_type in _NETWORK:
        selector = spec["interfaceselector"]
        values: dict[str, Any] = {
            "interfaces": selector.get("interfaces"),
            "primary": bool(selector.get("primarynodeinterface")),
            "discovery": None,
            "netns": spec.get("netns"),
            "priority": spec["priority"],
        }
        if prog_type is not ProgType.TCX:
            values["proceedon"] = list(spec["proceedon"])
        if prog_type is not ProgType.XDP:
            values["direction"] = spec["direction"]
        else:
            values["xdpmode"] = spec.get("xdpmode")
        fields = {
            "selector": (*at, "interfaceselector"),
            "primary": (*at, "interfaceselector", "primarynodeinterface"),
            "netns": (*at, "netns"),
        }
        return LinkSpec(at, values, fields)
    if prog_type is ProgType.TRACEPOINT:
        return LinkSpec(at, {"names": list(spec["names"])}, {"names": (*at, "names")})
    if prog_type is ProgType.UPROBE:
        containers = spec.get("containers") or {}
        values = {
            "target": spec["target"],
            "func_name": spec.get("func_name"),
            "offset": spec["offset"],
            "retprobe": spec["retprobe"],
            "pid": spec.get("pid") or None,  # 0, like omitted, means every process
            "container_pid": containers.get("pid"),
        }
        fields = {
            "target": (*at, "target"),
            "func_name": (*at, "func_name"),
            "offset": (*at, "offset"),
            "container_pid": (*at, "containers", "pid"),
        }
        return LinkSpec(at, values, fields)
    if prog_type is ProgType.KPROBE:
        values = {
            "func_name": spec["func_name"],
            "offset": spec["offset"],
            "retprobe": spec["retprobe"],
        }
        return LinkSpec(at, values, {"func_name": (*at, "func_name"), "offset": (*at, "offset")})
    return LinkSpec(at, {"func_name": spec["func_name"]}, {"func_name": (*at, "func_name")})


def _app_links(
    prog_type: ProgType, retprobe: bool, info: dict[str, Any], at: FieldPath
) -> list[LinkSpec]:
    links: list[dict[str, Any]] = info.get("links") or []
    out = []
    for j, link in enumerate(links):
        path: FieldPath = (*at, "links", j)
        if prog_type in _NETWORK:
            selector = link["interfaceSelector"]
            discovery = selector.get("interfacesDiscoveryConfig")
            values: dict[str, Any] = {
                "interfaces": selector.get("interfaces"),
                "primary": bool(selector.get("primaryNodeInterface")),
                "discovery": (
                    {
                        "allowed": list(discovery.get("allowedInterfaces") or []),
                        "exclude": list(discovery["excludeInterfaces"]),
                    }
                    if discovery is not None
                    else None
                ),
                "netns": link.get("netnsPath"),
                "priority": link["priority"],
            }
            if prog_type is ProgType.XDP:
                values["proceedon"] = [_PROCEED_ON[v] for v in link["proceedOn"]]
                values["xdpmode"] = link.get("xdpMode")
            elif prog_type is ProgType.TC:
                values["proceedon"] = [_TC_PROCEED_ON[v] for v in link["proceedOn"]]
            if prog_type is not ProgType.XDP:
                values["direction"] = link["direction"].lower()
            fields = {
                "selector": (*path, "interfaceSelector"),
                "primary": (*path, "interfaceSelector", "primaryNodeInterface"),
                "discovery": (*path, "interfaceSelector", "interfacesDiscoveryConfig"),
                "netns": (*path, "netnsPath"),
            }
            out.append(LinkSpec(path, values, fields))
        elif prog_type is ProgType.TRACEPOINT:
            out.append(LinkSpec(path, {"names": [link["name"]]}, {"names": (*path, "name")}))
        elif prog_type is ProgType.UPROBE:
            containers = link.get("containers") or {}
            values = {
                "target": link["target"],
                "func_name": link.get("function"),
                "offset": link["offset"],
                "retprobe": retprobe,
                "pid": link.get("pid") or None,
                "container_pid": containers.get("pid"),
            }
            fields = {
                "target": (*path, "target"),
                "func_name": (*path, "function"),
                "offset": (*path, "offset"),
                "container_pid": (*path, "containers", "pid"),
            }
            out.append(LinkSpec(path, values, fields))
        elif prog_type is ProgType.KPROBE:
            values = {
                "func_name": link["function"],
                "offset": link.get("offset", 0),
                "retprobe": retprobe,
            }
            fields = {"func_name": (*path, "function"), "offset": (*path, "offset")}
            out.append(LinkSpec(path, values, fields))
        else:  # FENTRY/FEXIT: the function belongs to the program; a link only says "attach"
            out.append(
                LinkSpec(path, {"func_name": info["function"]}, {"func_name": (*at, "function")})
            )
    return out


def static_attachment_count(program: Program) -> int | None:
    """How many attachments the program expands to on any host, or None when that depends on
    the host (interface discovery)."""
    total = 0
    for link in program.links:
        values = link.values
        if program.prog_type in _NETWORK:
            if values["discovery"] is not None:
                return None
            total += len(values["interfaces"]) if values["interfaces"] is not None else 1
        elif program.prog_type is ProgType.TRACEPOINT:
            total += len(values["names"])
        else:
            total += 1
    return total
