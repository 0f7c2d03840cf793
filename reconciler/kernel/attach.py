"""Attach and detach, per kind of attach point: XDP over netlink, TCX as bpf links.

(Tracepoints and uprobes are perf-event links created by libbpf: see ``libbpf.BpfObject``.)
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from reconciler.kernel import bpf, netlink, netns
from reconciler.kernel.types import AttachConflict, KernelError, TcxPoint, XdpPoint

_ENOTSUPP = 524  # the kernel-internal "not supported" some bpf paths leak to user space


def _where(ns: str | None) -> str:
    return f" in network namespace {ns}" if ns else ""


def ifindex(ifname: str, ns: str | None) -> int:
    """ifindex of ``ifname`` in namespace ``ns`` (ioctl on a socket opened in that namespace)."""
    with netns.enter(ns):
        try:
            return socket.if_nametoindex(ifname)
        except OSError:
            raise KernelError(
                f"interface {ifname} does not exist{_where(ns)}; fix the interface name or "
                "create the interface first"
            ) from None


def interface_exists(ifname: str, ns: str | None) -> bool:
    try:
        ifindex(ifname, ns)
    except KernelError:
        return False
    return True


def prog_name(prog_id: int) -> str:
    """Name of a program by id ('?' if it vanished meanwhile)."""
    try:
        with bpf.opened(bpf.prog_fd_by_id(prog_id)) as fd:
            return bpf.prog_info(fd).name or "?"
    except OSError:
        return "?"


# --- XDP ------------------------------------------------------------------------------------------


def xdp_conflict(point: XdpPoint, prog_id: int, owner: str | None) -> AttachConflict:
    held = f"bpfman's {owner}" if owner else "a program bpfman does not manage"
    return AttachConflict(
        f"interface {point.ifname}{_where(point.netns)} already has XDP program id {prog_id} "
        f"({prog_name(prog_id)}) attached, {held}; detach it first (e.g. `ip link set dev "
        f"{point.ifname} xdp off` or `xdp-loader unload {point.ifname} --all`) or use another "
        "interface"
    )


def xdp_attach(point: XdpPoint, prog_fd: int, owner_of: Callable[[int], str | None]) -> str:
    """Attach without clobbering anything; return the mode used. ``owner_of`` names the pin dir
    of one of our own program ids (for the conflict message), None for a foreign one."""
    if point.mode not in ("auto", "native", "generic"):
        raise KernelError(f"XDP mode must be auto, native or generic, not {point.mode!r}")
    current = netlink.require(point.ifname, point.netns)
    if current.xdp_prog_id:
        raise xdp_conflict(point, current.xdp_prog_id, owner_of(current.xdp_prog_id))
    try:
        return netlink.xdp_attach(point.ifname, prog_fd, point.mode, point.netns)
    except netlink.NetlinkFailure as e:
        if e.errno in (errno.EBUSY, errno.EEXIST):  # someone attached between query and attach
            now = netlink.require(point.ifname, point.netns).xdp_prog_id
            if now:
                raise xdp_conflict(point, now, owner_of(now)) from e
        raise KernelError(
            f"cannot attach XDP to {point.ifname}{_where(point.netns)} "
            f"(mode {point.mode}): {e} ({os.strerror(e.errno)})"
        ) from e


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


# --- TCX ------------------------------------------------------------------------------------------


def tcx_attach_type(direction: str) -> int:
    if direction == "ingress":
        return bpf.TCX_INGRESS
    if direction == "egress":
        return bpf.TCX_EGRESS
    raise KernelError(f"tcx direction must be ingress or egress, not {direction!r}")


def tcx_create(prog_fd: int, point: TcxPoint, flags: int = 0, relative_fd: int = 0) -> int:
    """Create a tcx link at ``point``; ``flags``/``relative_fd`` place it (BPF_F_BEFORE or
    BPF_F_AFTER with BPF_F_LINK and a neighbour's link fd; 0 appends it last)."""
    atype = tcx_attach_type(point.direction)
    where = f"tcx {point.direction} of {point.ifname}{_where(point.netns)}"
    with netns.enter(point.netns):  # the ifindex is resolved in the caller's namespace
        idx = ifindex(point.ifname, None)
        for attempt in (1, 2):
            # expected_revision makes the kernel refuse (ESTALE) if the hook changed since we
            # looked, so a concurrent attach cannot make us land in the wrong position.
            revision = bpf.prog_query_tcx(idx, atype).revision
            try:
                return bpf.link_create_tcx(prog_fd, idx, atype, flags, relative_fd, revision)
            except OSError as e:
                if e.errno == errno.ESTALE and attempt == 1:
                    continue
                hint = {
                    errno.ESTALE: "the hook kept changing while we attached; retry",
                    errno.ENOENT: "the placement neighbour is not attached to this hook",
                    errno.ERANGE: "the placement neighbour is not attached to this hook",
                    errno.EINVAL: "this kernel may not support tcx (needs Linux 6.6+)",
                }.get(e.errno or 0, "")
                raise KernelError(
                    f"cannot attach to {where}: {e.strerror}" + (f" ({hint})" if hint else "")
                ) from e
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class TcxAttachment:
    ns: str | None
    ifname: str
    position: int  # index of the link in the hook's run order


def tcx_find(link: bpf.LinkInfo, prefer: str | None = None) -> TcxAttachment | None:
    """Where a tcx link is attached: the namespace whose hook lists its id. Its ifindex alone
    is ambiguous (ifindexes are per namespace); 0 means the device went away."""
    idx = link.detail.get("ifindex", 0)
    assert isinstance(idx, int)
    atype = tcx_attach_type(str(link.detail.get("attach_type", "")).removeprefix("tcx_"))
    if not idx:
        return None
    for ns in netns.all_known(prefer):
        try:
            with netns.enter(ns):
                ifname = socket.if_indextoname(idx)
                links = bpf.prog_query_tcx(idx, atype).link_ids
        except (OSError, KernelError):
            continue
        if link.id in links:
            return TcxAttachment(ns, ifname, links.index(link.id))
    return None


def link_detach(link_fd: int) -> None:
    """Detach a link now. Perf-event links cannot be detached this way (EOPNOTSUPP): they
    go when their last reference (pin or fd) does."""
    try:
        bpf.link_detach(link_fd)
    except OSError as e:
        # ENOLINK: already detached (defunct, e.g. its device went away).
        if e.errno not in (errno.EOPNOTSUPP, errno.ENOLINK, _ENOTSUPP):
            raise
