"""The record every program kind is described by, and the small vocabulary its functions speak.

A :class:`ProgramKind` holds everything bpfman knows about one program type that is not how the
kernel attaches it: how manifests name it (a legacy kind and the application types), which ELF
sections hold programs of that type, how a link's normalised values become attach points and
plan attributes, which attribute changes force a replacement, the feature the kernel must have,
what the plan checks on the host, and where its schema and documentation are. The kernel layer
keeps the attach mechanics per point class (:mod:`reconciler.kernel`); everything above it looks
a kind up in :mod:`reconciler.kinds` instead of keeping a table of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import field
from typing import Any, Protocol

from reconciler.kernel.types import AttachPoint, Kernel, ProgType
from reconciler.values import frozen

# A field of a manifest document: keys and list indexes from the document's root.
FieldPath = tuple[str | int, ...]
Values = dict[str, Any]  # a link's normalised values (see reconciler.spec.programs)


@frozen
class AppType:
    """A program type as a BpfApplication names it: ``type: URetProbe`` with its settings in
    the member field ``uretprobe``."""

    name: str
    member: str
    retprobe: bool = False


@frozen
class Sections:
    """Which ELF sections (libbpf's names) hold a program this kind can load."""

    fits: Callable[[str], bool]
    expected: str  # in words: "a section holding an XDP program (xdp[/...], ...) or ..."
    example: str  # a fitting annotation: 'SEC("xdp")'
    family: str = ""  # kinds/sections.py's name for the program type, e.g. "sched_cls"


@frozen
class LinkValues:
    """One link, normalised: the values, and where each was written (for messages)."""

    values: Values
    fields: dict[str, FieldPath] = field(default_factory=dict)


@frozen
class Target:
    """One attach point a link expands to on this host."""

    index: str  # the address index within the program: interface, group/name, uprobe location
    point: AttachPoint  # a TC program's point is the hook (TcHook) its dispatcher runs it on
    attributes: dict[str, Any]  # the plan attributes of this point


class Resolver(Protocol):
    """What building a link's attach points may ask of the host (the spec layer answers, each
    question once, and reports what it cannot answer against the link)."""

    def interfaces(self, netns: str | None) -> list[str]:
        """The interfaces this link selects (named, the primary one or discovered)."""
        ...

    def library(self, container_pid: int | None = None) -> str | None:
        """The path of the library this link's ``target`` names (inside the mount namespace of
        ``container_pid`` if given), None if not found."""
        ...

    def containers(self, selector: Values) -> list[dict[str, Any]]:
        """The running containers this link's container selector names (see
        ``reconciler.spec.HostFacts.containers``); [] after reporting why not."""
        ...

    def xdp_mode(self, ifname: str, netns: str | None) -> str | None:
        """The interface's XDP mode from the host's config, if it names one."""
        ...


@frozen
class HostQuery:
    """What a plan-time host check of one attach point may look at."""

    kernel: Kernel
    ours: frozenset[int]  # ids of the programs bpfman manages
    dispatching: bool  # XDP and TC hooks run their programs through dispatchers


@frozen
class IndexPart:
    """An address index known without the host, for the NAME_MAX check of validation."""

    index: str
    field: str  # the link value most of it comes from (its field path is where to point)
    item: int | None  # the position in that field when it is a list
    what: str  # what to shorten, in words


@frozen
class PointLimit:
    """The kernel runs at most ``limit`` programs on one such point."""

    limit: int
    key: Callable[[Any], str]  # the point -> what shares the limit
    explain: Callable[[str, int, str], str]  # (key, how many, the first of them) -> message


HostCheck = Callable[[Any, HostQuery], list[str]]


def _no_rules(values: Values, in_application: bool) -> list[tuple[str | None, str]]:
    return []


def _no_checks(point: Any, query: HostQuery) -> list[str]:
    return []


def _one(values: Values) -> int | None:
    return 1


def encode_point(point: object) -> dict[str, Any]:
    """A point (a frozen dataclass of plain values) as saved-plan JSON."""
    return {"type": type(point).__name__, **dataclasses.asdict(point)}  # type: ignore[call-overload]


@frozen
class ProgramKind:
    """Everything bpfman knows about one program type above the kernel layer."""

    name: str  # the legacy manifest kind: "XdpProgram"
    prog_type: ProgType
    article: str  # "an" or "a", as in "an XdpProgram"
    app_types: tuple[AppType, ...]  # as BpfApplication names it; the first is the plain one
    point_classes: tuple[type, ...]  # the points (and hooks) a plan may hold for it
    sections: Sections
    # Normalise a schema-valid link: (the legacy spec, its path) and
    # (the application's link, the program's member mapping, its AppType, link path, member path).
    legacy_link: Callable[[dict[str, Any], FieldPath], LinkValues]
    app_link: Callable[[dict[str, Any], dict[str, Any], AppType, FieldPath, FieldPath], LinkValues]
    targets: Callable[[Values, Resolver], list[Target]]  # a link's attach points on this host
    # Its indexes known without the host, given how long a name is in bpffs.
    index_parts: Callable[[Values, Callable[[str], int]], list[IndexPart]]
    attributes: tuple[str, ...]  # the plan attributes its targets carry
    in_place: frozenset[str] = frozenset()  # of those, changed without a new program or link
    static_count: Callable[[Values], int | None] = _one  # attachments per link (None: host)
    link_rules: Callable[[Values, bool], list[tuple[str | None, str]]] = _no_rules
    feature: str | None = None  # the Kernel.probe name it needs (None: always there)
    feature_words: str = ""  # "tcx links": what the plan says is missing
    presence_checks: HostCheck = _no_checks  # does the place exist (else it counts nowhere)
    host_checks: HostCheck = _no_checks  # the rest, once the place exists
    point_limit: PointLimit | None = None
    docs_anchor: str = ""  # the section of docs/manifests.md
    network: bool = False  # attaches to interfaces through an interface selector

    @property
    def schema_file(self) -> str:
        """Its JSON Schema, under schemas/."""
        return f"{self.name.lower()}.json"

    @property
    def a_name(self) -> str:
        return f"{self.article} {self.name}"

    @property
    def forcing(self) -> frozenset[str]:
        """Its attributes whose change needs a new program (or link)."""
        return frozenset(self.attributes) - self.in_place

    def decode_point(self, doc: dict[str, Any]) -> Any:
        fields = dict(doc)
        name = fields.pop("type")
        cls = next(c for c in self.point_classes if c.__name__ == name)
        return cls(**fields)
