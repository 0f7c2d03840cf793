"""A single TC program attached directly: one direct-action cls_bpf filter of ours, for kernels
without freplace (no dispatcher possible). It sits where the TC dispatcher would (the same pref
and handle), so a hook never holds both, and is swapped atomically in place like the dispatcher.

The pins do not say which interface the filter is on, so finding it scans our namespace and every
named (``ip netns``) one, as for netlink-attached XDP.
"""

from __future__ import annotations

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


def attach_prog(hook: TcHook, prog_fd: int, name: str, owner_of) -> None:  # noqa: ANN001
    """Attach without clobbering: a filter already at our pref/handle is a conflict."""
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
        tcnetlink.add_clsact(ifindex)  # an existing clsact qdisc is left alone
        try:
            tcnetlink.replace_bpf_filter(ifindex, hook.direction, PREF, HANDLE, prog_fd, name)
        except OSError as e:
            raise KernelError(f"cannot attach TC to {hook.ifname} {hook.direction}: {e}") from e


def find(prog_id: int) -> Found | None:
    for ns in [None, *netns.named_namespaces()]:
        try:
            with netns.enter(ns):
                for iface in _interfaces():
                    for direction in DIRECTIONS:
                        f = our_filter(iface[0], direction)
                        if f is not None and f.prog_id == prog_id:
                            return Found(ns, iface[1], iface[0], direction)
        except (OSError, KernelError):
            continue  # a namespace that went away meanwhile
    return None


def _interfaces() -> list[tuple[int, str]]:
    import socket

    return list(socket.if_nameindex())


def swap(hook: TcHook, old_id: int, new_fd: int, name: str, owner_of) -> None:  # noqa: ANN001
    """Swap the filter's program in place (one RCU pointer update in cls_bpf) if it still runs
    the old one; otherwise attach the new one without clobbering anything."""
    ifindex = ifaces.ifindex(hook.ifname, hook.netns)
    with netns.enter(hook.netns):
        current = our_filter(ifindex, hook.direction)
        if current is not None and current.prog_id == old_id:
            tcnetlink.replace_bpf_filter(ifindex, hook.direction, PREF, HANDLE, new_fd, name)
            return
    attach_prog(hook, new_fd, name, owner_of)
    detach(old_id)


def detach(prog_id: int) -> None:
    """Delete our filter running ``prog_id``, wherever it is; never anything else."""
    found = find(prog_id)
    if found is None:
        return
    with netns.enter(found.ns):
        tcnetlink.del_filter(found.ifindex, found.direction, PREF, HANDLE)


def where(prog_id: int) -> tuple[bool, TcDirectView | None]:
    found = find(prog_id)
    if found is None:
        return False, None
    return True, TcDirectView(found.ifindex, found.ifname, found.direction, PREF, HANDLE, found.ns)
