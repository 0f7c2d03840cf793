"""Multi-program XDP through a dispatcher speaking libxdp's protocol (version 2).

``dispatch`` makes an interface run exactly the given programs (plus foreign ones found on its
dispatcher) with one atomic netlink swap to a new dispatcher revision. Component programs are
extension (freplace) programs: a program whose spec did not change is linked into the new
dispatcher as it is, so its id survives reorders and priority changes.

Pins (see docs/dispatchers.md)::

    <root>/<pin_dir>/prog, maps/        our component program, as install pins it
    <root>/<pin_dir>/%spec-<digest>     the same program again: which spec it was loaded from
    <root>/%xdp/<netns inode>-<ifindex>/dispatch-<id>/dispatcher, prog<N>-link
    <bpffs>/xdp/dispatch-<ifindex>-<id>/prog<N>-prog, prog<N>-link     libxdp's layout
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reconciler.kernel import components, maps, observe, precheck
from reconciler.kernel.components import Component
from reconciler.kernel.pins import PinStore, owners
from reconciler.kernel.slots import check_hook, too_many
from reconciler.kernel.sys import bpf, bpffs, btfinfo, ifaces, libbpf, netlink, netns
from reconciler.kernel.sys.bpffs import MAPS, PROG, STAGING
from reconciler.kernel.sys.bpfobject import LibbpfObject
from reconciler.kernel.types import (
    AttachConflict,
    DispatcherSlot,
    DispatchSlot,
    HookState,
    Installed,
    KernelError,
    ProgramSpec,
    SlotState,
    XdpDispatcherView,
    XdpHook,
    XdpPoint,
)
from reconciler.kernel.xdp import attach as xdpattach
from reconciler.kernel.xdp import proto as xdpproto
from reconciler.kernel.xdp.hooks import (
    DISPATCHER,
    Current,
    hook_dir,
    hook_dirs,
    revisions,
    slot_prog_ids,
)
from reconciler.kernel.xdp.proto import Config


def _read(root: Path, hook: XdpHook, owned: dict[int, str]) -> Current:
    iface = netlink.require(hook.ifname, hook.netns)
    if not iface.xdp_prog_id:
        return Current(iface)
    try:
        with bpf.opened(bpf.prog_fd_by_id(iface.xdp_prog_id)) as fd:
            config = xdpproto.read_config(fd)
    except OSError as e:
        raise KernelError(f"cannot read the XDP program on {hook.ifname}: {e.strerror}") from e
    if config is None:
        return Current(iface, direct=iface.xdp_prog_id)
    ids = slot_prog_ids(root, hook.netns, iface.ifindex, iface.xdp_prog_id, config)
    comps = tuple(
        Component(
            priority=config.run_prios[i],
            proceed=config.chain_call_actions[i],
            name=ifaces.prog_name(pid),
            pin_dir=owned.get(pid),
            prog_id=pid,
            flags=config.program_flags[i],
        )
        for i, pid in enumerate(ids)
    )
    return Current(iface, iface.xdp_prog_id, comps)


def hook_state(store: PinStore, hook: XdpHook) -> HookState:
    cur = _read(store.root, hook, owners(store.root))
    slots = tuple(
        SlotState(c.prog_id or 0, c.name, c.priority, xdpproto.action_names(c.proceed), c.pin_dir)
        for c in cur.components  # a running component always has its program id
    )
    return HookState(hook, cur.dispatcher_id, slots, cur.direct)


def dispatch(store: PinStore, hook: XdpHook, slots: list[DispatchSlot]) -> list[Installed]:
    check_hook(hook, slots)
    point = XdpPoint(hook.ifname, hook.mode, hook.netns)
    for s in slots:
        precheck.check(s.spec, point)
        if s.spec.maps_dir is not None:
            maps.directory(store.root, s.spec.maps_dir)
    store.ensure_root()
    with xdpproto.libxdp_lock():
        owned = owners(store.root)
        cur = _read(store.root, hook, owned)
        _refuse_direct(hook, point, cur, owned)
        foreign = [c for c in cur.components if c.pin_dir is None]
        if len(slots) + len(foreign) > xdpproto.MAX_DISPATCHER_SLOTS:
            raise too_many(hook, len(slots) + len(foreign))
        on_hook = {c.pin_dir: c for c in cur.components if c.pin_dir is not None}
        objects: dict[str, bytes] = {}  # object digests, for the slots' marks
        ours = [_ours(store, hook, s, on_hook, objects) for s in slots]
        wanted = components.revision(ours, foreign)
        if _unchanged(cur, wanted, hook):
            running = _Running(cur.dispatcher_id, cur.iface.xdp_mode, cur.components)
        else:
            running = _swap(store, hook, cur, wanted)
            _drop_unlisted(store, on_hook, {s.pin_dir for s in slots})
        placed = _placed(hook, cur.iface, running)
    # Where our components run comes from the dispatch that just put them there (its
    # compare-and-swap told us), not from reading every interface of every namespace again.
    scan = observe.Scan(store.root, placed)
    return [_installed(scan, s.pin_dir) for s in slots]


def _installed(scan: observe.Scan, pin_dir: str) -> Installed:
    found = scan.one(pin_dir)
    if found is None:
        raise KernelError(f"{pin_dir} vanished right after it was installed")
    return found


@dataclass(frozen=True)
class _Running:
    """What a hook runs after a dispatch: its dispatcher (None: none), in which XDP mode, and
    the components in its slots, each with its program id."""

    dispatcher_id: int | None
    mode: str | None
    components: Sequence[Component] = ()


def _placed(
    hook: XdpHook, iface: netlink.Interface, running: _Running
) -> dict[int, XdpDispatcherView]:
    """prog id -> its slot, for the components running on ``hook``, as observe reports them
    (observe names our own namespace None and sees only named ones; ``iface`` has the
    interface's own name, where the hook may name it by an alternative one)."""
    seen, ns = netns.observed_as(hook.netns)
    if running.dispatcher_id is None or not seen:
        return {}
    out: dict[int, XdpDispatcherView] = {}
    for i, c in enumerate(running.components):
        assert c.prog_id is not None  # a running component always has its program id
        proceed = xdpproto.action_names(c.proceed)
        slot = DispatcherSlot(running.dispatcher_id, i, c.priority, proceed)
        view = XdpDispatcherView(slot, iface.ifindex, iface.ifname, running.mode, ns)
        out.setdefault(c.prog_id, view)
    return out


def _refuse_direct(hook: XdpHook, point: XdpPoint, cur: Current, owned: dict[int, str]) -> None:
    """A program attached without a dispatcher (ours or not) is never replaced by one."""
    if cur.direct is None:
        return
    owner = owned.get(cur.direct)
    if owner is not None:
        raise AttachConflict(
            f"interface {hook.ifname} runs bpfman's {owner} attached directly; "
            "uninstall it before dispatching several programs there"
        )
    raise xdpattach.xdp_conflict(point, cur.direct, None)


def _ours(
    store: PinStore,
    hook: XdpHook,
    slot: DispatchSlot,
    on_hook: dict[str, Component],
    objects: dict[str, bytes],
) -> Component:
    """``slot`` as a component of the new revision: it keeps its program id if that program is
    on this hook now and its pin dir holds the mark of the spec wanted (a pin of the program)."""
    d = bpffs.path_of(store.root, slot.pin_dir)
    mark = components.mark(slot.spec, objects)
    keep = on_hook.get(slot.pin_dir)
    if keep is None and (d / PROG).exists():
        raise KernelError(
            f"{slot.pin_dir} is already installed (not on the XDP dispatcher of "
            f"{hook.ifname}); uninstall it first"
        )
    same = keep is not None and (d / mark).exists()
    return Component(
        slot.priority,
        xdpproto.action_bits(slot.proceed_on),
        "",
        slot.pin_dir,
        keep.prog_id if same and keep else None,
        spec=slot.spec,
        mark=mark,
    )


def _drop_unlisted(store: PinStore, on_hook: dict[str, Component], listed: set[str]) -> None:
    """The pins of our components the new revision no longer runs."""
    for pin_dir in on_hook:
        if pin_dir not in listed:
            d = bpffs.path_of(store.root, pin_dir)
            bpffs.remove_tree(d)
            bpffs.prune_empty_parents(d.parent, store.root)


def _unchanged(cur: Current, wanted: list[Component], hook: XdpHook) -> bool:
    if cur.dispatcher_id is None or hook.mode not in ("auto", cur.iface.xdp_mode):
        return not wanted and cur.dispatcher_id is None
    return components.unchanged(cur.components, wanted)


def _swap(store: PinStore, hook: XdpHook, cur: Current, wants: list[Component]) -> _Running:
    """Build the new dispatcher revision, swap it in, release the old one."""
    root, ifindex = store.root, cur.iface.ifindex
    mine = hook_dir(root, hook.netns, ifindex)
    old_fd = bpf.prog_fd_by_id(cur.dispatcher_id) if cur.dispatcher_id else None
    new_pins: list[Path] = []
    staged: list[tuple[Path, str, maps.Sharing | None]] = []
    running = _Running(None, None)
    try:
        if not wants:
            assert old_fd is not None and cur.iface.xdp_mode is not None
            netlink.xdp_detach(hook.ifname, old_fd, cur.iface.xdp_mode, hook.netns)
        else:
            with contextlib.ExitStack() as stack:
                config = Config(
                    len(wants),
                    tuple(w.proceed for w in wants),
                    tuple(w.priority for w in wants),
                    tuple(w.flags for w in wants),
                )
                disp_fd = load_dispatcher(stack, config)
                disp_id = bpf.prog_info(disp_fd).id
                btf_ids = xdpproto.slot_btf_ids(disp_fd)
                link_fds = []
                ran = []
                for i, w in enumerate(wants):
                    if w.prog_id is not None:
                        fd = stack.enter_context(bpf.opened(bpf.prog_fd_by_id(w.prog_id)))
                    else:
                        assert w.spec is not None and w.pin_dir is not None
                        d = bpffs.path_of(root, w.pin_dir)
                        fd, sharing = _load_component(stack, d, w, disp_fd, f"prog{i}", root)
                        staged.append((d, w.mark, sharing))
                        w = dataclasses.replace(w, prog_id=bpf.prog_info(fd).id)
                    ran.append(w)
                    link_fds.append(
                        (fd, stack.enter_context(
                            bpf.opened(bpf.link_create_freplace(fd, disp_fd, btf_ids[i]))
                        ))
                    )  # fmt: skip
                # Pins first (so nothing unravels if we die after the swap), then the swap.
                # Ours before libxdp's: a revision killed before its swap is found (and its
                # libxdp pins removed) through ours by the next apply (``recover``).
                ours = mine / f"dispatch-{disp_id}"
                if any(w.pin_dir is not None for w in wants):
                    ours.mkdir(mode=0o700, parents=True, exist_ok=True)
                    new_pins.append(ours)
                    bpf.obj_pin(disp_fd, str(ours / DISPATCHER))
                lib = xdpproto.libxdp_pins(ifindex, disp_id)
                lib.mkdir(mode=0o700, parents=True, exist_ok=True)
                new_pins.append(lib)
                for i, (fd, link_fd) in enumerate(link_fds):
                    bpf.obj_pin(fd, str(lib / f"prog{i}-prog"))
                    bpf.obj_pin(link_fd, str(lib / f"prog{i}-link"))
                    if ours in new_pins:
                        bpf.obj_pin(link_fd, str(ours / f"prog{i}-link"))
                store.checkpoint("staged")
                mode = _attach(hook, cur, disp_fd, old_fd)
                running = _Running(disp_id, mode, ran)
    except BaseException:
        for p in new_pins:
            bpffs.remove_tree(p)
        for d, _, sharing in staged:
            bpffs.remove_tree(d / STAGING)
            if sharing is not None:
                maps.undo(sharing, root)
            bpffs.prune_empty_parents(d, root)
        with contextlib.suppress(OSError):
            mine.rmdir()
        raise
    finally:
        if old_fd is not None:
            os.close(old_fd)
    # The new revision runs (or the last one was removed); a kill from here on is completed by
    # the next apply: ``recover`` removes the revisions that do not run, RealKernel commits the
    # components that do.
    store.checkpoint("swapped")
    for d, _, _ in staged:
        store.commit(d, keep_link=False)
    if cur.dispatcher_id is not None:
        bpffs.remove_tree(xdpproto.libxdp_pins(ifindex, cur.dispatcher_id))
    if mine.is_dir():
        keep = {p.name for p in new_pins}
        for old in mine.iterdir():
            if old.name not in keep:
                bpffs.remove_tree(old)
        bpffs.prune_empty_parents(mine, root)
    return running


def _attach(hook: XdpHook, cur: Current, disp_fd: int, old_fd: int | None) -> str:
    """The swap: atomic (XDP_FLAGS_REPLACE with the expected old fd), or a first attach that
    never clobbers a program attached meanwhile (UPDATE_IF_NOEXIST). Returns the mode used."""
    mode = cur.iface.xdp_mode or "generic"
    try:
        if old_fd is None:
            return netlink.xdp_attach(hook.ifname, disp_fd, hook.mode, hook.netns)
        elif hook.mode in ("auto", mode):
            return netlink.xdp_attach(hook.ifname, disp_fd, mode, hook.netns, replace_fd=old_fd)
        else:
            # Native and generic are exclusive: a mode change cannot be atomic.
            netlink.xdp_detach(hook.ifname, old_fd, mode, hook.netns)
            try:
                return netlink.xdp_attach(hook.ifname, disp_fd, hook.mode, hook.netns)
            except BaseException:
                netlink.xdp_attach(hook.ifname, old_fd, mode, hook.netns)
                raise
    except netlink.NetlinkFailure as e:
        if e.errno in (errno.EEXIST, errno.EBUSY):
            raise KernelError(
                f"cannot swap the XDP dispatcher of {hook.ifname}: {e}; the interface's XDP "
                "program changed meanwhile, observe again and retry"
            ) from e
        raise


def load_dispatcher(stack: contextlib.ExitStack, config: Config) -> int:
    """Load (not attach) a dispatcher running ``config``; its fd lives as long as ``stack``."""
    disp = stack.enter_context(LibbpfObject(str(xdpproto.OBJECT)))
    disp.select(xdpproto.DISPATCHER_NAME, bpf.PROG_TYPE_XDP)
    btfinfo.set_global_data(disp, [("conf", config.pack())])
    return disp.load()


def prepare_component(obj: LibbpfObject, spec: ProgramSpec, disp_fd: int, slot: str) -> None:
    """Make ``obj``'s program an extension of ``slot`` of the loaded dispatcher ``disp_fd``
    (before load; the install and the verifier's dry run both go through here)."""
    obj.select(spec.function, bpf.PROG_TYPE_EXT, 0)
    # libbpf resolves the slot function's BTF id in the dispatcher's BTF (the freplace target).
    ret = libbpf.lib.bpf_program__set_attach_target(obj._prog, disp_fd, slot.encode())
    if ret < 0:
        raise libbpf.fail(f"cannot target slot {slot} of the XDP dispatcher", -ret)
    btfinfo.set_global_data(obj, spec.global_data)


def _load_component(
    stack: contextlib.ExitStack, d: Path, w: Component, disp_fd: int, slot: str, root: Path
) -> tuple[int, maps.Sharing | None]:
    """Load one of our programs as an extension of ``slot`` of the new dispatcher, pinned (with
    its maps) in ``d``'s staging dir. The verifier runs here, before anything changes."""
    assert w.spec is not None
    spec = w.spec
    stage = d / STAGING
    bpffs.remove_tree(stage)  # leftovers of an interrupted run
    (stage / MAPS).mkdir(mode=0o700, parents=True, exist_ok=True)
    obj = stack.enter_context(LibbpfObject(spec.object_path, pin_root=str(stage / MAPS)))
    prepare_component(obj, spec, disp_fd, slot)
    sharing = None
    skip: frozenset[str] = frozenset()
    if spec.maps_dir is not None:
        sharing = maps.share(obj, maps.directory(root, spec.maps_dir))
        skip = sharing.names
    fd = obj.load()
    obj.pin_program(str(stage / PROG))
    bpf.obj_pin(fd, str(stage / w.mark))
    obj.pin_maps(str(stage / MAPS), skip)
    if sharing is not None:
        maps.link_into(sharing, stage / MAPS, d / MAPS)
    return fd, sharing


def recover(store: PinStore) -> tuple[list[str], set[int]]:
    """Remove our revisions (and their libxdp pins) that do not run; call with the apply lock
    held. Returns what was removed, and the program ids in the slots of the revisions that do
    run (a component staged by a killed apply and running there is committed by the caller)."""
    done: list[str] = []
    live: set[int] = set()
    for hdir, _ns, ifindex, running in hook_dirs(store.root):
        for d, disp_id in revisions(hdir):
            if disp_id == running:
                for link in d.glob("prog*-link"):
                    with contextlib.suppress(OSError), bpf.opened(bpf.obj_get(str(link))) as fd:
                        live.add(bpf.link_info(fd).prog_id)
                continue
            bpffs.remove_tree(xdpproto.libxdp_pins(ifindex, disp_id))
            bpffs.remove_tree(d)
            done.append(
                f"Removed {d.relative_to(store.root)}: an XDP dispatcher revision that does not run"
            )
        bpffs.prune_empty_parents(hdir, store.root)
    return done, live
