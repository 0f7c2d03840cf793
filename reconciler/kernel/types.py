"""The kernel layer's public vocabulary: what to load, where to attach, what is installed.

Everything above ``reconciler.kernel`` speaks only these types, so the real kernel and the fake
kernel are interchangeable (and must pass the same contract tests).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class ProgType(enum.Enum):
    XDP = "xdp"
    TCX = "tcx"
    TC = "tc"  # behind the TC dispatcher (cls_bpf), loaded as freplace (EXT) components
    TRACEPOINT = "tracepoint"
    UPROBE = "uprobe"
    KPROBE = "kprobe"
    FENTRY = "fentry"
    FEXIT = "fexit"
    CGROUP_SKB = "cgroup_skb"
    CGROUP_SOCK_ADDR = "cgroup_sock_addr"


@dataclass(frozen=True)
class ProgramSpec:
    """One program of an ELF object, loaded with the type its manifest kind dictates."""

    object_path: str
    function: str
    prog_type: ProgType
    # Initial values of global variables (in .rodata, .data or .bss), by variable name; the
    # kernel layer writes them into the object's data sections before load.
    global_data: tuple[tuple[str, bytes], ...] = ()
    # Shared maps: a pin directory (relative to the root) whose pinned maps this program reuses;
    # maps of the object not pinned there yet are created and pinned there. Internal maps
    # (.rodata/.data/.bss/.kconfig) are never shared. None: all maps private to the attachment.
    maps_dir: str | None = None


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
    target: str  # absolute path of the binary or library (inside container_pid's mount ns)
    func_name: str | None = None
    offset: int = 0
    retprobe: bool = False
    pid: int | None = None
    # Attach inside the mount namespace of this running process (a container): the target is
    # resolved there (through /proc/<pid>/root), not in ours.
    container_pid: int | None = None


@dataclass(frozen=True)
class KprobePoint:
    func_name: str
    offset: int = 0
    retprobe: bool = False


@dataclass(frozen=True)
class FentryPoint:
    func_name: str  # kernel function, resolved through vmlinux BTF


@dataclass(frozen=True)
class FexitPoint:
    func_name: str


@dataclass(frozen=True)
class CgroupPoint:
    """A cgroup v2 directory's hook for packets its processes send or receive (cgroup links
    are multi-program: other programs on the same cgroup and direction keep running)."""

    path: str  # absolute path of the cgroup directory
    direction: str  # ingress | egress


@dataclass(frozen=True)
class CgroupSockAddrPoint:
    """A cgroup v2 directory's hook for one socket call of its processes (``connect4``,
    ``sendmsg6``, ...): the program sees (and may rewrite or refuse) the address."""

    path: str  # absolute path of the cgroup directory
    hook: str  # connect4 | connect6 | sendmsg4 | ... (cgroup.attach.SOCK_ADDR_HOOKS)


@dataclass(frozen=True)
class Probe:
    """The answer of a feature probe: truthy when supported, with a reason a plan can print."""

    feature: str
    supported: bool
    reason: str

    def __bool__(self) -> bool:
        return self.supported


@dataclass(frozen=True)
class XdpHook:
    """An interface's XDP hook, shared by several programs through a dispatcher."""

    ifname: str
    netns: str | None = None
    mode: str = "auto"  # auto | native | generic


@dataclass(frozen=True)
class TcHook:
    """An interface's TC hook (clsact, cls_bpf), shared through a TC dispatcher."""

    ifname: str
    direction: str  # ingress | egress
    netns: str | None = None


AttachPoint = (
    XdpPoint
    | TcxPoint
    | TracepointPoint
    | UprobePoint
    | KprobePoint
    | FentryPoint
    | FexitPoint
    | CgroupPoint
    | CgroupSockAddrPoint
    | TcHook  # a single TC program attached directly (kernels without freplace)
)

Hook = XdpHook | TcHook

# Maximum programs one dispatcher runs (libxdp's MAX_DISPATCHER_ACTIONS).
MAX_DISPATCHER_SLOTS = 10


@dataclass(frozen=True)
class DispatchSlot:
    """One of our programs on a multi-program hook."""

    pin_dir: str  # the attachment's pin dir: its program and maps (no link of its own)
    spec: ProgramSpec
    priority: int  # lower runs first; ties by pin_dir
    # Return values after which the next program runs. XDP: aborted, drop, pass, tx, redirect;
    # TC: unspec, ok, reclassify, shot, pipe, stolen, queued, repeat, redirect, trap. Both:
    # dispatcher_return (the program's "I am done, go on" value).
    proceed_on: tuple[str, ...]


@dataclass(frozen=True)
class SlotState:
    """A program a dispatcher runs, as the kernel and the dispatcher's config say."""

    prog_id: int
    name: str
    priority: int
    proceed_on: tuple[str, ...]
    pin_dir: str | None  # ours (relative to the root), or None for a foreign program


@dataclass(frozen=True)
class HookState:
    hook: Hook
    dispatcher_id: int | None  # None: no dispatcher (nothing, or a single directly attached prog)
    slots: tuple[SlotState, ...] = ()  # in run order
    direct_prog_id: int | None = None  # a program attached without a dispatcher


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
    """A failure a user can cause or fix (missing interface, verifier rejection, conflict).

    The message is for people; the cause is kept for code: ``errno`` is the kernel's error code
    (given, or taken from the ``OSError`` this was raised from), None when there is none."""

    def __init__(self, message: str = "", *, errno: int | None = None) -> None:
        super().__init__(message)
        self._errno = errno

    @property
    def errno(self) -> int | None:
        if self._errno is not None:
            return self._errno
        cause = self.__cause__
        return cause.errno if isinstance(cause, OSError | KernelError) else None


