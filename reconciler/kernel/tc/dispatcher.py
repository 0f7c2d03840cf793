"""Multi-program TC (clsact + cls_bpf) through a dispatcher swapped atomically in place.

One direct-action cls_bpf filter of ours per hook, at pref ``PREF`` and handle ``HANDLE``, runs
the dispatcher (dispatchers/tc_dispatcher.bpf.c); each component is an EXT (freplace) program
attached to one slot function ``progN``. A change builds a new dispatcher (its config in .rodata),
attaches every component to it with new freplace links (programs keep their ids), and swaps it in
by replacing our filter's program in place (RTM_NEWTFILTER + NLM_F_REPLACE): never two filters.

Pins (see docs/dispatchers-tc.md)::

    <root>/<pin_dir>/prog, maps/...      a component (no link of its own)
    <root>/<pin_dir>/%spec-<digest>/     empty dir: what the component was loaded from
    <root>/%tc/<netns inode>-<ifindex>-<direction>/dispatcher, link<N>, %qdisc/
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import struct
from contextlib import ExitStack
from pathlib import Path

from reconciler.kernel import components, maps, observe, precheck
from reconciler.kernel.components import Component
from reconciler.kernel.pins import SPEC_MARK, PinStore, owner_of, prog_id_at
from reconciler.kernel.sys import bpf, bpffs, btfinfo, ifaces, netns
from reconciler.kernel.sys.bpffs import MAPS, PROG, STAGING
from reconciler.kernel.sys.bpfobject import LibbpfObject
from reconciler.kernel.tc import netlink as tcnetlink
from reconciler.kernel.tc.hooks import (
    DISPATCHER,
    FILTER_NAME,
    HOOKS_DIR,
    QDISC_MARK,
    hook_dirs,
    leftovers,
    mask_of,
    proceed_on_of,
    slots_of,
    where,
)
from reconciler.kernel.tc.netlink import HANDLE, PREF, our_filter
from reconciler.kernel.types import (
    MAX_DISPATCHER_SLOTS,
    AttachConflict,
    DispatchSlot,
    HookState,
    Installed,
    KernelError,
    ProgramSpec,
    SlotState,
    TcDispatcherView,
    TcHook,
)

DISPATCHER_OBJECT = Path(__file__).resolve().parent.parent / "dispatchers" / "tc_dispatcher.o"
MAGIC, VERSION = 0xBF, 1

# Re-exported: the dispatcher's place on the hook and what observe reads of it.
__all__ = [
    "HANDLE",
    "PREF",
    "dispatch",
    "hook_state",
    "leftovers",
    "our_filter",
    "recover",
    "where",
]


def config_bytes(entries: list[tuple[int, tuple[str, ...]]]) -> bytes:
    """struct tc_dispatcher_config for (priority, proceed_on) per slot, in run order."""
    actions = [mask_of(p) for _, p in entries] + [0] * (MAX_DISPATCHER_SLOTS - len(entries))
    prios = [prio for prio, _ in entries] + [0] * (MAX_DISPATCHER_SLOTS - len(entries))
    return struct.pack("=BBBx10I10I", MAGIC, VERSION, len(entries), *actions, *prios)


def _hook_dir(store: PinStore, hook: TcHook, ifindex: int) -> Path:
    ino = netns.identity(hook.netns)[1]
    return store.root / HOOKS_DIR / f"{ino}-{ifindex}-{hook.direction}"


def _ifindex(hook: TcHook) -> int:
    if hook.direction not in tcnetlink.PARENTS:
        raise KernelError(f"TC direction must be ingress or egress, not {hook.direction!r}")
    return ifaces.ifindex(hook.ifname, hook.netns)


def _ours(hook: TcHook, ifindex: int) -> tcnetlink.Filter | None:
    with netns.enter(hook.netns):
        return our_filter(ifindex, hook.direction)


def _current_dispatcher(store: PinStore, hook: TcHook, ifindex: int) -> int | None:
    """Our dispatcher's program id, None when the hook has no filter of ours. A filter at our
    pref and handle running anything but our pinned dispatcher is someone else's: refused."""
    found = _ours(hook, ifindex)
    if found is None:
        return None
    pinned = prog_id_at(_hook_dir(store, hook, ifindex) / DISPATCHER)
    if found.kind != "bpf" or found.prog_id is None or found.prog_id != pinned:
        raise AttachConflict(
            f"the {hook.direction} TC hook of {hook.ifname} has a filter at pref {PREF} handle "
            f"{HANDLE:#x} that bpfman did not put there (program id {found.prog_id}); delete it "
            f"(tc filter del dev {hook.ifname} {hook.direction} pref {PREF}) or move it"
        )
    return found.prog_id


