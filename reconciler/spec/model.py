"""The typed desired state: what the manifests ask for on this host.

One ``DesiredAttachment`` per address. In bpfman's legacy kinds every attach point is its own
load of the bytecode (its own program and maps), so an attachment is also the unit of loading.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.address import Address
from reconciler.kernel.types import AttachPoint, ProgramSpec, TcHook
from reconciler.values import frozen


@frozen
class Origin:
    """Where a manifest document starts: ``file`` relative to the source root, 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@frozen
class DesiredAttachment:
    address: Address
    origin: Origin
    program: ProgramSpec  # object_path is absolute and resolved
    # A TC program (TcProgram, type TC) runs behind the hook's TC dispatcher: its point is the
    # TcHook, and the planner hands all of a hook's attachments to ``Kernel.dispatch`` at once.
    point: AttachPoint | TcHook
    bytecode_digest: str  # "sha256:<hex>" of the ELF file
    priority: int | None = None
    proceedon: tuple[str, ...] = ()
    # Attachments whose maps this one uses (its map owner): loaded before it, and not unloaded
    # or replaced while it remains without it being reloaded too.
    depends_on: tuple[Address, ...] = ()
    # Everything the plan shows and diffs, as plain JSON-able values. Keys are stable per program
    # type (a key that does not apply is absent; one that applies but is unset is null):
    #   every type: bytecode, bytecode_digest, function, then the type's keys, then
    #     global_data ({name: hex} or null), map_owner (KIND/NAME or null)
    #   xdp: interface, netns, priority, proceedon      tcx: interface, netns, direction, priority
    #   tc: interface, netns, direction, priority, proceedon
    #   tracepoint: tracepoint                          kprobe: func_name, offset, retprobe
    #   uprobe: target, target_path, func_name, offset, retprobe, pid, container_pid
    #   fentry, fexit: func_name
    attributes: dict[str, Any] = field(default_factory=dict)


# ``bpfman.io/prune: disabled`` on a manifest: its attachments carry the attribute
# ``prune: disabled`` (absent otherwise), so that a plan made after the manifest is gone still
# knows, from the record, to keep them.
PRUNE_ANNOTATION = "bpfman.io/prune"
PRUNE_ATTRIBUTE = "prune"


@frozen
class Manifest:
    """One validated manifest document (before expansion into attachments)."""

    kind: str
    name: str
    origin: Origin
    spec: dict[str, Any]  # schema-validated, defaults applied
    labels: dict[str, str] = field(default_factory=dict, compare=False)
    annotations: dict[str, str] = field(default_factory=dict, compare=False)
    # Line of every field, keyed by field path ("spec.bytecode.path"), so that problems found
    # after loading (expansion, plan-time host checks) can still point at file:line.
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    # metadata.namespace of a BpfApplication: kept and shown, not part of the name on a host.
    namespace: str | None = None
    # Resolved by load_manifests: the map owner's resource (KIND/NAME), if the manifest selects
    # one, and the decoded globaldata, sorted by variable name.
    map_owner: str | None = None
    global_data: tuple[tuple[str, bytes], ...] = ()

    @property
    def resource(self) -> str:
        """``KIND/NAME``, the prefix of every address this manifest expands to."""
        return f"{self.kind}/{self.name}"

    def origin_of(self, field_path: str) -> Origin:
        """Where ``field_path`` (e.g. ``spec.interfaceselector``) is written, or its nearest
        enclosing field; the document's start when none of them is known."""
        path = field_path
        while path:
            if path in self.lines:
                return Origin(self.origin.file, self.lines[path])
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return self.origin


@dataclass
class DesiredState:
    manifests: list[Manifest]
    attachments: list[DesiredAttachment]
    revision: str | None = None  # source revision (git commit) when known
    source: str = ""  # what the user named: a directory or a URL
    # Manifests whose node selector does not match this host's labels, each with the reason
    # (shown by `bpfman plan --show-unselected`); they contribute no attachments.
    unselected: list[tuple[Manifest, str]] = field(default_factory=list)
    # Resources a kustomization listed that bpfman does not load ("apps/v1 DaemonSet" -> count):
    # skipped, and counted once in the plan header.
    skipped: dict[str, int] = field(default_factory=dict)
    # Every file a kustomization read (resources, patches, nested kustomizations, bases outside
    # the manifest directory): what the remembered plan digests besides the walked files.
    read_files: list[str] = field(default_factory=list)

    def by_address(self) -> dict[Address, DesiredAttachment]:
        return {a.address: a for a in self.attachments}


@dataclass
class LoadReport:
    """What loading saw besides the manifests (filled in by ``load_manifests``)."""

    skipped: Counter[str] = field(default_factory=Counter)
    files: set[Path] = field(default_factory=set)  # read through kustomizations

    def apply_to(self, state: DesiredState) -> None:
        state.skipped = dict(self.skipped)
        state.read_files = sorted(str(p) for p in self.files)


class ManifestError(Exception):
    """One or more problems with the manifests; each names file:line, field path and the fix."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@frozen
class Problem:
    origin: Origin
    path: str  # field path, e.g. spec.interfaceselector.interfaces[0]
    message: str  # what is wrong and what would be valid

    def __str__(self) -> str:
        where = f"{self.origin}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


def relpath(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
