"""The kernel layer's public vocabulary: what to load, where to attach, what is installed.

Everything above ``reconciler.kernel`` speaks only these types, so the real kernel and the fake
kernel are interchangeable (and must pass the same contract tests).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar, Protocol

from reconciler.values import frozen


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


@frozen
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


@frozen
class XdpPoint:
    ifname: str
    mode: str = "auto"  # auto | native | generic (issue 4 makes it configurable)
    netns: str | None = None  # path of a network namespace, None = ours


@frozen
class TcxPoint:
    ifname: str
    direction: str  # ingress | egress
    netns: str | None = None


@frozen
class TracepointPoint:
    group: str
    name: str


@frozen
class UprobePoint:
    target: str  # absolute path of the binary or library (inside container_pid's mount ns)
    func_name: str | None = None
    offset: int = 0
    retprobe: bool = False
    pid: int | None = None
    # Attach inside the mount namespace of this running process (a container): the target is
    # resolved there (through /proc/<pid>/root), not in ours.
    container_pid: int | None = None


@frozen
class KprobePoint:
    func_name: str
    offset: int = 0
    retprobe: bool = False


@frozen
class FentryPoint:
    func_name: str  # kernel function, resolved through vmlinux BTF


@frozen
class FexitPoint:
    func_name: str


@frozen
class CgroupPoint:
    """A cgroup v2 directory's hook for packets its processes send or receive (cgroup links
    are multi-program: other programs on the same cgroup and direction keep running)."""

    path: str  # absolute path of the cgroup directory
    direction: str  # ingress | egress


@frozen
class CgroupSockAddrPoint:
    """A cgroup v2 directory's hook for one socket call of its processes (``connect4``,
    ``sendmsg6``, ...): the program sees (and may rewrite or refuse) the address."""

    path: str  # absolute path of the cgroup directory
    hook: str  # connect4 | connect6 | sendmsg4 | ... (cgroup.attach.SOCK_ADDR_HOOKS)


@frozen
class Probe:
    """The answer of a feature probe: truthy when supported, with a reason a plan can print."""

    feature: str
    supported: bool
    reason: str

    def __bool__(self) -> bool:
        return self.supported


@frozen
class XdpHook:
    """An interface's XDP hook, shared by several programs through a dispatcher."""

    ifname: str
    netns: str | None = None
    mode: str = "auto"  # auto | native | generic


@frozen
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


@frozen
class DispatchSlot:
    """One of our programs on a multi-program hook."""

    pin_dir: str  # the attachment's pin dir: its program and maps (no link of its own)
    spec: ProgramSpec
    priority: int  # lower runs first; ties by pin_dir
    # Return values after which the next program runs. XDP: aborted, drop, pass, tx, redirect;
    # TC: unspec, ok, reclassify, shot, pipe, stolen, queued, repeat, redirect, trap. Both:
    # dispatcher_return (the program's "I am done, go on" value).
    proceed_on: tuple[str, ...]


@frozen
class SlotState:
    """A program a dispatcher runs, as the kernel and the dispatcher's config say."""

    prog_id: int
    name: str
    priority: int
    proceed_on: tuple[str, ...]
    pin_dir: str | None  # ours (relative to the root), or None for a foreign program


@frozen
class HookState:
    hook: Hook
    dispatcher_id: int | None  # None: no dispatcher (nothing, or a single directly attached prog)
    slots: tuple[SlotState, ...] = ()  # in run order
    direct_prog_id: int | None = None  # a program attached without a dispatcher


@frozen
class Placement:
    """Where a new TCX link goes among our own links on the same hook.

    ``before``/``after`` name the pin directory (relative to the root) of a managed neighbour.
    Both None means "last". The kernel checks the hook's revision so a concurrent change fails
    instead of landing in the wrong order.
    """

    before: str | None = None
    after: str | None = None


@frozen
class MapInfo:
    name: str
    id: int
    type: str
    pin: str  # absolute pin path