def hook_state(store: PinStore, hook: TcHook) -> HookState:
    ifindex = _ifindex(hook)
    disp = _current_dispatcher(store, hook, ifindex)
    if disp is None:
        return HookState(hook, None)
    slots = []
    for _i, prog_id, prio, mask in slots_of(disp):
        owner = owner_of(store.root, prog_id)
        name = "?"
        with contextlib.suppress(OSError), bpf.opened(bpf.prog_fd_by_id(prog_id)) as fd:
            name = bpf.prog_info(fd).name
        slots.append(SlotState(prog_id, name, prio, proceed_on_of(mask), owner))
    return HookState(hook, disp, tuple(slots))


def dispatch(store: PinStore, hook: TcHook, slots: list[DispatchSlot]) -> list[Installed]:
    ifindex = _ifindex(hook)
    store.ensure_root()
    hdir = _hook_dir(store, hook, ifindex)
    old = _current_dispatcher(store, hook, ifindex)
    if len({s.pin_dir for s in slots}) != len(slots):
        raise KernelError("a pin directory is given twice in one dispatch")
    foreign, previous = _survey(store, old, {s.pin_dir for s in slots})
    if not slots and not foreign:
        _remove(store, hook, ifindex, hdir, old)
        for rel in previous:
            store.uninstall(rel)
        return []
    if len(slots) + len(foreign) > MAX_DISPATCHER_SLOTS:
        raise KernelError(
            f"the {hook.direction} TC hook of {hook.ifname} can run at most "
            f"{MAX_DISPATCHER_SLOTS} programs ({len(slots)} of ours + {len(foreign)} foreign)"
        )
    objects: dict[str, bytes] = {}
    wanted = components.revision([_component(store, s, objects) for s in slots], foreign)
    _stage_and_swap(store, hook, ifindex, hdir, wanted)
    # The new dispatcher runs: a kill from here on is completed by the next apply (``recover``
    # commits the hook's pins, RealKernel the components that run in its slots).
    store.checkpoint("swapped")
    _commit_hook(hdir)
    _commit_components(store, wanted)
    for rel in previous:
        store.uninstall(rel)
    scan = observe.Scan(store.root)  # one pass for all slots, not one per slot
    return [_installed(scan, hook, s.pin_dir) for s in slots]


def _survey(
    store: PinStore, old: int | None, wanted: set[str]
) -> tuple[list[Component], list[str]]:
    """On the dispatcher the hook runs now: the foreign components (kept, at their priority and
    chain actions), and our pin dirs that the new revision no longer lists."""
    foreign: list[Component] = []
    previous: list[str] = []
    if old is None:
        return foreign, previous
    for _i, prog_id, prio, mask in slots_of(old):
        owner = owner_of(store.root, prog_id)
        if owner is None:
            foreign.append(Component(prio, mask, ifaces.prog_name(prog_id), prog_id=prog_id))
        elif owner not in wanted:
            previous.append(owner)
    return foreign, previous


def _component(store: PinStore, slot: DispatchSlot, objects: dict[str, bytes]) -> Component:
    """``slot`` as a component of the new revision: it keeps its program id if its pin dir
    holds a program and the (empty directory) mark of the spec wanted."""
    d = store.path(slot.pin_dir)
    mark = components.mark(slot.spec, objects)
    kept = prog_id_at(d / PROG) if (d / mark).is_dir() else None
    return Component(
        slot.priority,
        mask_of(slot.proceed_on),
        "",
        slot.pin_dir,
        prog_id=kept,
        spec=slot.spec,
        mark=mark,
    )


def _stage_and_swap(
    store: PinStore, hook: TcHook, ifindex: int, hdir: Path, wanted: list[Component]
) -> None:
    """Load the new dispatcher and the components that load anew (pinned in staging), link every
    component into its slot, then swap our filter's program to the new dispatcher. A failure
    before the swap changes nothing: the staging is removed."""
    stage = hdir / STAGING
    loading = [store.path(c.pin_dir) for c in wanted if c.loads and c.pin_dir is not None]
    with ExitStack() as stack:
        try:
            bpffs.remove_tree(stage)
            stage.mkdir(mode=0o700, parents=True)
            entries = [(c.priority, proceed_on_of(c.proceed)) for c in wanted]
            disp, disp_fd = load_dispatcher(stack, entries)
            disp.pin_program(str(stage / DISPATCHER))
            obj_btf = disp.btf()
            for n, c in enumerate(wanted):
                slot_name = f"prog{n}"
                btf_id = _lib_find_func(obj_btf, slot_name)
                prog_fd = _component_fd(store, stack, c, disp_fd, slot_name)
                try:
                    link_fd = bpf.link_create_freplace(prog_fd, disp_fd, btf_id)
                except OSError as e:
                    raise KernelError(
                        f"cannot attach a program to slot {slot_name} of the TC dispatcher of "
                        f"{hook.ifname}: {e.strerror} (this kernel may lack freplace)"
                    ) from e
                with bpf.opened(link_fd):
                    bpf.obj_pin(link_fd, str(stage / f"link{n}"))
            store.checkpoint("staged")
            with netns.enter(hook.netns):
                created = tcnetlink.add_clsact(ifindex)
                if created:
                    (stage / QDISC_MARK).mkdir()
                # The swap: our filter's program replaced in place (or the filter created).
                tcnetlink.replace_bpf_filter(
                    ifindex, hook.direction, PREF, HANDLE, disp_fd, FILTER_NAME
                )
        except BaseException:
            bpffs.remove_tree(stage)
            for d in loading:
                bpffs.remove_tree(d / STAGING)
                if not (d / PROG).exists():
                    store.uninstall(store.rel(d))
            raise


