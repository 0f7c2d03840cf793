"""FakeKernel: an in-memory kernel with RealKernel's semantics, for testing the layers above.

It passes the same contract tests as RealKernel (tests/kernel/test_contract.py). Knobs a test
can turn: interfaces (``add_interface``/``remove_interface``), tracepoints, foreign XDP
programs (``attach_foreign_xdp``; on a hook's dispatcher ``add_foreign_program``, and
``dispatch_swaps`` counts dispatcher swaps), verifier rejection (any function whose name contains
"reject", or listed in ``reject``), known functions/maps/global variables per object, kernel
functions, feature probes (``features``), container processes and their files (``containers``),
and one-shot failures (``fail_next``).
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.kernel import points, precheck
from reconciler.kernel.fake import dispatch as fakedispatch
from reconciler.kernel.fake import parts as fakeparts
from reconciler.kernel.fake.dispatch import FakeDispatchers, FakeHook, FakeSlot
from reconciler.kernel.fake.parts import SharedMaps
from reconciler.kernel.points import uprobe_path
from reconciler.kernel.probes import FEATURES
from reconciler.kernel.slots import check_hook, hook_key, too_many
from reconciler.kernel.sys import bpf, bpffs, ifaces
from reconciler.kernel.tc.netlink import HANDLE, PREF
from reconciler.kernel.types import (
    MAX_DISPATCHER_SLOTS,
    AttachConflict,
    AttachPoint,
    AttachView,
    CgroupLinkView,
    CgroupPoint,
    CgroupSockAddrPoint,
    DispatcherSlot,
    DispatchSlot,
    FentryPoint,
    FexitPoint,
    Hook,
    HookState,
    Installed,
    Kernel,
    KernelError,
    LoadNotPermitted,
    MapInfo,
    Placement,
    Probe,
    ProgramSpec,
    StepObserver,
    TcDirectView,
    TcDispatcherView,
    TcHook,
    TcxLinkView,
    TcxPoint,
    TracepointLinkView,
    TracepointPoint,
    UprobeLinkView,
    UprobePoint,
    VerifierError,
    XdpDispatcherView,
    XdpHook,
    XdpPoint,
    XdpView,
)

# cgroup v2 directories the fake host has, unless told otherwise (add_cgroup, remove_cgroup).
DEFAULT_CGROUPS = ("/sys/fs/cgroup", "/sys/fs/cgroup/app")
DEFAULT_TRACEPOINTS = (
    "syscalls/sys_enter_getpid",
    "syscalls/sys_enter_getppid",
    "syscalls/sys_enter_openat",
    "syscalls/sys_exit_openat",
    "sched/sched_process_exec",
    "sched/sched_process_exit",
    "sched/sched_switch",
    "net/netif_receive_skb",
)


@dataclass
class _Iface:
    ifindex: int
    native_xdp: bool = True
    xdp_prog: int | None = None
    xdp_mode: str | None = None


@dataclass
class _Entry:
    spec: ProgramSpec
    point: AttachPoint
    prog_id: int
    maps: tuple[MapInfo, ...]
    link_id: int | None = None
    hook: Hook | None = None  # set: the program runs on this hook's dispatcher


@dataclass
class _Hook:
    links: list[int] = field(default_factory=list)  # run order
    revision: int = 1


class FakeKernel:
    def __init__(self, root: Path | str = "/sys/fs/bpf/bpfman", check_files: bool = True) -> None:
        self.root = Path(root)
        self.check_files = check_files  # object files and uprobe targets must exist
        self.reject: set[str] = set()  # functions the "verifier" rejects (besides *reject*)
        self.functions: dict[str, set[str]] = {}  # object path -> its functions (unset: any)
        self.object_maps: dict[str, list[tuple[str, str]]] = {}  # object -> [(name, type)]
        self.globals: dict[str, dict[str, int]] = {}  # object -> {variable: size} (unset: any)
        self.kernel_functions: set[str] = set(fakeparts.DEFAULT_KERNEL_FUNCTIONS)
        self.features: dict[str, bool] = dict.fromkeys(FEATURES, True)
        self.containers: dict[int, set[str]] = {}  # pid -> files in its mount namespace
        self.release_name = "6.18.0-fake"
        self.tracepoint_set: set[str] = set(DEFAULT_TRACEPOINTS)
        self._cgroups: dict[str, int] = {}  # cgroup v2 directory -> its id
        self.fail_next: dict[str, Exception] = {}  # "load" | "attach" | "swap" -> raise once
        # Why this process may not load programs (None: it may), as RealKernel.load_permission.
        self.permission: str | None = None
        # Every verify that reached the "verifier": (spec, point, dispatched), in order.
        self.verified: list[tuple[ProgramSpec, AttachPoint | None, bool]] = []
        self.probed: set[str] = set()  # features probed (probe_answers reports them)
        self.remembered: dict[str, Probe] = {}  # answers handed to remember_probes
        self.root_ready = False
        self._ifaces: dict[tuple[str | None, str], _Iface] = {}
        self._entries: dict[str, _Entry] = {}
        self._hooks: dict[tuple[str | None, str, str], _Hook] = {}
        self._link_prog: dict[int, int] = {}  # link id -> prog id
        # (netns, ifname, direction) -> prog id of a TC program attached directly (cls_bpf)
        self._tc_direct: dict[tuple[str | None, str, str], int] = {}
        self._names: dict[int, str] = {}  # prog id -> name (ours and foreign)
        self._shared = SharedMaps(self.root)
        self._next = {"prog": 100, "map": 100, "link": 100, "ifindex": 1}
        self._dispatch = FakeDispatchers(lambda: self._new("prog"), self._names)
        self._facts = _Facts(self)
        self.add_interface("lo")
        for path in DEFAULT_CGROUPS:
            self.add_cgroup(path)

    # --- knobs ----------------------------------------------------------------------------------

    def _new(self, kind: str) -> int:
        self._next[kind] += 1
        return self._next[kind]

    def add_interface(self, ifname: str, netns: str | None = None, native_xdp: bool = True) -> int:
        iface = _Iface(self._new("ifindex"), native_xdp)
        self._ifaces[(netns, ifname)] = iface
        return iface.ifindex

    def remove_interface(self, ifname: str, netns: str | None = None) -> None:
        """Like deleting a device: its XDP program and tcx links go with it."""
        self._ifaces.pop((netns, ifname), None)
        for key in [k for k in self._hooks if k[:2] == (netns, ifname)]:
            del self._hooks[key]
        self._dispatch.remove_interface(netns, ifname)
        self._tc_direct = {k: v for k, v in self._tc_direct.items() if k[:2] != (netns, ifname)}

    def add_tracepoint(self, group: str, name: str) -> None:
        self.tracepoint_set.add(f"{group}/{name}")

    def add_cgroup(self, path: str) -> int:
        """A cgroup v2 directory (like mkdir under the cgroup2 mount); its id."""
        return self._cgroups.setdefault(path, 1000 + len(self._cgroups))

    def remove_cgroup(self, path: str) -> None:
        """Like rmdir of a cgroup: its links stay, defunct (cgroup id 0)."""
        self._cgroups.pop(path, None)

    def attach_foreign_xdp(
        self, ifname: str, netns: str | None = None, name: str = "foreign"
    ) -> int:
        """Attach a program bpfman does not own (as `ip link set dev X xdp obj ...` would)."""
        iface = self._iface(ifname, netns)
        if iface.xdp_prog is not None:
            raise KernelError(f"{ifname} already has an XDP program")
        prog_id = self._new("prog")
        self._names[prog_id] = name
        iface.xdp_prog, iface.xdp_mode = prog_id, "generic"
        return prog_id

    def detach_xdp(self, ifname: str, netns: str | None = None) -> None:
        """Remove whatever XDP program is on the interface (like `ip link set dev X xdp off`)."""
        iface = self._iface(ifname, netns)
        iface.xdp_prog = iface.xdp_mode = None
        self._dispatch.hooks.pop(hook_key(XdpHook(ifname, netns)), None)

    @property
    def dispatch_swaps(self) -> int:
        """How many dispatcher swaps ``dispatch`` made (all hooks)."""
        return self._dispatch.swaps

    def hook_swaps(self, hook: Hook) -> int:
        return self._dispatch.swaps_by_hook.get(hook_key(hook), 0)

    def add_foreign_program(
        self,
        hook: Hook,
        name: str = "foreign",
        priority: int = 50,
        proceed_on: tuple[str, ...] = ("pass",),
    ) -> int:
        """Add a program bpfman does not own to the hook's dispatcher, the way `xdp-loader load`
        extends libxdp's dispatcher (a new dispatcher revision). Returns its program id."""
        if isinstance(hook, XdpHook):
            iface = self._iface(hook.ifname, hook.netns)
            current = self._dispatch.hooks.get(hook_key(hook))
            if iface.xdp_prog is not None and (
                current is None or current.dispatcher_id != iface.xdp_prog
            ):
                raise KernelError(f"{hook.ifname} runs an XDP program that is not a dispatcher")
            prog_id = self._dispatch.add_foreign(hook, name, priority, proceed_on)
            new = self._dispatch.hooks[hook_key(hook)]
            iface.xdp_prog, iface.xdp_mode = new.dispatcher_id, new.mode
            return prog_id
        self._iface(hook.ifname, hook.netns)
        return self._dispatch.add_foreign(hook, name, priority, proceed_on)

    def tcx_order(self, ifname: str, direction: str, netns: str | None = None) -> list[int]:
        """Link ids on a tcx hook, in run order (what BPF_PROG_QUERY reports)."""
        return list(self._hooks.get((netns, ifname, direction), _Hook()).links)

    # --- helpers --------------------------------------------------------------------------------

    def _iface(self, ifname: str, netns: str | None) -> _Iface:
        iface = self._ifaces.get((netns, ifname))
        if iface is None:
            raise ifaces.no_interface(ifname, netns)
        return iface

    def _inject(self, op: str) -> None:
        err = self.fail_next.pop(op, None)
        if err is not None:
            raise err

    def _check(self, pin_dir: str, spec: ProgramSpec, point: AttachPoint) -> None:
        bpffs.check_pin_dir(pin_dir)
        precheck.check(spec, point, self._facts)
        if spec.maps_dir is not None:
            self._shared.directory(spec.maps_dir, list(self._entries))

    def _load(
        self, pin_dir: str, spec: ProgramSpec, keep: bool = True
    ) -> tuple[int, tuple[MapInfo, ...], list[str]]:
        """(prog id, its maps, the shared maps this load created)."""
        known = self.functions.get(spec.object_path)
        if known is not None and spec.function not in known:
            raise KernelError(f"function {spec.function!r} not found in {spec.object_path}")
        fakeparts.check_global_data(spec, self.globals.get(spec.object_path))
        declared = self.object_maps.get(spec.object_path, [])
        if spec.maps_dir is not None:
            self._shared.check(spec.maps_dir, declared, spec.object_path)
        if "reject" in spec.function or spec.function in self.reject:
            log = "0: R1=ctx() R10=fp0\ninvalid access to packet, off=0 size=4\n"
            raise VerifierError(
                f"the verifier rejected {spec.function} from {spec.object_path} (Permission "
                f"denied); fix the program and rebuild it. Last lines of the verifier log:\n{log}",
                log,
                errno=errno.EACCES,
            )
        self._inject("load")
        if not keep:
            return 0, (), []
        prog_id = self._new("prog")
        self._names[prog_id] = spec.function[:15]  # BPF_OBJ_NAME_LEN - 1
        maps, created = [], []
        own = bpffs.path_of(self.root, pin_dir) / bpffs.MAPS
        for name, mtype in declared:
            if spec.maps_dir is None or fakeparts.is_internal(name):
                maps.append(MapInfo(name, self._new("map"), mtype, str(own / name)))
                continue
            if name not in self._shared.dirs.get(spec.maps_dir, {}):
                created.append(name)
            map_id, pin = self._shared.use(spec.maps_dir, name, mtype, self._new("map"))
            maps.append(MapInfo(name, map_id, mtype, pin))
        return prog_id, tuple(sorted(maps, key=lambda m: m.name)), created

    def _undo(self, spec: ProgramSpec, created: list[str]) -> None:
        if spec.maps_dir is not None:
            self._shared.forget_unused(spec.maps_dir, created)

    def _xdp_attach(self, point: XdpPoint, prog_id: int) -> None:
        iface = self._iface(point.ifname, point.netns)
        if iface.xdp_prog is not None:
            owner = next((d for d, e in self._entries.items() if e.prog_id == iface.xdp_prog), None)
            held = f"bpfman's {owner}" if owner else "a program bpfman does not manage"
            raise AttachConflict(
                f"interface {point.ifname} already has XDP program id {iface.xdp_prog} "
                f"({self._names.get(iface.xdp_prog, '?')}) attached, {held}; detach it first"
            )
        mode = "native" if point.mode == "auto" and iface.native_xdp else point.mode
        if mode == "auto":
            mode = "generic"
        if mode == "native" and not iface.native_xdp:
            raise KernelError(f"cannot attach XDP to {point.ifname} in native mode")
        iface.xdp_prog, iface.xdp_mode = prog_id, mode

    def _xdp_detach(self, prog_id: int) -> None:
        for iface in self._ifaces.values():
            if iface.xdp_prog == prog_id:
                iface.xdp_prog = iface.xdp_mode = None

    def _hook_of(self, point: TcxPoint) -> _Hook:
        return self._hooks.setdefault((point.netns, point.ifname, point.direction), _Hook())

    def _tcx_attach(self, point: TcxPoint, prog_id: int, placement: Placement | None) -> int:
        hook = self._hook_of(point)
        index = len(hook.links)
        if placement is not None and (placement.before or placement.after):
            if placement.before and placement.after:
                raise KernelError("a placement names a neighbour before or after, not both")
            rel = placement.before or placement.after
            neighbour = self._entries.get(rel or "")
            if neighbour is None or neighbour.link_id is None:
                raise KernelError(
                    f"cannot place the tcx program on {point.ifname}: {rel} is not installed"
                )
            if neighbour.link_id not in hook.links:
                raise KernelError(
                    f"cannot attach to tcx {point.direction} of {point.ifname}: the placement "
                    "neighbour is not attached to this hook"
                )
            index = hook.links.index(neighbour.link_id) + (0 if placement.before else 1)
        link_id = self._new("link")
        hook.links.insert(index, link_id)
        hook.revision += 1
        self._link_prog[link_id] = prog_id
        return link_id

    def _unlink(self, link_id: int | None) -> None:
        if link_id is None:
            return
        self._link_prog.pop(link_id, None)
        for hook in self._hooks.values():
            if link_id in hook.links:
                hook.links.remove(link_id)
                hook.revision += 1

    def _attach(self, point: AttachPoint, prog_id: int, placement: Placement | None) -> int | None:
        self._inject("attach")
        if isinstance(point, XdpPoint):
            self._xdp_attach(point, prog_id)
            return None
        if isinstance(point, TcxPoint):
            return self._tcx_attach(point, prog_id, placement)
        if isinstance(point, TcHook):
            key = (point.netns, point.ifname, point.direction)
            if key in self._tc_direct:
                raise AttachConflict(
                    f"the {point.direction} TC hook of {point.ifname} already runs program id "
                    f"{self._tc_direct[key]}; only one program per hook without a dispatcher"
                )
            self._tc_direct[key] = prog_id  # a cls_bpf filter, no link
            return None
        link_id = self._new("link")  # perf-event link
        self._link_prog[link_id] = prog_id
        return link_id

    # --- the Kernel protocol --------------------------------------------------------------------

    def ensure_root(self) -> None:
        self.root_ready = True

    def install(
        self,
        pin_dir: str,
        spec: ProgramSpec,
        point: AttachPoint,
        placement: Placement | None = None,
    ) -> Installed:
        if pin_dir in self._entries:
            raise KernelError(f"{pin_dir} is already installed; replace it, or uninstall it first")
        self._check(pin_dir, spec, point)
        self.ensure_root()
        prog_id, maps, created = self._load(pin_dir, spec)
        try:
            link_id = self._attach(point, prog_id, placement)
        except BaseException:
            self._undo(spec, created)
            raise
        self._entries[pin_dir] = _Entry(spec, point, prog_id, maps, link_id)
        return self._installed(pin_dir)

    def replace(
        self,
        pin_dir: str,
        spec: ProgramSpec,
        point: AttachPoint,
        placement: Placement | None = None,
    ) -> Installed:
        old = self._entries.get(pin_dir)
        if old is None:
            return self.install(pin_dir, spec, point, placement)
        self._check(pin_dir, spec, point)
        prog_id, maps, created = self._load(pin_dir, spec)  # a rejection changes nothing
        try:
            link_id = self._swap(old, point, prog_id, placement)
        except BaseException:
            self._undo(spec, created)
            raise
        self._entries[pin_dir] = _Entry(spec, point, prog_id, maps, link_id)
        return self._installed(pin_dir)

    def _swap(
        self, old: _Entry, point: AttachPoint, prog_id: int, placement: Placement | None
    ) -> int | None:
        self._inject("swap")
        link_id: int | None
        if isinstance(point, XdpPoint):
            iface = self._iface(point.ifname, point.netns)
            if iface.xdp_prog != old.prog_id:  # moved or detached: attach, then remove the old
                self._xdp_attach(point, prog_id)
                self._xdp_detach(old.prog_id)
            elif point.mode in ("auto", iface.xdp_mode):
                iface.xdp_prog = prog_id  # atomic swap in place (XDP_FLAGS_REPLACE)
            else:  # mode change: break, then make; restore the old one if that fails
                mode, iface.xdp_prog, iface.xdp_mode = iface.xdp_mode, None, None
                try:
                    self._xdp_attach(point, prog_id)
                except KernelError:
                    iface.xdp_prog, iface.xdp_mode = old.prog_id, mode
                    raise
            link_id = None
        elif (
            isinstance(point, TcxPoint)
            and placement in (None, Placement())
            and old.point == point
            and old.link_id in self._hook_of(point).links
        ):
            self._link_prog[old.link_id] = prog_id  # BPF_LINK_UPDATE: same link, same position
            link_id = old.link_id
        else:
            link_id = self._attach(point, prog_id, placement)
            self._unlink(old.link_id)
        return link_id

    def verify(
        self, spec: ProgramSpec, point: AttachPoint | None = None, dispatched: bool = False
    ) -> None:
        precheck.object_file(spec, self._facts)
        precheck.require_feature(spec, self._facts)
        if point is not None:
            precheck.kernel_function(point, self._facts)
        if spec.maps_dir is not None:
            self._shared.directory(spec.maps_dir, list(self._entries))
        if self.permission is not None:
            raise LoadNotPermitted(
                f"cannot load {spec.function}: Operation not permitted", errno=errno.EPERM
            )
        self.verified.append((spec, point, dispatched))
        self._load("", spec, keep=False)

    def verdict_key(
        self, spec: ProgramSpec, point: AttachPoint | None = None, dispatched: bool = False
    ) -> str:
        tracing = isinstance(point, FentryPoint | FexitPoint)
        material = repr((spec, point if tracing else None, dispatched, self.identity()))
        return hashlib.sha256(material.encode()).hexdigest()

    def shared_map_conflict(self, spec: ProgramSpec, owner: ProgramSpec) -> str | None:
        if spec.maps_dir is None:
            return None
        pinned = self._shared.dirs.get(spec.maps_dir, {})
        theirs = dict(self.object_maps.get(owner.object_path, []))
        for name, mtype in self.object_maps.get(spec.object_path, []):
            if fakeparts.is_internal(name) or name in pinned or name not in theirs:
                continue
            if theirs[name] != mtype:
                return (
                    f"its map {name} does not fit the one its map owner creates from "
                    f"{owner.object_path}: that has type {theirs[name]} (wanted {mtype}); "
                    "declare the map alike in both objects"
                )
        return None

    def identity(self) -> str:
        return f"{self.release_name} fake"

    def load_permission(self) -> str | None:
        return self.permission

    def probe_answers(self) -> dict[str, Probe]:
        return {f: self.probe(f) for f in sorted(self.probed)}

    def remember_probes(self, answers: dict[str, Probe]) -> None:
        self.remembered.update(answers)

    def observe_namespaces(self, paths: Iterable[str | None]) -> None:
        pass  # the fake's namespaces are all known to it

    def missing_kernel_function(self, name: str, need_btf: bool) -> str | None:
        if name in self.kernel_functions:
            return None
        if need_btf:
            return "has no BTF on this kernel (not a FUNC in /sys/kernel/btf/vmlinux)"
        return "does not exist on this kernel (not in /proc/kallsyms)"

    def uninstall(self, pin_dir: str) -> None:
        bpffs.check_pin_dir(pin_dir)
        entry = self._entries.pop(pin_dir, None)
        if entry is None:
            return
        if entry.hook is not None:
            # Like unpinning a dispatched program: its dispatcher link keeps it running (now
            # unowned, so shown as foreign) until the hook's next dispatch.
            found = self._dispatch.find(entry.prog_id)
            if found is not None:
                found[1].slots[found[2]].pin_dir = None
            return
        self._xdp_detach(entry.prog_id)
        self._tc_direct = {k: v for k, v in self._tc_direct.items() if v != entry.prog_id}
        self._unlink(entry.link_id)

    def _installed(self, pin_dir: str) -> Installed:
        e = self._entries[pin_dir]
        d = bpffs.path_of(self.root, pin_dir)
        attached = False
        where: AttachView | None = None
        prog_type = bpf.prog_type_name(points.KINDS[e.spec.prog_type].prog_type)
        if e.hook is not None:
            prog_type = "ext"  # freplace: the program runs as a function of the dispatcher
            attached, where = self._dispatched(e.hook, e.prog_id)
        elif isinstance(e.point, TcxPoint):
            attached, where = self._tcx_link(e.point, e.prog_id, e.link_id)
        elif isinstance(e.point, CgroupPoint | CgroupSockAddrPoint):
            cgroup_id = self._cgroups.get(e.point.path, 0)
            attached = bool(cgroup_id) and self._link_prog.get(e.link_id or 0) == e.prog_id
            if isinstance(e.point, CgroupPoint):
                atype = f"cgroup_inet_{e.point.direction}"
            else:
                atype = bpf.ATTACH_TYPE_NAMES[bpf.CGROUP_SOCK_ADDR[e.point.hook]]
            where = CgroupLinkView(cgroup_id, atype)
        else:
            where = self._where(e.point, e.prog_id)
            attached = where is not None
        return Installed(
            pin_dir=pin_dir,
            prog_id=e.prog_id,
            prog_name=self._names[e.prog_id],
            prog_type=prog_type,
            tag=hashlib.sha256(f"{e.spec.object_path}:{e.spec.function}".encode()).hexdigest()[:16],
            jited_size=64 + 8 * len(e.spec.function),
            prog_pin=str(d / bpffs.PROG),
            maps=e.maps,
            link_id=e.link_id,
            link_pin=str(d / bpffs.LINK) if e.link_id is not None else None,
            attached=attached,
            attach=where,
        )

    def _where(self, point: AttachPoint, prog_id: int) -> AttachView | None:
        """RealKernel's view of a program attached at ``point`` without a dispatcher (nor a tcx
        link), or None where it does not run."""
        if isinstance(point, XdpPoint):
            for (ns, name), iface in self._ifaces.items():
                if iface.xdp_prog == prog_id:
                    return XdpView(iface.ifindex, name, iface.xdp_mode, ns)
            return None
        if isinstance(point, TcHook):
            for (ns, name, direction), filter_prog in self._tc_direct.items():
                dev = self._ifaces.get((ns, name))
                if filter_prog == prog_id and dev is not None:
                    return TcDirectView(dev.ifindex, name, direction, PREF, HANDLE, ns)
            return None
        if isinstance(point, TracepointPoint):
            return TracepointLinkView(point.name)
        if isinstance(point, UprobePoint):
            return UprobeLinkView(uprobe_path(point), point.offset, point.retprobe)
        return fakeparts.describe(point)

    def _tcx_link(
        self, point: TcxPoint, prog_id: int, link_id: int | None
    ) -> tuple[bool, TcxLinkView]:
        """A tcx link as RealKernel reads it: ifindex 0 once its device is gone."""
        where = TcxLinkView(0, f"tcx_{point.direction}")
        attached = False
        for (ns, name, _), hook in self._hooks.items():
            if link_id in hook.links and (ns, name) in self._ifaces:
                attached = self._link_prog.get(link_id) == prog_id
                ifindex, position = self._ifaces[(ns, name)].ifindex, hook.links.index(link_id)
                where = TcxLinkView(ifindex, where.attach_type, name, position, ns)
        return attached, where

    def _dispatched(
        self, hook: Hook, prog_id: int
    ) -> tuple[bool, XdpDispatcherView | TcDispatcherView | None]:
        found = self._dispatch.find(prog_id)
        iface = self._ifaces.get((hook.netns, hook.ifname))
        if found is None or iface is None:  # a deleted device takes its dispatchers along
            return False, None
        _, disp, position = found
        s = disp.slots[position]
        slot = DispatcherSlot(disp.dispatcher_id, position, s.priority, s.proceed_on)
        if isinstance(hook, XdpHook):
            return True, XdpDispatcherView(slot, iface.ifindex, hook.ifname, disp.mode, hook.netns)
        return True, TcDispatcherView(hook.ifname, hook.direction, hook.netns, iface.ifindex, slot)

    def observe(self) -> list[Installed]:
        return [self._installed(d) for d in sorted(self._entries)]

    def fingerprint(self, namespaces: Iterable[str | None] = ()) -> str:
        # What observe() shows, and the interfaces with what runs on them: the fake's whole
        # observable state, so the contract's "changes whenever observe could" holds exactly.
        wanted = set(namespaces)
        ifaces = sorted(
            (ns or "", name, repr(i)) for (ns, name), i in self._ifaces.items() if ns in wanted
        )
        direct = sorted((repr(k), v) for k, v in self._tc_direct.items() if k[0] in wanted)
        state = repr((self.observe(), ifaces, direct, sorted(self._link_prog.items())))
        return hashlib.sha256(state.encode()).hexdigest()

    def xdp_program_on(self, ifname: str, netns: str | None = None) -> int | None:
        iface = self._ifaces.get((netns, ifname))
        return iface.xdp_prog if iface is not None else None

    def interface_exists(self, ifname: str, netns: str | None = None) -> bool:
        return (netns, ifname) in self._ifaces

    def tracepoint_exists(self, group: str, name: str) -> bool:
        return f"{group}/{name}" in self.tracepoint_set

    def tracepoints(self) -> list[str]:
        return sorted(self.tracepoint_set)

    def cgroup_problem(self, path: str) -> str | None:
        if not path.startswith("/"):
            return f"cgroup {path} must be an absolute path (of a cgroup v2 directory)"
        if path not in self._cgroups:
            return f"cgroup directory {path} does not exist on this host; create the cgroup first"
        return None

    # --- features, interfaces, shared maps --------------------------------------------------

    def probe(self, feature: str) -> Probe:
        if feature not in FEATURES:
            raise ValueError(f"no probe for feature {feature!r}; known: {', '.join(FEATURES)}")
        self.probed.add(feature)
        if self.features.get(feature, True):
            return Probe(feature, True, f"{feature} is supported (fake kernel)")
        return Probe(feature, False, f"{feature} is turned off in this fake kernel (features)")

    def dispatch(self, hook: Hook, slots: list[DispatchSlot]) -> list[Installed]:
        check_hook(hook, slots)
        iface = self._iface(hook.ifname, hook.netns)
        point: AttachPoint = (
            XdpPoint(hook.ifname, hook.mode, hook.netns) if isinstance(hook, XdpHook) else hook
        )
        current = self._dispatch.hooks.get(hook_key(hook))
        kept = self._dispatch_checks(hook, iface, current, slots, point)
        mode = current.mode if current else None
        if isinstance(hook, XdpHook):
            mode = self._dispatch_mode(hook, iface, mode)
        loaded = self._load_changed(hook, slots, point)
        entries = {s.pin_dir: loaded.get(s.pin_dir) or self._entries[s.pin_dir] for s in slots}
        new = self._revision(kept, slots, entries)
        unchanged = current is not None and current.mode == mode and current.slots == new
        if not unchanged and (current is not None or new):
            disp = self._dispatch.swap(hook, new, mode)
            if isinstance(hook, XdpHook):
                iface.xdp_prog = disp.dispatcher_id if disp else None
                iface.xdp_mode = mode if disp else None
        self._record_hook(hook, entries)
        return [self._installed(s.pin_dir) for s in slots]

    def _dispatch_checks(
        self,
        hook: Hook,
        iface: _Iface,
        current: FakeHook | None,
        slots: list[DispatchSlot],
        point: AttachPoint,
    ) -> list[FakeSlot]:
        """What is refused before anything changes; returns the foreign slots kept."""
        on_iface = iface.xdp_prog if isinstance(hook, XdpHook) else None
        if on_iface is not None and (current is None or current.dispatcher_id != on_iface):
            raise self._hook_conflict(hook, on_iface)
        kept = [s for s in current.slots if s.pin_dir is None] if current else []
        if len(slots) + len(kept) > MAX_DISPATCHER_SLOTS:
            raise too_many(hook, len(slots) + len(kept))
        for slot in slots:
            old = self._entries.get(slot.pin_dir)
            if old is not None and (old.hook is None or hook_key(old.hook) != hook_key(hook)):
                where = "attached directly" if old.hook is None else "on another hook"
                raise KernelError(
                    f"{slot.pin_dir} is already installed ({where}); uninstall it first"
                )
            self._check(slot.pin_dir, slot.spec, point)
        return kept

    def _load_changed(
        self, hook: Hook, slots: list[DispatchSlot], point: AttachPoint
    ) -> dict[str, _Entry]:
        """Load the new and changed programs first: a rejection changes nothing. (A slot whose
        spec did not change keeps its program id.)"""
        loaded: dict[str, _Entry] = {}
        undo: list[tuple[ProgramSpec, list[str]]] = []
        try:
            for slot in slots:
                old = self._entries.get(slot.pin_dir)
                if old is not None and old.spec == slot.spec:
                    continue
                prog_id, maps, created = self._load(slot.pin_dir, slot.spec)
                undo.append((slot.spec, created))
                loaded[slot.pin_dir] = _Entry(slot.spec, point, prog_id, maps, None, hook)
            self._inject("swap")
        except BaseException:
            for spec, created in undo:
                self._undo(spec, created)
            raise
        return loaded

    def _revision(
        self, kept: list[FakeSlot], slots: list[DispatchSlot], entries: dict[str, _Entry]
    ) -> list[FakeSlot]:
        """The new dispatcher's slots, in run order (components.Component's order)."""
        new = kept + [
            FakeSlot(
                entries[s.pin_dir].prog_id,
                self._names[entries[s.pin_dir].prog_id],
                s.priority,
                tuple(s.proceed_on),
                s.pin_dir,
            )
            for s in slots
        ]
        new.sort(key=lambda s: s.order)
        return new

    def _record_hook(self, hook: Hook, entries: dict[str, _Entry]) -> None:
        """The hook's entries are exactly ``entries`` now."""
        key = hook_key(hook)
        for pin_dir in [d for d, e in self._entries.items() if e.hook and hook_key(e.hook) == key]:
            if pin_dir not in entries:
                del self._entries[pin_dir]
        for pin_dir, entry in entries.items():
            self._entries[pin_dir] = entry

    def _hook_conflict(self, hook: Hook, prog_id: int) -> AttachConflict:
        owner = next((d for d, e in self._entries.items() if e.prog_id == prog_id), None)
        if owner is not None:
            return AttachConflict(
                f"interface {hook.ifname} runs bpfman's {owner} attached directly; "
                "uninstall it before dispatching several programs there"
            )
        return fakedispatch.conflict(hook, prog_id, self._names.get(prog_id, "?"))

    def _dispatch_mode(self, hook: XdpHook, iface: _Iface, current: str | None) -> str:
        if hook.mode == "native" and not iface.native_xdp:
            raise KernelError(f"cannot attach XDP to {hook.ifname} in native mode")
        if hook.mode != "auto":
            return hook.mode
        return current or ("native" if iface.native_xdp else "generic")

    def hook_state(self, hook: Hook) -> HookState:
        iface = self._iface(hook.ifname, hook.netns)
        state = self._dispatch.state(hook)
        if isinstance(hook, XdpHook) and iface.xdp_prog is not None and state.dispatcher_id is None:
            return HookState(hook, None, (), direct_prog_id=iface.xdp_prog)
        return state

    def release(self) -> str:
        return self.release_name

    def interfaces(self, netns: str | None = None) -> list[str]:
        return sorted(name for (ns, name) in self._ifaces if ns == netns)

    def map_dirs(self) -> list[str]:
        return self._shared.map_dirs()

    def remove_maps(self, maps_dir: str) -> None:
        self._shared.remove(maps_dir, list(self._entries))

    def staging_leftovers(self) -> list[str]:
        return []  # every operation is atomic here: nothing is ever staged

    def discard_staging(self) -> list[str]:
        return []

    @contextmanager
    def reporting_steps(self, on_step: StepObserver) -> Iterator[None]:
        yield  # no operation here has intermediate points