# --- where a program runs: the kernel's view of its attach point -------------------------------
#
# One frozen dataclass per attach mechanism. The real kernel builds them from what it reads
# (observe: link info, netlink, our dispatchers' pins), the fake from its own state, and both
# build the same class for the same situation. ``to_json`` is the document `bpfman list/get
# --json` shows as ``attach_point`` and the state file records (these keys, in this order);
# ``view_from_json`` reads it back, for saved plans. A new mechanism is one more dataclass here
# (``to_json``, ``from_json``), added to ``AttachView`` and to ``ATTACH_VIEWS`` before the
# catch-alls, built by observe (``link_view`` for a link) and by the fake for the same
# situation; tests/unit/test_attach_views.py checks that every view is read back and tested.


def _in_netns(doc: dict[str, object], netns: str | None) -> dict[str, object]:
    if netns is not None:
        doc["netns"] = netns
    return doc


@frozen
class DispatcherSlot:
    """A program's place on one of our dispatchers (XDP or TC)."""

    dispatcher_id: int
    position: int  # in run order
    priority: int
    proceed_on: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "dispatcher_id": self.dispatcher_id,
            "position": self.position,
            "priority": self.priority,
            "proceed_on": list(self.proceed_on),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DispatcherSlot:
        return cls(doc["dispatcher_id"], doc["position"], doc["priority"], tuple(doc["proceed_on"]))


@frozen
class XdpView:
    """XDP attached over netlink on its own (no dispatcher)."""

    ifindex: int
    ifname: str
    mode: str | None  # native | generic | offload, as the kernel reports it
    netns: str | None = None  # None: our namespace

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"ifindex": self.ifindex, "ifname": self.ifname}
        return _in_netns(doc | {"mode": self.mode}, self.netns)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> XdpView | None:
        if "mode" not in doc or "dispatcher_id" in doc:
            return None
        return cls(doc["ifindex"], doc["ifname"], doc["mode"], doc.get("netns"))


@frozen
class XdpDispatcherView:
    """An XDP program running as a slot of our XDP dispatcher on an interface."""

    slot: DispatcherSlot
    ifindex: int
    ifname: str
    mode: str | None  # the dispatcher's: native | generic | offload
    netns: str | None = None

    def to_json(self) -> dict[str, object]:
        doc = self.slot.to_json()
        doc |= {"ifindex": self.ifindex, "ifname": self.ifname, "mode": self.mode}
        return _in_netns(doc, self.netns)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> XdpDispatcherView | None:
        if "mode" not in doc or "dispatcher_id" not in doc:
            return None
        slot = DispatcherSlot.from_json(doc)
        return cls(slot, doc["ifindex"], doc["ifname"], doc["mode"], doc.get("netns"))


@frozen
class TcDirectView:
    """A TC program attached directly: our cls_bpf filter (at ``pref``/``handle``) on a clsact
    hook, for kernels without freplace."""

    ifindex: int
    ifname: str
    direction: str  # ingress | egress
    pref: int
    handle: int
    netns: str | None = None

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"ifindex": self.ifindex, "ifname": self.ifname}
        doc |= {"direction": self.direction, "filter": f"pref {self.pref} handle {self.handle:#x}"}
        return _in_netns(doc, self.netns)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TcDirectView | None:
        if "filter" not in doc:
            return None
        _, pref, _, handle = doc["filter"].split()
        return cls(
            doc["ifindex"], doc["ifname"], doc["direction"], int(pref), int(handle, 16),
            doc.get("netns"),
        )  # fmt: skip


@frozen
class TcDispatcherView:
    """A TC program running as a slot of our TC dispatcher on a clsact hook. Right after a
    dispatch the real kernel names only the hook (``ifindex`` and ``slot`` None); observing
    reads where exactly."""

    ifname: str
    direction: str  # ingress | egress
    netns: str | None = None
    ifindex: int | None = None
    slot: DispatcherSlot | None = None

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {}
        if self.slot is not None:
            doc = {"dispatcher": "tc"} | self.slot.to_json()
        if self.ifindex is not None:
            doc["ifindex"] = self.ifindex
        doc = _in_netns(doc | {"ifname": self.ifname, "direction": self.direction}, self.netns)
        if self.slot is None:
            doc["dispatcher"] = "tc"
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TcDispatcherView | None:
        if doc.get("dispatcher") != "tc":
            return None
        slot = DispatcherSlot.from_json(doc) if "dispatcher_id" in doc else None
        return cls(doc["ifname"], doc["direction"], doc.get("netns"), doc.get("ifindex"), slot)


