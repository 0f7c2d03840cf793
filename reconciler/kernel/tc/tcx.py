"""TCX: BPF_LINK_CREATE on a device's tcx hook, placed relative to a neighbour link, and
finding where a tcx link is attached."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from reconciler.kernel.sys import bpf, netns
from reconciler.kernel.sys.ifaces import ifindex
from reconciler.kernel.sys.ifaces import where as _where
from reconciler.kernel.types import KernelError, TcxPoint


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


class TcxHooks:
    """The tcx hooks looked at during one observation, each queried once however many of our
    links are on it (and the namespaces to look in, listed once)."""

    def __init__(self) -> None:
        self._namespaces: dict[str | None, list[str | None]] = {}
        self._hooks: dict[tuple[str | None, int, int], tuple[str, tuple[int, ...]] | None] = {}

    def namespaces(self, prefer: str | None) -> list[str | None]:
        if prefer not in self._namespaces:
            self._namespaces[prefer] = netns.all_known(prefer)
        return self._namespaces[prefer]

    def links(self, ns: str | None, idx: int, atype: int) -> tuple[str, tuple[int, ...]] | None:
        """(ifname, link ids in run order) of hook ``atype`` of ``idx`` in ``ns``; None when
        that namespace has no such device (or cannot be entered)."""
        key = (ns, idx, atype)
        if key not in self._hooks:
            try:
                with netns.enter(ns):
                    ifname = socket.if_indextoname(idx)
                    self._hooks[key] = (ifname, bpf.prog_query_tcx(idx, atype).link_ids)
            except (OSError, KernelError):
                self._hooks[key] = None
        return self._hooks[key]


def tcx_find(
    link: bpf.LinkInfo, prefer: str | None = None, hooks: TcxHooks | None = None
) -> TcxAttachment | None:
    """Where a tcx link is attached: the namespace whose hook lists its id. Its ifindex alone
    is ambiguous (ifindexes are per namespace); 0 means the device went away. ``hooks``: what
    an observation already asked (a fresh query otherwise)."""
    idx = link.detail.get("ifindex", 0)
    assert isinstance(idx, int)
    atype = tcx_attach_type(str(link.detail.get("attach_type", "")).removeprefix("tcx_"))
    if not idx:
        return None
    hooks = hooks or TcxHooks()
    for ns in hooks.namespaces(prefer):
        found = hooks.links(ns, idx, atype)
        if found is not None and link.id in found[1]:
            return TcxAttachment(ns, found[0], found[1].index(link.id))
    return None