class _Facts:
    """What the shared prechecks ask (precheck.Facts), answered from the fake's knobs."""

    def __init__(self, kernel: FakeKernel) -> None:
        self.k = kernel

    def file_exists(self, path: str, pid: int | None = None) -> bool:
        if pid is not None:
            return path in self.k.containers.get(pid, set())
        return not self.k.check_files or os.path.isfile(path)

    def process_exists(self, pid: int) -> bool:
        return pid in self.k.containers

    def interface_exists(self, ifname: str, netns: str | None) -> bool:
        return self.k.interface_exists(ifname, netns)

    def tracepoint_exists(self, group: str, name: str) -> bool:
        return self.k.tracepoint_exists(group, name)

    def cgroup_problem(self, path: str) -> str | None:
        return self.k.cgroup_problem(path)

    def kernel_function_exists(self, name: str) -> bool | None:
        return name in self.k.kernel_functions

    def kernel_function_has_btf(self, name: str) -> bool | None:
        return name in self.k.kernel_functions

    def probe(self, feature: str) -> Probe:
        # Only a refusal counts as probed (the fake records what a plan would have asked).
        if self.k.features.get(feature, True):
            return Probe(feature, True, f"{feature} is supported (fake kernel)")
        return self.k.probe(feature)

    def release(self) -> str:
        return self.k.release_name


_KERNEL: type[Kernel] = FakeKernel  # mypy: FakeKernel implements the whole protocol