@frozen
class TcxLinkView:
    """A tcx link. The kernel zeroes ``ifindex`` when the device goes away (a defunct link);
    ``ifname`` and ``position`` (on the hook, in run order) are None when the hook was not
    found (its namespace is not one we can see)."""

    ifindex: int
    attach_type: str  # tcx_ingress | tcx_egress
    ifname: str | None = None
    position: int | None = None
    netns: str | None = None

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {"link_type": "tcx", "ifindex": self.ifindex}
        doc["attach_type"] = self.attach_type
        if self.ifname is not None:
            doc["ifname"] = self.ifname
        if self.position is not None:
            doc["position"] = self.position
        return _in_netns(doc, self.netns)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TcxLinkView | None:
        if doc.get("link_type") != "tcx":
            return None
        return cls(
            doc["ifindex"], doc["attach_type"], doc.get("ifname"), doc.get("position"),
            doc.get("netns"),
        )  # fmt: skip


def _perf_event(kind: str) -> dict[str, object]:
    return {"link_type": "perf_event", "perf_event_type": kind}


def _is_perf_event(doc: Mapping[str, Any], *kinds: str) -> bool:
    return doc.get("link_type") == "perf_event" and (
        not kinds or doc.get("perf_event_type") in kinds
    )


@frozen
class TracepointLinkView:
    """A perf-event link on a tracepoint."""

    tracepoint: str  # the event's name, without its group (as the kernel reports it)

    perf_event_type: ClassVar[str] = "tracepoint"

    def to_json(self) -> dict[str, object]:
        return _perf_event(self.perf_event_type) | {"tracepoint": self.tracepoint}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TracepointLinkView | None:
        return cls(doc["tracepoint"]) if _is_perf_event(doc, "tracepoint") else None


@frozen
class UprobeLinkView:
    """A perf-event link on a uprobe or uretprobe."""

    file: str
    offset: int  # in the file
    retprobe: bool

    @property
    def perf_event_type(self) -> str:
        return "uretprobe" if self.retprobe else "uprobe"

    def to_json(self) -> dict[str, object]:
        return _perf_event(self.perf_event_type) | {"file": self.file, "offset": self.offset}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> UprobeLinkView | None:
        if not _is_perf_event(doc, "uprobe", "uretprobe"):
            return None
        return cls(doc["file"], doc["offset"], doc["perf_event_type"] == "uretprobe")


