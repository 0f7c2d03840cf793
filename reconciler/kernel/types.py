"""The kernel layer's public vocabulary: what to load, where to attach, what is installed.

Everything above ``reconciler.kernel`` speaks only these types, so the real kernel and the fake
kernel are interchangeable (and must pass the same contract tests).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class ProgType(enum.Enum):
    XDP = "xdp"
    TCX = "tcx"
    TRACEPOINT = "tracepoint"
    UPROBE = "uprobe"


@dataclass(frozen=True)
class ProgramSpec:
    """One program of an ELF object, loaded with the type its manifest kind dictates."""

    object_path: str
    function: str
    prog_type: ProgType


@dataclass(frozen=True)
class XdpPoint:
    ifname: str
    mode: str = "auto"  # auto | native | generic (issue 4 makes it configurable)
    netns: str | None = None  # path of a network namespace, None = ours


@dataclass(frozen=True)
class TcxPoint:
    ifname: str
    direction: str  # ingress | egress
    netns: str | None = None


@dataclass(frozen=True)
class TracepointPoint:
    group: str
    name: str


@dataclass(frozen=True)
class UprobePoint:
    target: str  # absolute path of the binary or library
    func_name: str | None = None
    offset: int = 0
    retprobe: bool = False
    pid: int | None = None


AttachPoint = XdpPoint | TcxPoint | TracepointPoint | UprobePoint


@dataclass(frozen=True)
class Placement:
    """Where a new TCX link goes among our own links on the same hook.

    ``before``/``after`` name the pin directory (relative to the root) of a managed neighbour.
    Both None means "last". The kernel checks the hook's revision so a concurrent change fails
    instead of landing in the wrong order.
    """

    before: str | None = None
    after: str | None = None


@dataclass(frozen=True)
class MapInfo:
    name: str
    id: int
    type: str
    pin: str  # absolute pin path


@dataclass(frozen=True)
class Installed:
    """What the kernel holds for one managed pin directory."""

    pin_dir: str  # relative to the bpffs root
    prog_id: int
    prog_name: str
    prog_type: str
    tag: str
    jited_size: int
    prog_pin: str
    maps: tuple[MapInfo, ...] = ()
    link_id: int | None = None
    link_pin: str | None = None
    attached: bool = False  # the kernel confirms the program runs at its attach point
    attach: dict[str, object] = field(default_factory=dict)  # kernel's view of the attach point


class KernelError(Exception):
    """A failure a user can cause or fix (missing interface, verifier rejection, conflict)."""


class VerifierError(KernelError):
    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log


class AttachConflict(KernelError):
    """The attach point is held by a program we do not own."""


class Kernel(Protocol):
    """The typed API the rest of bpfman uses. Implemented by RealKernel and FakeKernel."""

    root: Path

    def ensure_root(self) -> None:
        """Mount bpffs if needed and create the root directory (owner-only)."""

    def install(
        self,
        pin_dir: str,
        spec: ProgramSpec,
        point: AttachPoint,
        placement: Placement | None = None,
    ) -> Installed:
        """Load, pin (prog, maps) and attach. On any failure nothing is left behind."""
        ...

    def replace(
        self,
        pin_dir: str,
        spec: ProgramSpec,
        point: AttachPoint,
        placement: Placement | None = None,
    ) -> Installed:
        """Make-before-break: load and verify the new program, then swap it in; the old one keeps
        running if anything fails. Pins end up at the same paths as after ``install``."""
        ...

    def verify(self, spec: ProgramSpec) -> None:
        """Load the program and release it at once: raises VerifierError if the kernel would
        refuse it. Pins nothing; leaves nothing behind."""

    def uninstall(self, pin_dir: str) -> None:
        """Detach (only what is ours), unpin everything under pin_dir. Idempotent."""

    def observe(self) -> list[Installed]:
        """Every managed pin directory under the root, with the kernel's view of it."""
        ...

    def xdp_program_on(self, ifname: str, netns: str | None = None) -> int | None:
        """Id of the XDP program attached to the interface (ours or not), None if none."""
        ...

    def interface_exists(self, ifname: str, netns: str | None = None) -> bool: ...

    def tracepoint_exists(self, group: str, name: str) -> bool: ...

    def tracepoints(self) -> list[str]:
        """All ``group/name`` tracepoints this kernel offers (for near-match suggestions)."""
        ...
