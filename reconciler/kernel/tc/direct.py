"""A single TC program attached directly: one direct-action cls_bpf filter of ours, for kernels
without freplace (no dispatcher possible). It sits where the TC dispatcher would (the same pref
and handle), so a hook never holds both, and is swapped atomically in place like the dispatcher.

The pins do not say which interface the filter is on, so finding it scans our namespace and every
named (``ip netns``) one, as for netlink-attached XDP.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass

from reconciler.kernel.sys import ifaces, netns
from reconciler.kernel.tc import netlink as tcnetlink
from reconciler.kernel.tc.netlink import HANDLE, PREF, our_filter
from reconciler.kernel.types import AttachConflict, KernelError, TcDirectView, TcHook

DIRECTIONS = ("ingress", "egress")


@dataclass(frozen=True)
class Found:
    ns: str | None
    ifname: str
    ifindex: int
    direction: str


def attach_prog(hook: TcHook, prog_fd: int, name: str, owner_of) -> TcDirectView | None:  # noqa: ANN001
    """Attach without clobbering: a filter already at our pref/handle is a conflict. Returns
    where the filter now runs (see ``_placed``)."""
    ifindex = ifaces.ifindex(hook.ifname, hook.netns)
    with netns.enter(hook.netns):
        current = our_filter(ifindex, hook.direction)
        if current is not None:
            owner = owner_of(current.prog_id) if current.prog_id else None
            who = f"bpfman's {owner}" if owner else f"program id {current.prog_id}"
            raise AttachConflict(
                f"the {hook.direction} TC hook of {hook.ifname} already runs {who} at pref "
                f"{PREF} handle {HANDLE:#x}; only one program per hook without a dispatcher"
            )
        ifname = _own_name(ifindex)
        tcnetlink.add_clsact(ifindex)  # an existing clsact qdisc is left alone
        try:
            tcnetlink.replace_bpf_filter(ifindex, hook.direction, PREF, HANDLE, prog_fd, name)
        except OSError as e:
            raise KernelError(f"cannot attach TC to {hook.ifname} {hook.direction}: {e}") from e
    return _placed(hook, ifindex, ifname)


def _own_name(ifindex: int) -> str | None:
    """The interface's own name (a hook may name it by an altname); None: it is gone. Asked
    inside the hook's namespace."""
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return None


def _placed(hook: TcHook, ifindex: int, ifname: str | None) -> TcDirectView | None:
    """Where our filter on ``hook`` runs, named as ``index`` names it; None when an
    observation cannot see that namespace (so neither may this). Asked from our own
    namespace, since the names are relative to it."""
    seen, ns = netns.observed_as(hook.netns)
    if not seen or ifname is None:
        return None
    return TcDirectView(ifindex, ifname, hook.direction, PREF, HANDLE, ns)


def find(prog_id: int) -> Found | None:
    for found in _filters():
        if found[0] == prog_id:
            return found[1]
    return None


def index() -> dict[int, Found]:
    """prog id -> where our filter runs it, for every hook of every namespace we can see (one
    pass, for an observation of many programs)."""
    out: dict[int, Found] = {}
    for prog_id, found in _filters():
        out.setdefault(prog_id, found)
    return out


def _filters() -> Iterator[tuple[int, Found]]:
    """Each of our filters (its program id and hook): our namespace, then the named ones."""
    for ns in [None, *netns.named_namespaces()]:
        here = []
        try:
            with netns.enter(ns):
                for iface in _interfaces():
                    for direction in DIRECTIONS:
                        f = our_filter(iface[0], direction)
                        if f is not None and f.prog_id:
                            here.append((f.prog_id, Found(ns, iface[1], iface[0], direction)))
        except (OSError, KernelError):
            continue  # a namespace that went away meanwhile
        yield from here  # back in our own namespace


def _interfaces() -> list[tuple[int, str]]:
    return list(socket.if_nameindex())


def swap(hook: TcHook, old_id: int, new_fd: int, name: str, owner_of) -> TcDirectView | None:  # noqa: ANN001
    """Swap the filter's program in place (one RCU pointer update in cls_bpf) if it still runs
    the old one; otherwise attach the new one without clobbering anything. Returns where the
    new one runs (see ``_placed``)."""
    ifindex = ifaces.ifindex(hook.ifname, hook.netns)
    with netns.enter(hook.netns):
        current = our_filter(ifindex, hook.direction)
        swapped = current is not None and current.prog_id == old_id
        if swapped:
            ifname = _own_name(ifindex)
            tcnetlink.replace_bpf_filter(ifindex, hook.direction, PREF, HANDLE, new_fd, name)
    if swapped:
        return _placed(hook, ifindex, ifname)
    placed = attach_prog(hook, new_fd, name, owner_of)
    detach(old_id)
    return placed


def detach(prog_id: int) -> None:
    """Delete our filter running ``prog_id``, wherever it is; never anything else."""
    found = find(prog_id)
    if found is None:
        return
    with netns.enter(found.ns):
        tcnetlink.del_filter(found.ifindex, found.direction, PREF, HANDLE)


def where(prog_id: int, known: dict[int, Found] | None = None) -> tuple[bool, TcDirectView | None]:
    """Whether (and where) our filter runs ``prog_id``; ``known``: an ``index()`` to look in."""
    found = known.get(prog_id) if known is not None else find(prog_id)
    if found is None:
        return False, None
    return True, TcDirectView(found.ifindex, found.ifname, found.direction, PREF, HANDLE, found.ns)