def _component_fd(
    store: PinStore, stack: ExitStack, c: Component, disp_fd: int, slot_name: str
) -> int:
    """An fd of the program component ``c`` runs: ours kept (from its pin), ours loaded anew
    (staged in its pin dir), or a foreign one (by id)."""
    if c.pin_dir is None:
        assert c.prog_id is not None
        return stack.enter_context(bpf.opened(bpf.prog_fd_by_id(c.prog_id)))
    d = store.path(c.pin_dir)
    if not c.loads:
        return stack.enter_context(bpf.opened(bpf.obj_get(str(d / PROG))))
    assert c.spec is not None
    return _load_component(store, stack, d, c.spec, disp_fd, slot_name)


def _commit_components(store: PinStore, wanted: list[Component]) -> None:
    """Move the staged components in, and mark each of ours with what it was loaded from."""
    for c in wanted:
        if c.pin_dir is not None and c.loads:
            store.commit(store.path(c.pin_dir), keep_link=False)
    for c in wanted:
        if c.pin_dir is None:
            continue
        d = store.path(c.pin_dir)
        for other in d.iterdir():
            if other.name.startswith(SPEC_MARK) and other.name != c.mark:
                other.rmdir()
        (d / c.mark).mkdir(exist_ok=True)


def _lib_find_func(obj_btf: int | None, name: str) -> int:
    if obj_btf is None:
        raise KernelError(f"{DISPATCHER_OBJECT} has no BTF; rebuild it with clang -g")
    type_id = int(btfinfo._lib.btf__find_by_name_kind(obj_btf, name.encode(), btfinfo.KIND_FUNC))
    if type_id <= 0:
        raise KernelError(f"slot function {name} not found in {DISPATCHER_OBJECT}")
    return type_id


def load_dispatcher(
    stack: ExitStack, entries: list[tuple[int, tuple[str, ...]]]
) -> tuple[LibbpfObject, int]:
    """Load (not attach) a TC dispatcher running ``entries`` (priority, proceed-on) in its slots;
    the object and its fd live as long as ``stack``."""
    disp = stack.enter_context(LibbpfObject(str(DISPATCHER_OBJECT)))
    disp.select("tc_dispatcher", bpf.PROG_TYPE_SCHED_CLS)
    btfinfo.set_global_data(disp, (("CONFIG", config_bytes(entries)),))
    return disp, disp.load()


def prepare_component(obj: LibbpfObject, spec: ProgramSpec, disp_fd: int, target: str) -> None:
    """Make ``obj``'s program an extension replacing ``target`` of the loaded dispatcher
    ``disp_fd`` (before load; the install and the verifier's dry run both go through here)."""
    obj.select(spec.function, bpf.PROG_TYPE_EXT)
    ret = btfinfo._lib.bpf_program__set_attach_target(obj._prog, disp_fd, target.encode())
    if ret < 0:
        raise KernelError(f"cannot target slot {target} of the TC dispatcher: {os.strerror(-ret)}")
    btfinfo.set_global_data(obj, spec.global_data)


def _load_component(
    store: PinStore, stack: ExitStack, d: Path, spec: ProgramSpec, disp_fd: int, target: str
) -> int:
    """Load ``spec``'s program as EXT replacing ``target`` of the new dispatcher, pinned (prog,
    maps) in ``d/%next``; returns its fd. A verifier rejection raises before any change."""
    if not os.path.isfile(spec.object_path):
        precheck.object_file(spec)
    shared = maps.directory(store.root, spec.maps_dir) if spec.maps_dir else None
    stage = d / STAGING
    bpffs.remove_tree(stage)
    (stage / MAPS).mkdir(mode=0o700, parents=True)
    obj = stack.enter_context(LibbpfObject(spec.object_path, pin_root=str(stage / MAPS)))
    prepare_component(obj, spec, disp_fd, target)
    skip: frozenset[str] = frozenset()
    sharing = None
    if shared is not None:
        sharing = maps.share(obj, shared)
        skip = sharing.names
    fd = obj.load()
    obj.pin_program(str(stage / PROG))
    obj.pin_maps(str(stage / MAPS), skip)
    if sharing is not None:
        maps.link_into(sharing, stage / MAPS, d / MAPS)
    return fd


