"""Reading our TC dispatchers' pins and hooks (never writes): the constants of our place on a
clsact hook, a dispatcher's slots as the kernel has them, and where each component runs (for
observe), and the hook directories a killed apply left.

Pins (see docs/dispatchers-tc.md)::

    <root>/%tc/<netns inode>-<ifindex>-<direction>/dispatcher, link<N>, %qdisc/
"""

from __future__ import annotations

import contextlib
import socket
import struct
from pathlib import Path

from reconciler.kernel.pins import prog_id_at
from reconciler.kernel.sys import bpf, btfinfo, netns
from reconciler.kernel.sys.bpffs import STAGING
from reconciler.kernel.tc.netlink import our_filter
from reconciler.kernel.types import DispatcherSlot, KernelError, TcDispatcherView

FILTER_NAME = "bpfman_tc_dispatcher"
TC_DISPATCHER_RETURN = 30
HOOKS_DIR = "%tc"
QDISC_MARK = "%qdisc"  # we created the clsact qdisc of this hook
DISPATCHER = "dispatcher"  # the pin of a hook's dispatcher program
# Proceed-on names -> TC return values (TC_ACT_*; dispatcher_return is bpfman's 30).
ACTIONS = {
    "unspec": -1,
    "ok": 0,
    "reclassify": 1,
    "shot": 2,
    "pipe": 3,
    "stolen": 4,
    "queued": 5,
    "repeat": 6,
    "redirect": 7,
    "trap": 8,
    "dispatcher_return": TC_DISPATCHER_RETURN,
}


def mask_of(proceed_on: tuple[str, ...]) -> int:
    """chain_call_actions bitmask: bit (value + 1) per return value that continues the chain."""
    out = 0
    for name in proceed_on:
        if name not in ACTIONS:
            raise KernelError(f"unknown TC proceed-on value {name!r}; valid: {', '.join(ACTIONS)}")
        out |= 1 << (ACTIONS[name] + 1)
    return out


def proceed_on_of(mask: int) -> tuple[str, ...]:
    return tuple(n for n, v in ACTIONS.items() if mask & (1 << (v + 1)))


def slots_of(dispatcher_id: int) -> list[tuple[int, int, int, int]]:
    """(slot index, prog id, priority, proceed mask) of every program attached to the dispatcher,
    in slot order, read from the kernel: freplace links and the dispatcher's .rodata."""
    with bpf.opened(bpf.prog_fd_by_id(dispatcher_id)) as fd:
        info = bpf.prog_info(fd)
        names = btfinfo.func_names(bpf.prog_btf_id(fd))
    config = b""
    for map_id in info.map_ids:
        with bpf.opened(bpf.map_fd_by_id(map_id)) as mfd:
            m = bpf.map_info(mfd)
            if m.name.endswith(".rodata") or m.value_size == struct.calcsize("=BBBx10I10I"):
                config = bpf.map_lookup(mfd, b"\0\0\0\0", m.value_size)
                break
    if len(config) < 84:
        return []
    actions = struct.unpack_from("=10I", config, 4)
    prios = struct.unpack_from("=10I", config, 44)
    out = []
    for link in bpf.freplace_links_to(dispatcher_id):
        name = names.get(int(link.detail.get("target_btf_id", 0) or 0), "")  # type: ignore[call-overload]
        if name.startswith("prog") and name[4:].isdigit():
            i = int(name[4:])
            out.append((i, link.prog_id, prios[i], actions[i]))
    return sorted(set(out))


def where(root: Path) -> dict[int, TcDispatcherView]:
    """For observe: component prog id -> its place on one of our TC dispatchers, for every hook
    directory whose dispatcher is the program our filter runs right now."""
    out: dict[int, TcDispatcherView] = {}
    hooks = root / HOOKS_DIR
    if not hooks.is_dir():
        return out
    namespaces: dict[int, str | None] = {}
    for ns in [None, *netns.named_namespaces()]:
        with contextlib.suppress(OSError):
            namespaces.setdefault(netns.identity(ns)[1], ns)
    for hdir in sorted(hooks.iterdir()):
        try:
            ino, ifindex, direction = hdir.name.split("-")
            ns = namespaces[int(ino)]
            disp = prog_id_at(hdir / DISPATCHER)
            with netns.enter(ns):
                running = our_filter(int(ifindex), direction)
            if disp is None or running is None or running.prog_id != disp:
                continue  # the hook lost our dispatcher (changed outside bpfman)
            with netns.enter(ns):
                ifname = socket.if_indextoname(int(ifindex))
            for position, (_slot, prog_id, prio, mask) in enumerate(slots_of(disp)):
                slot = DispatcherSlot(disp, position, prio, proceed_on_of(mask))
                view = TcDispatcherView(ifname, direction, ns, int(ifindex), slot)
                out.setdefault(prog_id, view)
        except (ValueError, KeyError, OSError, KernelError):
            continue  # a hook directory of another namespace, or one torn down meanwhile
    return out


# --- what a killed apply leaves ------------------------------------------------------------


# --- what a killed apply leaves ------------------------------------------------------------


def hook_dirs(root: Path) -> list[tuple[Path, str | None, int, str, int | None]]:
    """(hook dir, namespace, ifindex, direction, program id of the filter at our pref and
    handle or None) of every hook dir whose namespace we can enter."""
    hooks = root / HOOKS_DIR
    if not hooks.is_dir():
        return []
    namespaces = netns.by_inode()
    out = []
    for hdir in sorted(hooks.iterdir()):
        try:
            ino, ifindex, direction = hdir.name.split("-")
            ns = namespaces[int(ino)]
            with netns.enter(ns):
                found = our_filter(int(ifindex), direction)
        except (ValueError, KeyError, OSError, KernelError):
            continue
        running = found.prog_id if found is not None and found.kind == "bpf" else None
        out.append((hdir, ns, int(ifindex), direction, running))
    return out


def leftovers(root: Path) -> list[str]:
    """A staged revision (``%next``: an apply killed around its swap), or the pins of a hook
    whose filter is gone (one killed while removing the hook's last program)."""
    out = []
    for hdir, _ns, _ifindex, _direction, running in hook_dirs(root):
        if (hdir / STAGING).exists():
            out.append(str((hdir / STAGING).relative_to(root)))
        elif running is None:
            out.append(str(hdir.relative_to(root)))
    return out
