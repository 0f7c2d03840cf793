"""RealKernel: the ``Kernel`` protocol over libbpf, bpf(2), bpffs and netlink.

Everything an attachment holds is pinned (see pins.py for the layout), so it outlives this
process; nothing about it is stored outside bpffs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from reconciler.kernel import dryrun, maps, observe, points, precheck, probes
from reconciler.kernel.cgroup import attach as cgroup
from reconciler.kernel.fingerprint import fingerprint as kernel_fingerprint
from reconciler.kernel.observe import Scan
from reconciler.kernel.pins import PinStore
from reconciler.kernel.sys import bpf, bpffs, ifaces, netlink, netns, tracefs
from reconciler.kernel.sys.bpffs import LINK, MAPS, PROG, STAGING
from reconciler.kernel.sys.bpfobject import LibbpfObject
from reconciler.kernel.tc import direct as tcdirect
from reconciler.kernel.tc import dispatcher as tcdispatch
from reconciler.kernel.tc import hooks as tchooks
from reconciler.kernel.tc import tcx
from reconciler.kernel.tracing import attach as tracing
from reconciler.kernel.tracing import ksyms
from reconciler.kernel.types import (
    AttachPoint,
    AttachView,
    CgroupPoint,
    CgroupSockAddrPoint,
    DispatchSlot,
    FentryPoint,
    FexitPoint,
    Hook,
    HookState,
    Installed,
    Kernel,
    KernelError,
    KprobePoint,
    MapInfo,
    Placement,
    Probe,
    ProgramSpec,
    StepObserver,
    TcHook,
    TcxPoint,
    TracepointPoint,
    UprobePoint,
    XdpHook,
    XdpPoint,
    XdpView,
)
from reconciler.kernel.xdp import attach as xdpattach
from reconciler.kernel.xdp import dispatcher as xdpdispatch
from reconciler.kernel.xdp import hooks as xdphooks

DEFAULT_ROOT = Path("/sys/fs/bpf/bpfman")


class RealKernel:
    def __init__(self, root: Path | str = DEFAULT_ROOT) -> None:
        self.root = Path(root)
        self.pins = PinStore(self.root)
        # tracefs ids of the tracepoints attached to by this kernel object (one transaction):
        # many programs on one tracepoint read its id once, and need not check it exists.
        self._tracepoint_ids: dict[tuple[str, str], int] = {}
        self._facts = precheck.HostFacts(self._tracepoint_ids)

    @property
    def checkpoint(self) -> Callable[[str], None]:
        """Called with "staged" once a new program is loaded and pinned in staging, before it is
        attached or swapped in (and at the other points a kill leaves work for the next apply):
        the apply's test-only pause point (apply/interrupt.py)."""
        return self.pins.checkpoint

    @checkpoint.setter
    def checkpoint(self, at: Callable[[str], None]) -> None:
        self.pins.checkpoint = at

    # --- paths ----------------------------------------------------------------------------------

    def ensure_root(self) -> None:
        self.pins.ensure_root()

    # --- install / replace ----------------------------------------------------------------------

    def install(
        self,
        pin_dir: str,
        spec: ProgramSpec,
        point: AttachPoint,
        placement: Placement | None = None,
    ) -> Installed:
        d = self.pins.dir_of(pin_dir)
        if os.path.exists(f"{d}/{PROG}"):
            raise KernelError(f"{pin_dir} is already installed; replace it, or uninstall it first")
        self._precheck(spec, point)
        self.ensure_root()
        stage = f"{d}/{STAGING}"
        loaded = self._load(d, spec, point)
        try:
            created = self._stage(d)
            with loaded as (obj, prog_fd):
                self.checkpoint("staged")
                link_fd, placed = self._attach(stage, obj, prog_fd, point, placement)
                # What was just made, from the fds in hand: the commit below only renames pins.
                found = self._describe(pin_dir, loaded, prog_fd, link_fd, placed)
        except BaseException:
            self.pins.discard(stage)
            loaded.undo()
            bpffs.prune_empty_parents(d, self.root)
            raise
        # Attached from %next: a kill from here on is completed by the next apply
        # (discard_staging rolls forward what already runs).
        self.checkpoint("swapped")
        staged = {PROG, MAPS} | ({LINK} if found.link_pin is not None else set())
        # A pin dir this install made holds nothing but its stage (we hold the apply lock).
        self.pins.commit(d, False, staged, {STAGING} if d in created else None)
        return found

    def _stage(self, d: str) -> list[str]:
        """Make ``d``'s empty staging dir (and ``d``), removing what an interrupted run left
        there; returns the directories made."""
        stage = f"{d}/{STAGING}"
        created = bpffs.makedirs(self.root, f"{stage}/{MAPS}", mode=0o700)
        if stage not in created:  # leftovers of an interrupted run
            self.pins.discard(stage)
            created += bpffs.makedirs(self.root, f"{stage}/{MAPS}", mode=0o700)
        return created

    def _describe(
        self,
        pin_dir: str,
        loaded: _Loaded,
        prog_fd: int,
        link_fd: int | None,
        placed: AttachView | None,
    ) -> Installed:
        """The Installed of a program just attached (before its commit, which moves its pins
        to where this says they are); ``placed``: where an attach without a link put it.
        Closes ``link_fd``."""
        try:
            link = None
            if link_fd is not None:
                # A tracepoint's link is the perf-event link tracing.attach made.
                known = (
                    bpf.LINK_TYPE_PERF_EVENT if isinstance(loaded.point, TracepointPoint) else None
                )
                link = (f"{loaded.d}/{LINK}", bpf.link_info(link_fd, known))
            prog = bpf.prog_info(prog_fd)
        finally:
            if link_fd is not None:
                os.close(link_fd)
        scan = Scan(self.root, {prog.id: placed} if placed is not None else None)
        return scan.describe(pin_dir, prog, link, loaded.maps(f"{loaded.d}/{MAPS}"))

    def replace(
        self,
        pin_dir: str,
        spec: ProgramSpec,
        point: AttachPoint,
        placement: Placement | None = None,
    ) -> Installed:
        """Make-before-break. With nothing installed at ``pin_dir`` this is ``install``."""
        d = self.pins.dir_of(pin_dir)
        if not os.path.exists(f"{d}/{PROG}"):
            return self.install(pin_dir, spec, point, placement)
        self._precheck(spec, point)
        stage = f"{d}/{STAGING}"
        loaded = self._load(d, spec, point)
        try:
            self._stage(d)
            # The verifier runs here; if it rejects the new program the old one is untouched.
            with loaded as (obj, prog_fd):
                self.checkpoint("staged")
                keep_link, placed = self._swap(d, obj, prog_fd, point, placement)
                new_id = bpf.prog_info(prog_fd).id
        except BaseException:
            self.pins.discard(stage)
            loaded.undo()
            raise
        # The new program runs from %next, the old one no longer does (or, for a perf-event
        # link, both do until the commit): a kill here is completed by the next apply.
        self.checkpoint("swapped")
        self.pins.commit(d, keep_link)
        return observe.installed(self.root, pin_dir, {new_id: placed} if placed else None)

    def _precheck(self, spec: ProgramSpec, point: AttachPoint) -> None:
        """Fail early, with a clear message, before loading anything."""
        precheck.check(spec, point, self._facts)
        if spec.maps_dir is not None:
            maps.directory(self.root, spec.maps_dir)

    def _load(self, d: str, spec: ProgramSpec, point: AttachPoint) -> _Loaded:
        shared = maps.directory(self.root, spec.maps_dir) if spec.maps_dir is not None else None
        return _Loaded(d, spec, point, shared, self.root)

    def _attach(
        self,
        stage: str,
        obj: LibbpfObject,
        prog_fd: int,
        point: AttachPoint,
        placement: Placement | None,
    ) -> tuple[int | None, AttachView | None]:
        """Attach the staged program at ``point``, pinning its link (if any) in ``stage``;
        returns the link's fd (the caller closes it; None for an attachment without a link)
        and, for one without, where the attach put it (None: where observe cannot see)."""
        link_pin = f"{stage}/{LINK}"
        if isinstance(point, XdpPoint):
            return None, xdpattach.xdp_attach(point, prog_fd, self.pins.owner_of)
        if isinstance(point, CgroupPoint | CgroupSockAddrPoint):
            return _pinned(cgroup.create(prog_fd, point), link_pin), None
        if isinstance(point, TcHook):
            name = bpf.prog_info(prog_fd).name
            return None, tcdirect.attach_prog(point, prog_fd, name, self.pins.owner_of)
        if isinstance(point, TcxPoint):
            flags, relative_fd = self._relative(point, placement)
            try:
                return _pinned(tcx.tcx_create(prog_fd, point, flags, relative_fd), link_pin), None
            finally:
                if relative_fd:
                    os.close(relative_fd)
        assert isinstance(
            point, TracepointPoint | UprobePoint | KprobePoint | FentryPoint | FexitPoint
        )
        return tracing.attach(obj, prog_fd, point, link_pin, self._tracepoint_ids), None

    def _relative(self, point: TcxPoint, placement: Placement | None) -> tuple[int, int]:
        """(flags, neighbour link fd) for BPF_LINK_CREATE; (0, 0) appends last."""
        if placement is None or (placement.before is None and placement.after is None):
            return 0, 0
        if placement.before is not None and placement.after is not None:
            raise KernelError("a placement names a neighbour before or after, not both")
        word, rel = ("before", placement.before) if placement.before else ("after", placement.after)
        assert rel is not None
        path = self.pins.path(rel) / LINK
        try:
            fd = bpf.obj_get(str(path))
        except OSError:
            raise KernelError(
                f"cannot place the tcx program on {point.ifname} {word} {rel}: {rel} is not "
                f"installed (no link pinned at {path}); install it first"
            ) from None
        return (bpf.F_BEFORE if word == "before" else bpf.F_AFTER) | bpf.F_LINK, fd

    def _swap(
        self,
        d: str,
        obj: LibbpfObject,
        new_fd: int,
        point: AttachPoint,
        placement: Placement | None,
    ) -> tuple[bool, AttachView | None]:
        """Put the staged program in the old one's place; True if the old link was kept (its
        program swapped atomically), False if the staged link replaces it; and where an
        attachment without a link now runs it (see ``_attach``)."""
        stage = f"{d}/{STAGING}"
        with ExitStack() as stack:
            old_fd = stack.enter_context(bpf.opened(bpf.obj_get(f"{d}/{PROG}")))
            old = bpf.prog_info(old_fd)
            if isinstance(point, XdpPoint):
                return False, self._swap_xdp(point, old_fd, old.id, new_fd)
            if isinstance(point, TcHook):
                name = bpf.prog_info(new_fd).name
                return False, tcdirect.swap(point, old.id, new_fd, name, self.pins.owner_of)
            old_link = f"{d}/{LINK}"
            if isinstance(point, TcxPoint) and os.path.exists(old_link):
                link_fd = stack.enter_context(bpf.opened(bpf.obj_get(old_link)))
                if placement in (None, Placement()) and self._same_hook(link_fd, old.id, point):
                    # Same hook, same position: swap the link's program atomically; the kernel
                    # refuses if the link no longer runs the old program.
                    bpf.link_update(link_fd, new_fd, old_fd)
                    return True, None
            new_link, _ = self._attach(stage, obj, new_fd, point, placement)
            if new_link is not None:
                os.close(new_link)
            # tcx and cgroup links are multi-program: the new link runs next to the old one,
            # which is detached now (make-before-break).
            if isinstance(point, TcxPoint | CgroupPoint | CgroupSockAddrPoint) and os.path.exists(
                old_link
            ):
                with bpf.opened(bpf.obj_get(old_link)) as fd:
                    ifaces.link_detach(fd)
            # A perf-event or tracing link cannot be detached: it goes when _commit replaces
            # its pin (the old and the new program both run for that moment).
            return False, None

    @staticmethod
    def _same_hook(link_fd: int, old_prog_id: int, point: TcxPoint) -> bool:
        info = bpf.link_info(link_fd)
        if info.type != bpf.LINK_TYPE_TCX or info.prog_id != old_prog_id:
            return False
        found = tcx.tcx_find(info, point.netns)
        return (
            found is not None
            and found.ifname == point.ifname
            and info.detail.get("attach_type") == f"tcx_{point.direction}"
            and netns.identity(found.ns) == netns.identity(point.netns)
        )

    def _swap_xdp(self, point: XdpPoint, old_fd: int, old_id: int, new_fd: int) -> XdpView | None:
        """Swap ``new_fd`` in for the old program; returns where it now runs."""
        current = netlink.require(point.ifname, point.netns)
        mode = current.xdp_mode or "generic"
        if current.xdp_prog_id != old_id:
            # The old program is not on this interface (the point moved, or it was detached):
            # attach the new one without clobbering anything, then remove the old one.
            placed = xdpattach.xdp_attach(point, new_fd, self.pins.owner_of)
            xdpattach.xdp_detach(old_fd, old_id, point.netns)
            return placed
        if point.mode in ("auto", mode):
            try:
                # Atomic: the kernel swaps only if the attached program is still the old one.
                netlink.xdp_attach(point.ifname, new_fd, mode, point.netns, replace_fd=old_fd)
            except netlink.NetlinkFailure as e:
                raise KernelError(
                    f"cannot replace the XDP program on {point.ifname}: {e}; someone changed it "
                    "meanwhile, observe again"
                ) from e
            return xdpattach.view(point, current, mode)
        # The kernel cannot swap across modes (native and generic are exclusive): the
        # interface runs without XDP between these two calls.
        netlink.xdp_detach(point.ifname, old_fd, mode, point.netns)
        try:
            return xdpattach.xdp_attach(point, new_fd, self.pins.owner_of)
        except BaseException:
            netlink.xdp_attach(point.ifname, old_fd, mode, point.netns)
            raise

    def verify(
        self, spec: ProgramSpec, point: AttachPoint | None = None, dispatched: bool = False
    ) -> None:
        """Run ``spec`` past the verifier without attaching or pinning anything (see
        ``dryrun.verify``): VerifierError if the kernel refuses it."""
        dryrun.verify(self.root, spec, point, dispatched)

    def verdict_key(
        self, spec: ProgramSpec, point: AttachPoint | None = None, dispatched: bool = False
    ) -> str:
        return dryrun.verdict_key(self.root, spec, point, dispatched)

    def shared_map_conflict(self, spec: ProgramSpec, owner: ProgramSpec) -> str | None:
        return dryrun.shared_map_conflict(self.root, spec, owner)

    def identity(self) -> str:
        return dryrun.identity()

    def load_permission(self) -> str | None:
        return dryrun.load_permission()

    def probe_answers(self) -> dict[str, Probe]:
        return probes.answered()

    def remember_probes(self, answers: dict[str, Probe]) -> None:
        probes.remember(answers)

    def observe_namespaces(self, paths: Iterable[str | None]) -> None:
        netns.also_observe([p for p in paths if p])

    def missing_kernel_function(self, name: str, need_btf: bool) -> str | None:
        return ksyms.missing(name, need_btf)

    # --- uninstall ------------------------------------------------------------------------------

    def uninstall(self, pin_dir: str) -> None:
        self.pins.uninstall(pin_dir)

    # --- what a killed apply leaves ---------------------------------------------------------

    def staging_leftovers(self) -> list[str]:
        """What a killed apply left under the root (outside an apply, which the caller's lock
        rules out): staging (``%next`` in a pin dir, the pre-flight's ``%next-verify-<pid>``),
        and dispatcher revisions that are not the one their hook runs, or not yet committed."""
        return sorted(
            self.pins.stagings() + xdphooks.leftovers(self.root) + tchooks.leftovers(self.root)
        )

    @contextmanager
    def reporting_steps(self, on_step: StepObserver) -> Iterator[None]:
        previous, self.checkpoint = self.checkpoint, on_step
        try:
            yield
        finally:
            self.checkpoint = previous

    def discard_staging(self) -> list[str]:
        """Finish or undo what a killed apply left (see ``staging_leftovers``); call only with
        the apply lock held. Returns what was done, a sentence each, for the user.

        The kernel decides which: a staged program that already runs (the kill came after its
        swap: its link is pinned in ``%next``, or the old link, the interface, our TC filter or
        one of our running dispatchers runs it) is committed — rolled forward, so its hook never
        goes without it; anything else is detached and unpinned (rolled back: the old program
        never stopped running). Dispatcher hooks go first: a swapped-in revision's pins are
        committed, those of revisions that do not run are removed."""
        done, live = xdpdispatch.recover(self.pins)
        more, tc_live = tcdispatch.recover(self.pins)
        done += more
        live |= tc_live
        scan = Scan(self.root)
        for rel in self.pins.stagings():
            stage = self.root / rel
            if stage.name == STAGING and self._runs(stage, live, scan):
                self.pins.commit(stage.parent, keep_link=True)
                done.append(
                    f"Completed {rel}: its program already ran (a kill came after its swap)"
                )
            else:
                self.pins.discard(stage)
                bpffs.prune_empty_parents(stage.parent, self.root)
                done.append(f"Removed {rel}, left by an interrupted apply")
        return done

    def _runs(self, stage: Path, live: set[int], scan: Scan) -> bool:
        """Whether the program staged in ``stage`` is attached (see ``discard_staging``)."""
        try:
            with bpf.opened(bpf.obj_get(str(stage / PROG))) as fd:
                prog = bpf.prog_info(fd)
        except OSError:
            return False  # killed before its program was pinned: nothing of it runs
        if (stage / LINK).exists():
            return True  # a staged link is pinned only once attached
        old_link = stage.parent / LINK
        if old_link.exists():
            try:
                with bpf.opened(bpf.obj_get(str(old_link))) as fd:
                    if bpf.link_info(fd).prog_id == prog.id:
                        return True  # a tcx link updated in place
            except OSError:
                pass
        if prog.type == bpf.PROG_TYPE_XDP:
            return prog.id in scan.xdp
        if prog.type == bpf.PROG_TYPE_SCHED_CLS:
            return tcdirect.find(prog.id) is not None
        return prog.id in live  # a dispatcher component (EXT)

    # --- observe --------------------------------------------------------------------------------

    def observe(self) -> list[Installed]:
        return Scan(self.root).all()

    def fingerprint(self, namespaces: Iterable[str | None] = ()) -> str:
        return kernel_fingerprint(str(self.root), namespaces)

    def xdp_program_on(self, ifname: str, netns: str | None = None) -> int | None:
        found = netlink.interface(ifname, netns)
        return found.xdp_prog_id if found is not None else None

    def interface_exists(self, ifname: str, netns: str | None = None) -> bool:
        try:
            return ifaces.interface_exists(ifname, netns)
        except KernelError:  # the namespace itself does not exist
            return False

    def tracepoint_exists(self, group: str, name: str) -> bool:
        return tracefs.exists(group, name)

    def tracepoints(self) -> list[str]:
        return tracefs.all_tracepoints()

    def cgroup_problem(self, path: str) -> str | None:
        return cgroup.problem(path)

    # --- multi-program hooks ----------------------------------------------------------------

    def dispatch(self, hook: Hook, slots: list[DispatchSlot]) -> list[Installed]:
        if isinstance(hook, XdpHook):
            return xdpdispatch.dispatch(self.pins, hook, slots)
        return tcdispatch.dispatch(self.pins, hook, slots)

    def hook_state(self, hook: Hook) -> HookState:
        if isinstance(hook, XdpHook):
            return xdpdispatch.hook_state(self.pins, hook)
        return tcdispatch.hook_state(self.pins, hook)

    # --- features, interfaces, shared maps --------------------------------------------------

    def probe(self, feature: str) -> Probe:
        return probes.probe(feature)

    def release(self) -> str:
        return os.uname().release

    def interfaces(self, netns: str | None = None) -> list[str]:
        return ifaces.names(netns)

    def map_dirs(self) -> list[str]:
        return maps.map_dirs(self.root)

    def remove_maps(self, maps_dir: str) -> None:
        maps.remove(self.root, maps_dir)


