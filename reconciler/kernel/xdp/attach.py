"""XDP attach and detach over netlink (not a bpf_link): never replacing a program that is not
the expected one."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass

from reconciler.kernel.sys import netlink, netns
from reconciler.kernel.sys.ifaces import prog_name
from reconciler.kernel.sys.ifaces import where as _where
from reconciler.kernel.types import AttachConflict, KernelError, XdpPoint, XdpView


def xdp_conflict(point: XdpPoint, prog_id: int, owner: str | None) -> AttachConflict:
    held = f"bpfman's {owner}" if owner else "a program bpfman does not manage"
    return AttachConflict(
        f"interface {point.ifname}{_where(point.netns)} already has XDP program id {prog_id} "
        f"({prog_name(prog_id)}) attached, {held}; detach it first (e.g. `ip link set dev "
        f"{point.ifname} xdp off` or `xdp-loader unload {point.ifname} --all`) or use another "
        "interface"
    )


XDP_MODES = ("auto", "native", "generic")


def check_mode(mode: str) -> None:
    if mode not in XDP_MODES:
        raise KernelError(f"XDP mode must be auto, native or generic, not {mode!r}")


def view(point: XdpPoint, iface: netlink.Interface, mode: str) -> XdpView | None:
    """Where a program just attached to ``iface`` at ``point`` runs, named as an observation
    names it (None: observation cannot see that namespace, so neither may this)."""
    seen, ns = netns.observed_as(point.netns)
    return XdpView(iface.ifindex, iface.ifname, mode, ns) if seen else None


def xdp_attach(
    point: XdpPoint, prog_fd: int, owner_of: Callable[[int], str | None]
) -> XdpView | None:
    """Attach without clobbering anything; return where it now runs (see ``view``).
    ``owner_of`` names the pin dir of one of our own program ids (for the conflict message),
    None for a foreign one."""
    check_mode(point.mode)
    current = netlink.require(point.ifname, point.netns)
    if current.xdp_prog_id:
        raise xdp_conflict(point, current.xdp_prog_id, owner_of(current.xdp_prog_id))
    try:
        mode = netlink.xdp_attach(point.ifname, prog_fd, point.mode, point.netns)
    except netlink.NetlinkFailure as e:
        if e.errno in (errno.EBUSY, errno.EEXIST):  # someone attached between query and attach
            now = netlink.require(point.ifname, point.netns).xdp_prog_id
            if now:
                raise xdp_conflict(point, now, owner_of(now)) from e
        raise KernelError(
            f"cannot attach XDP to {point.ifname}{_where(point.netns)} "
            f"(mode {point.mode}): {e} ({os.strerror(e.errno)})"
        ) from e
    return view(point, current, mode)


@dataclass(frozen=True)
class XdpAttachment:
    ns: str | None  # None: our namespace
    iface: netlink.Interface


def xdp_find(prog_id: int, prefer: str | None = None) -> list[XdpAttachment]:
    """Interfaces where ``prog_id`` is the attached XDP program: our namespace and every named
    one (``ip netns``). A program attached in an unnamed namespace of some other process is
    not found: netlink XDP leaves no trace in bpffs saying where it went."""
    found = []
    for ns in netns.all_known(prefer):
        try:
            ifaces = netlink.interfaces(ns)
        except (KernelError, OSError):
            continue  # the namespace went away meanwhile
        found += [XdpAttachment(ns, i) for i in ifaces if i.xdp_prog_id == prog_id]
    return found


def xdp_detach(prog_fd: int, prog_id: int, prefer: str | None = None) -> None:
    """Remove ``prog_id`` from every interface it is attached to, never anything else."""
    for att in xdp_find(prog_id, prefer):
        netlink.xdp_detach(att.iface.ifname, prog_fd, att.iface.xdp_mode or "generic", att.ns)