class VerifierError(KernelError):
    """The verifier rejected a program: ``log`` is its whole log (the message has the end)."""

    def __init__(self, message: str, log: str, *, errno: int | None = None) -> None:
        super().__init__(message, errno=errno)
        self.log = log


class LoadNotPermitted(KernelError):
    """The kernel refused to load a program or map with EPERM/EACCES and no verifier log: this
    process lacks the privilege (or an LSM or lockdown forbids it). Not a verdict on the program.
    """


class AttachConflict(KernelError):
    """The attach point is held by a program we do not own."""


StepObserver = Callable[[str], None]
"""Told the name of each pause point a kernel operation reaches (``staged``, ``swapped``,
``committing``, ``detached``): the apply's test-only pause points (apply/interrupt.py)."""


class Kernel(Protocol):
    """The typed API the rest of bpfman uses. Implemented by RealKernel and FakeKernel (each
    module says so to mypy, so a method missing from either is a type error)."""

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

    def verify(
        self, spec: ProgramSpec, point: AttachPoint | None = None, dispatched: bool = False
    ) -> None:
        """Load the program and release it at once: raises VerifierError if the kernel would
        refuse it, LoadNotPermitted if this process may not load programs. Pins nothing, mounts
        nothing, leaves nothing behind. fentry/fexit programs are checked against their kernel
        function's prototype, so they need the ``point`` to be verified fully. ``dispatched``:
        an XDP or TC program verified as what a dispatcher runs (an extension of its slot)."""

    def verdict_key(
        self, spec: ProgramSpec, point: AttachPoint | None = None, dispatched: bool = False
    ) -> str:
        """A digest of everything ``verify``'s verdict depends on (the object's bytes, function,
        type, global data, kernel function, dispatcher, shared maps already pinned, the kernel
        build and libbpf): equal keys, equal verdicts."""
        ...

    def shared_map_conflict(self, spec: ProgramSpec, owner: ProgramSpec) -> str | None:
        """Why ``spec``'s maps would not fit those its map owner ``owner`` creates in their
        shared maps directory (maps not pinned there yet), or None. Loads nothing."""
        ...

    def identity(self) -> str:
        """This kernel build and boot (and the libbpf in use): what cached verdicts and probe
        answers are valid for."""
        ...

    def load_permission(self) -> str | None:
        """None when this process may load BPF programs; otherwise why not."""
        ...

    def probe_answers(self) -> dict[str, Probe]:
        """The feature probes answered so far (to keep them across runs)."""
        ...

    def remember_probes(self, answers: dict[str, Probe]) -> None:
        """Take these answers (from an earlier run on this kernel and boot) instead of probing."""

    def missing_kernel_function(self, name: str, need_btf: bool) -> str | None:
        """None when kernel function ``name`` exists (with BTF, for fentry/fexit), as far as can
        be told without loading; otherwise why not (with near names)."""
        ...

    def dispatch(self, hook: Hook, slots: list[DispatchSlot]) -> list[Installed]:
        """Make ``hook`` run exactly ``slots`` (plus any foreign programs already on its
        dispatcher, kept at their priorities) in one atomic swap to a new dispatcher.

        A slot whose pin_dir already holds a program loaded from the same spec keeps it (same
        program id); new or changed ones are loaded first (a verifier rejection changes nothing).
        Our programs no longer listed are unloaded after the swap. An empty list removes all of
        ours (and the dispatcher when nothing foreign remains). Returns one Installed per slot.
        """
        ...

    def hook_state(self, hook: Hook) -> HookState:
        """What runs on ``hook`` now: the dispatcher and its programs (ours and foreign)."""
        ...

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

    def cgroup_problem(self, path: str) -> str | None:
        """None when ``path`` is a directory of a cgroup v2 file system; otherwise why not."""
        ...

    def probe(self, feature: str) -> Probe:
        """Can this kernel do ``feature``? Names: tcx, perf_link, kprobe, uprobe, tracepoint,
        fentry, fexit, freplace, cgroup_link. Cached per process; never attaches anything."""
        ...

    def release(self) -> str:
        """The running kernel's release (uname -r), for messages naming the kernel."""
        ...

    def interfaces(self, netns: str | None = None) -> list[str]:
        """Names of the network interfaces (in ``netns``, a namespace path, if given)."""
        ...

    def map_dirs(self) -> list[str]:
        """Shared maps directories (relative to the root) that hold pins and no program."""
        ...

    def remove_maps(self, maps_dir: str) -> None:
        """Unpin a shared maps directory once no attachment uses it. Idempotent."""

    def staging_leftovers(self) -> list[str]:
        """What a killed apply left under the root (call outside an apply: the caller's lock rules
        one out): staging and dispatcher revisions not (or not yet) committed, as paths relative
        to the root. A kernel that stages nothing (the fake) returns []."""
        ...

    def discard_staging(self) -> list[str]:
        """Finish or undo what ``staging_leftovers`` names; call only with the apply lock held.
        Returns what was done, a sentence each, for the user."""
        ...

    def reporting_steps(self, on_step: StepObserver) -> AbstractContextManager[None]:
        """Within the block, tell ``on_step`` each pause point that ``install``, ``replace``,
        ``uninstall`` and ``dispatch`` reach (test only: the crash tests stop an apply there). A
        kernel without such intermediate points (the fake) never calls it."""
        ...