def _prepare(obj: LibbpfObject, spec: ProgramSpec, point: AttachPoint | None) -> None:
    points.prepare(obj, spec, point)


def _pinned(link_fd: int, pin: str) -> int:
    """Pin a new link and return its fd; if pinning fails, closing the only fd releases
    (detaches) the link."""
    try:
        bpf.obj_pin(link_fd, pin)
    except BaseException:
        os.close(link_fd)
        raise
    return link_fd


class _Loaded:
    """Context manager: open the object, load only the spec's function, pin it and its maps in
    the staging dir of ``d`` (which exists); yields (object, program fd) and closes the object
    (pins stay) at the end. ``undo()`` after a failure unpins the shared maps this load
    created."""

    def __init__(
        self, d: str, spec: ProgramSpec, point: AttachPoint, shared: Path | None, root: Path
    ) -> None:
        self.d, self.spec, self.point, self.shared, self.root = d, spec, point, shared, root
        self.obj: LibbpfObject | None = None
        self.sharing: maps.Sharing | None = None

    def __enter__(self) -> tuple[LibbpfObject, int]:
        stage = f"{self.d}/{STAGING}"
        stage_maps = f"{stage}/{MAPS}"  # made by RealKernel._stage
        self.obj = LibbpfObject(self.spec.object_path, pin_root=stage_maps)
        try:
            _prepare(self.obj, self.spec, self.point)
            skip: frozenset[str] = frozenset()
            if self.shared is not None:
                self.sharing = maps.share(self.obj, self.shared)
                skip = self.sharing.names
            fd = self.obj.load()
            self.obj.pin_program(f"{stage}/{PROG}")
            self.obj.pin_maps(stage_maps, skip)
            if self.sharing is not None:
                maps.link_into(self.sharing, Path(stage_maps), Path(self.d, MAPS))
        except BaseException:
            self.obj.close()
            raise
        return self.obj, fd

    def __exit__(self, *exc: object) -> None:
        if self.obj is not None:
            self.obj.close()

    def maps(self, maps_dir: str) -> tuple[MapInfo, ...]:
        """The maps of the loaded object as they are pinned once committed in ``maps_dir``
        (what ``observe.maps_of`` would read there), from the fds libbpf holds."""
        assert self.obj is not None
        shared = {decl.name: str(pin) for decl, pin in self.sharing.maps} if self.sharing else {}
        out = []
        for m in self.obj.maps():
            info = bpf.map_info(m.fd)
            pin = shared.get(m.kernel_name, f"{maps_dir}/{m.name}")
            out.append(MapInfo(name=m.name, id=info.id, type=info.type_name, pin=pin))
        return tuple(sorted(out, key=lambda m: m.name))

    def undo(self) -> None:
        if self.sharing is not None:
            maps.undo(self.sharing, self.root)


_KERNEL: type[Kernel] = RealKernel  # mypy: RealKernel implements the whole protocol