def _installed(scan: observe.Scan, hook: TcHook, pin_dir: str) -> Installed:
    found = scan.one(pin_dir)
    if found is None:
        raise KernelError(f"{pin_dir} vanished right after it was installed")
    where = TcDispatcherView(hook.ifname, hook.direction, hook.netns or None)  # the hook only
    return dataclasses.replace(found, attached=True, attach=where)


def _commit_hook(hdir: Path) -> None:
    """Move the staged revision's pins in: the old dispatcher's pins (and so its links) go, the
    new ones move in, ``dispatcher`` first. Resumable (``recover``): while the staged
    dispatcher pin is still in ``%next`` no new pin has moved in, so whatever else is in the
    hook dir is old; once it has moved, everything in the hook dir is new."""
    stage = hdir / STAGING
    had_qdisc_mark = (hdir / QDISC_MARK).exists()
    if (stage / DISPATCHER).exists():
        for entry in list(hdir.iterdir()):
            if entry.name != STAGING and entry.name != QDISC_MARK:
                bpffs.remove_tree(entry)
    for entry in sorted(stage.iterdir(), key=lambda e: e.name != DISPATCHER):
        if entry.name == QDISC_MARK and had_qdisc_mark:
            continue
        os.rename(entry, hdir / entry.name)
    bpffs.remove_tree(stage)


def _remove(store: PinStore, hook: TcHook, ifindex: int, hdir: Path, old: int | None) -> None:
    """Delete our filter (only ours), the qdisc if we created it and it is now empty, and the
    hook's pins."""
    with netns.enter(hook.netns):
        if old is not None:
            tcnetlink.del_filter(ifindex, hook.direction, PREF, HANDLE)
            store.checkpoint("swapped")  # the hook runs nothing of ours; its pins remain
        if (hdir / QDISC_MARK).exists():
            rest = tcnetlink.filters(ifindex, "ingress") + tcnetlink.filters(ifindex, "egress")
            other_dir = hdir.with_name(hdir.name.rsplit("-", 1)[0] + "-" + _other(hook.direction))
            if not rest and not other_dir.exists():
                with contextlib.suppress(OSError):
                    tcnetlink.del_clsact(ifindex)
    bpffs.remove_tree(hdir)
    bpffs.prune_empty_parents(hdir.parent, store.root)


def _other(direction: str) -> str:
    return "egress" if direction == "ingress" else "ingress"


def recover(store: PinStore) -> tuple[list[str], set[int]]:
    """Finish or undo what a killed apply left on our hooks (call with the apply lock held): a
    staged revision whose dispatcher our filter runs is committed, any other is removed; a hook
    whose filter is gone loses its pins (and the clsact qdisc we created, if empty). Returns what
    was done, and the program ids in the slots of the dispatchers that run (their components,
    if staged by the killed apply, are committed by the caller)."""
    done: list[str] = []
    live: set[int] = set()
    for hdir, ns, ifindex, direction, running in hook_dirs(store.root):
        stage = hdir / STAGING
        rel = str(hdir.relative_to(store.root))
        if stage.exists():
            staged, current = prog_id_at(stage / DISPATCHER), prog_id_at(hdir / DISPATCHER)
            if running is not None and running == (staged if staged is not None else current):
                _commit_hook(hdir)
                done.append(
                    f"Completed {rel}/{STAGING}: its TC dispatcher already ran (a kill came "
                    "after its swap)"
                )
            else:
                created_qdisc = (stage / QDISC_MARK).exists()
                bpffs.remove_tree(stage)
                if created_qdisc:  # the qdisc is ours to remove once it is empty
                    (hdir / QDISC_MARK).mkdir(exist_ok=True)
                done.append(f"Removed {rel}/{STAGING}, left by an interrupted apply")
        if running is None:
            try:
                with netns.enter(ns):
                    ifname = socket.if_indextoname(ifindex)
                _remove(store, TcHook(ifname, direction, ns), ifindex, hdir, None)
            except OSError:  # the interface is gone, and its hooks with it
                bpffs.remove_tree(hdir)
                bpffs.prune_empty_parents(hdir.parent, store.root)
            done.append(f"Removed {rel}: the pins of a TC hook whose dispatcher no longer runs")
        elif running == prog_id_at(hdir / DISPATCHER):
            live |= {prog_id for _i, prog_id, _p, _m in slots_of(running)}
    return done, live