@frozen
class KprobeLinkView:
    """A perf-event link on a kprobe or kretprobe."""

    func: str
    offset: int
    retprobe: bool
    addr: int  # 0 unless kallsyms shows addresses to this process (kptr_restrict)

    @property
    def perf_event_type(self) -> str:
        return "kretprobe" if self.retprobe else "kprobe"

    def to_json(self) -> dict[str, object]:
        return _perf_event(self.perf_event_type) | {
            "func": self.func,
            "offset": self.offset,
            "retprobe": self.retprobe,
            "addr": self.addr,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> KprobeLinkView | None:
        if not _is_perf_event(doc, "kprobe", "kretprobe"):
            return None
        return cls(doc["func"], doc["offset"], doc["retprobe"], doc["addr"])


@frozen
class PerfEventLinkView:
    """A perf-event link the kernel does not describe: Linux before 6.6 says only "unspec"."""

    perf_event_type: str

    def to_json(self) -> dict[str, object]:
        return _perf_event(self.perf_event_type)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> PerfEventLinkView | None:
        return cls(doc["perf_event_type"]) if _is_perf_event(doc) else None


@frozen
class TracingLinkView:
    """A tracing link: fentry or fexit on a kernel function (or freplace on a program)."""

    attach_type: str  # trace_fentry | trace_fexit | ...
    target_obj_id: int  # the BTF object (vmlinux or a module), or the target program
    target_btf_id: int  # the function's BTF type id

    def to_json(self) -> dict[str, object]:
        return {
            "link_type": "tracing",
            "attach_type": self.attach_type,
            "target_obj_id": self.target_obj_id,
            "target_btf_id": self.target_btf_id,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TracingLinkView | None:
        if doc.get("link_type") != "tracing":
            return None
        return cls(doc["attach_type"], doc["target_obj_id"], doc["target_btf_id"])


@frozen
class CgroupLinkView:
    """A cgroup link: a cgroup_skb or cgroup_sock_addr program on a cgroup v2 directory."""

    cgroup_id: int  # the cgroup directory's inode number; 0 once the cgroup is removed
    attach_type: str  # cgroup_inet_ingress | cgroup_inet4_connect | ...

    def to_json(self) -> dict[str, object]:
        return {"link_type": "cgroup", "cgroup_id": self.cgroup_id, "attach_type": self.attach_type}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> CgroupLinkView | None:
        if doc.get("link_type") != "cgroup" or "cgroup_id" not in doc:
            return None
        return cls(doc["cgroup_id"], doc["attach_type"])


@frozen
class OtherLinkView:
    """A link of a type no view above describes (bpfman makes none; a pin of another tool's):
    its type and whatever the kernel's link info said, as read."""

    link_type: str
    detail: tuple[tuple[str, object], ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"link_type": self.link_type, **dict(self.detail)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> OtherLinkView | None:
        if "link_type" not in doc:
            return None
        return cls(doc["link_type"], tuple((k, v) for k, v in doc.items() if k != "link_type"))


AttachView = (
    XdpView
    | XdpDispatcherView
    | TcDirectView
    | TcDispatcherView
    | TcxLinkView
    | TracepointLinkView
    | UprobeLinkView
    | KprobeLinkView
    | PerfEventLinkView
    | TracingLinkView
    | CgroupLinkView
    | OtherLinkView
)

# The views on an interface: each has ``ifindex`` and ``ifname`` (drift compares them).
InterfaceView = XdpView | XdpDispatcherView | TcDirectView | TcDispatcherView | TcxLinkView


class _ViewReader(Protocol):
    def from_json(self, doc: Mapping[str, Any]) -> AttachView | None: ...


# Tried in this order by ``view_from_json``: each says None to a document not of its shape, so
# the catch-alls (any perf-event link, any link) come after the particular ones.
ATTACH_VIEWS: tuple[_ViewReader, ...] = (
    TcDispatcherView,
    XdpDispatcherView,
    XdpView,
    TcDirectView,
    TcxLinkView,
    TracepointLinkView,
    UprobeLinkView,
    KprobeLinkView,
    PerfEventLinkView,
    TracingLinkView,
    CgroupLinkView,
    OtherLinkView,
)


def view_from_json(doc: Mapping[str, Any] | None) -> AttachView | None:
    """The view whose ``to_json`` gave ``doc`` (saved plans keep what the kernel held); None for
    no document or ``{}`` (no attach point)."""
    if not doc:
        return None
    for view in ATTACH_VIEWS:
        found = view.from_json(doc)
        if found is not None:
            return found
    raise ValueError(f"not an attach point: {dict(doc)!r}")


@frozen
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
    attach: AttachView | None = None  # the kernel's view of where it runs (None: not found)

    def attach_json(self) -> dict[str, object]:
        """``attach`` as a document: ``attach_point`` of `bpfman list/get --json` and the
        state file's record ({} when there is none)."""
        return self.attach.to_json() if self.attach is not None else {}


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

    def observe_namespaces(self, paths: Iterable[str | None]) -> None:
        """Look in these network namespaces too when observing and attaching: those no name
        leads to (``/proc/PID/ns/net`` of a container) cannot be found by a scan."""

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

    def fingerprint(self, namespaces: Iterable[str | None] = ()) -> str:
        """A digest that changes whenever ``observe()`` could answer differently, or the
        interfaces (and their XDP and TC attachments) of ``namespaces`` change; much cheaper
        than observing. Counters are not part of it."""
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
