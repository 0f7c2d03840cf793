"""Interfaces by name in a network namespace, program names by id, and detaching a bpf link:
the small lookups every attach kind needs."""

from __future__ import annotations

import errno
import socket

from reconciler.kernel.sys import bpf, netns
from reconciler.kernel.types import KernelError

_ENOTSUPP = 524  # the kernel-internal "not supported" some bpf paths leak to user space


def where(ns: str | None) -> str:
    return f" in network namespace {ns}" if ns else ""


def no_interface(ifname: str, ns: str | None) -> KernelError:
    return KernelError(
        f"interface {ifname} does not exist{where(ns)}; fix the interface name or "
        "create the interface first"
    )


def ifindex(ifname: str, ns: str | None) -> int:
    """ifindex of ``ifname`` in namespace ``ns`` (ioctl on a socket opened in that namespace)."""
    with netns.enter(ns):
        try:
            return socket.if_nametoindex(ifname)
        except OSError:
            raise no_interface(ifname, ns) from None


def has_interface(ifname: str, ns: str | None) -> bool:
    """Whether namespace ``ns`` has ``ifname``; a namespace that cannot be entered is an error."""
    with netns.enter(ns):
        try:
            socket.if_nametoindex(ifname)
        except OSError:
            return False
    return True


def names(ns: str | None) -> list[str]:
    """Names of the interfaces of namespace ``ns``, sorted (if_nameindex(3) on a socket opened
    there: no netlink library to import, which a plan that touches no interface never needs)."""
    with netns.enter(ns):
        return sorted(name for _index, name in socket.if_nameindex())


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


def link_detach(link_fd: int) -> None:
    """Detach a link now. Perf-event links cannot be detached this way (EOPNOTSUPP): they
    go when their last reference (pin or fd) does."""
    try:
        bpf.link_detach(link_fd)
    except OSError as e:
        # ENOLINK: already detached (defunct, e.g. its device went away).
        if e.errno not in (errno.EOPNOTSUPP, errno.ENOLINK, _ENOTSUPP):
            raise
