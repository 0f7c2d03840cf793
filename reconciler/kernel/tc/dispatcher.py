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
import hashlib
import os
import socket
import struct
from contextlib import ExitStack
from pathlib import Path

from reconciler.kernel import maps, observe, precheck
from reconciler.kernel.pins import PinStore, owner_of, prog_id_at
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


def _fingerprint(store: PinStore, slot: DispatchSlot) -> str:
    h = hashlib.sha256()
    with open(slot.spec.object_path, "rb") as f:
        h.update(f.read())
    h.update(repr((slot.spec.function, slot.spec.global_data, slot.spec.maps_dir)).encode())
    return "%spec-" + h.hexdigest()[:16]


def _unchanged(d: Path, mark: str) -> bool:
    return (d / PROG).exists() and (d / mark).is_dir()


def dispatch(store: PinStore, hook: TcHook, slots: list[DispatchSlot]) -> list[Installed]:
    ifindex = _ifindex(hook)
    store.ensure_root()
    hdir = _hook_dir(store, hook, ifindex)
    old = _current_dispatcher(store, hook, ifindex)
    wanted = {s.pin_dir for s in slots}
    if len(wanted) != len(slots):
        raise KernelError("a pin directory is given twice in one dispatch")
    previous: list[str] = []  # our pin dirs on the old dispatcher
    foreign: list[tuple[int, int, int]] = []  # (prog id, priority, mask)
    if old is not None:
        for _i, prog_id, prio, mask in slots_of(old):
            owner = owner_of(store.root, prog_id)
            if owner is None:
                foreign.append((prog_id, prio, mask))
            elif owner not in wanted:
                previous.append(owner)
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
    # Run order: ours by (priority, pin dir), foreign ones kept at their priority.
    order: list[tuple[int, str, DispatchSlot | tuple[int, int, int]]] = [
        (s.priority, s.pin_dir, s) for s in slots
    ] + [(p, "", f) for f in foreign for p in [f[1]]]
    order.sort(key=lambda e: (e[0], e[1]))
    entries: list[tuple[int, tuple[str, ...]]] = []
    for prio, _, item in order:
        names = item.proceed_on if isinstance(item, DispatchSlot) else proceed_on_of(item[2])
        entries.append((prio, names))
    stage = hdir / STAGING
    loaded: list[Path] = []  # component dirs with a staged (new or changed) program
    with ExitStack() as stack:
        try:
            bpffs.remove_tree(stage)
            stage.mkdir(mode=0o700, parents=True)
            disp, disp_fd = load_dispatcher(stack, entries)
            disp.pin_program(str(stage / DISPATCHER))
            obj_btf = disp.btf()
            for n, (_, _, item) in enumerate(order):
                slot_name = f"prog{n}"
                btf_id = _lib_find_func(obj_btf, slot_name)
                if isinstance(item, DispatchSlot):
                    d = store.path(item.pin_dir)
                    mark = _fingerprint(store, item)
                    if _unchanged(d, mark):
                        prog_fd = stack.enter_context(bpf.opened(bpf.obj_get(str(d / PROG))))
                    else:
                        loaded.append(d)
                        prog_fd = _load_component(store, stack, d, item, disp_fd, slot_name)
                else:
                    prog_fd = stack.enter_context(bpf.opened(bpf.prog_fd_by_id(item[0])))
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
            for d in loaded:
                bpffs.remove_tree(d / STAGING)
                if not (d / PROG).exists():
                    store.uninstall(store.rel(d))
            raise
    # The new dispatcher runs: a kill from here on is completed by the next apply (``recover``
    # commits the hook's pins, RealKernel the components that run in its slots).
    store.checkpoint("swapped")
    _commit_hook(hdir)
    for d in loaded:
        store.commit(d, keep_link=False)
    for s in slots:
        d = store.path(s.pin_dir)
        mark = _fingerprint(store, s)
        for other in d.iterdir():
            if other.name.startswith("%spec-") and other.name != mark:
                other.rmdir()
        (d / mark).mkdir(exist_ok=True)
    for rel in previous:
        store.uninstall(rel)
    return [_installed(store, hook, s.pin_dir) for s in slots]


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
    store: PinStore, stack: ExitStack, d: Path, slot: DispatchSlot, disp_fd: int, target: str
) -> int:
    """Load ``slot``'s program as EXT replacing ``target`` of the new dispatcher, pinned (prog,
    maps) in ``d/%next``; returns its fd. A verifier rejection raises before any change."""
    if not os.path.isfile(slot.spec.object_path):
        precheck.object_file(slot.spec)
    shared = maps.directory(store.root, slot.spec.maps_dir) if slot.spec.maps_dir else None
    stage = d / STAGING
    bpffs.remove_tree(stage)
    (stage / MAPS).mkdir(mode=0o700, parents=True)
    obj = stack.enter_context(LibbpfObject(slot.spec.object_path, pin_root=str(stage / MAPS)))
    prepare_component(obj, slot.spec, disp_fd, target)
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


def _installed(store: PinStore, hook: TcHook, pin_dir: str) -> Installed:
    found = observe.installed(store.root, pin_dir)
    where: dict[str, object] = {"ifname": hook.ifname, "direction": hook.direction}
    if hook.netns:
        where["netns"] = hook.netns
    return dataclasses.replace(found, attached=True, attach=where | {"dispatcher": "tc"})


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
