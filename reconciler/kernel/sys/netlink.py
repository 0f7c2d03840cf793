"""Interfaces and netlink XDP attachment (IFLA_XDP), via pyroute2.

Single-program XDP is attached with netlink, never as a bpf_link, so that libxdp's dispatcher
and ``xdp-loader`` see (and can take turns with) what we attach. The kernel gives netlink XDP a
compare-and-swap: ``XDP_FLAGS_UPDATE_IF_NOEXIST`` refuses to clobber an attached program, and
``XDP_FLAGS_REPLACE`` + ``IFLA_XDP_EXPECTED_FD`` swaps (or removes, with fd -1) a program only if
the one attached is the one we expect.

pyroute2 is slow to import (~0.2 s), so it is imported inside the functions that need it.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from reconciler.kernel.sys import netns
from reconciler.kernel.types import KernelError

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_REPLACE = 1 << 4

MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}
# IFLA_XDP_ATTACHED as pyroute2 decodes it -> our mode names
_ATTACHED = {"xdp": "native", "xdpgeneric": "generic", "xdpoffload": "offload", "xdpmulti": "multi"}


@dataclass(frozen=True)
class Interface:
    ifindex: int
    ifname: str
    xdp_prog_id: int | None = None
    xdp_mode: str | None = None  # native | generic | offload


class NetlinkFailure(KernelError):
    """A netlink request failed; ``errno`` is the kernel's code, the message its extack text."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, errno=code)
        self.code = code

    @property
    def errno(self) -> int:
        return self.code


@contextmanager
def _route(ns: str | None) -> Iterator[Any]:
    """An rtnetlink socket opened (and so bound) inside namespace ``ns``."""
    from pyroute2 import IPRoute

    with netns.enter(ns):
        ipr = IPRoute(ext_ack=True)
        try:
            yield ipr
        finally:
            ipr.close()


def _interface(msg: Any) -> Interface:
    prog_id, mode = None, None
    xdp = msg.get_attr("IFLA_XDP")
    if xdp is not None:
        attached = _ATTACHED.get(xdp.get_attr("IFLA_XDP_ATTACHED") or "")
        if attached == "multi":
            # Several modes at once (only offload + native is possible): report native.
            prog_id, mode = xdp.get_attr("IFLA_XDP_DRV_PROG_ID"), "native"
        elif attached:
            prog_id, mode = xdp.get_attr("IFLA_XDP_PROG_ID"), attached
    return Interface(msg["index"], msg.get_attr("IFLA_IFNAME"), prog_id, mode)


def interfaces(ns: str | None = None) -> list[Interface]:
    """Every interface of the namespace with its XDP program (one netlink dump)."""
    from pyroute2.netlink.exceptions import NetlinkError

    with _route(ns) as ipr:
        try:
            return [_interface(m) for m in ipr.get_links()]
        except NetlinkError as e:
            raise NetlinkFailure(f"cannot list interfaces: {e}", e.code) from e


def _lookup(ipr: Any, ifname: str) -> Any | None:
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        msgs = ipr.get_links(ifname=ifname)
    except NetlinkError as e:
        if e.code == errno.ENODEV:
            return None
        raise
    return msgs[0] if msgs else None


def interface(ifname: str, ns: str | None = None) -> Interface | None:
    with _route(ns) as ipr:
        msg = _lookup(ipr, ifname)
        return _interface(msg) if msg is not None else None


def require(ifname: str, ns: str | None) -> Interface:
    found = interface(ifname, ns)
    if found is None:
        where = f" in network namespace {ns}" if ns else ""
        raise KernelError(
            f"interface {ifname} does not exist{where}; fix the interface name or create it"
        )
    return found


def _set_xdp(ipr: Any, ifindex: int, fd: int, flags: int, expected_fd: int | None) -> None:
    from pyroute2.netlink.exceptions import NetlinkError

    attrs: list[tuple[str, int]] = [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", flags)]
    if expected_fd is not None:
        attrs.append(("IFLA_XDP_EXPECTED_FD", expected_fd))
    try:
        ipr.link("set", index=ifindex, xdp={"attrs": attrs})
    except NetlinkError as e:
        raise NetlinkFailure(str(e.args[1] if len(e.args) > 1 else e), e.code) from e


def xdp_attach(
    ifname: str, prog_fd: int, mode: str, ns: str | None = None, replace_fd: int | None = None
) -> str:
    """Attach ``prog_fd`` to ``ifname``; return the mode used (native | generic).

    Without ``replace_fd`` the attach fails (NetlinkFailure EBUSY/EEXIST) if any program is
    attached. With it the swap is atomic and fails (EEXIST) unless ``replace_fd``'s program is
    the one attached. ``mode`` "auto" tries native then generic (a driver without XDP support
    answers EOPNOTSUPP; veth may refuse native XDP with EINVAL, e.g. for a too large MTU).
    """
    modes = ["native", "generic"] if mode == "auto" else [mode]
    if replace_fd is None:
        base, expected = XDP_FLAGS_UPDATE_IF_NOEXIST, None
    else:
        base, expected = XDP_FLAGS_REPLACE, replace_fd
    with _route(ns) as ipr:
        found = _lookup(ipr, ifname)
        if found is None:
            raise KernelError(f"interface {ifname} does not exist")
        ifindex = found["index"]
        for i, m in enumerate(modes):
            try:
                _set_xdp(ipr, ifindex, prog_fd, base | MODE_FLAGS[m], expected)
                return m
            except NetlinkFailure as e:
                # EBUSY: a program is attached in this mode. EEXIST: one is attached in the other
                # mode, or (with REPLACE) the attached program is not the expected one.
                if e.errno in (errno.EBUSY, errno.EEXIST) or i == len(modes) - 1:
                    raise
    raise AssertionError("unreachable")


def xdp_detach(ifname: str, expected_fd: int, mode: str, ns: str | None = None) -> bool:
    """Remove the XDP program from ``ifname`` only if it is ``expected_fd``'s program.
    Returns False (and changes nothing) if another program, or none, is attached."""
    with _route(ns) as ipr:
        found = _lookup(ipr, ifname)
        if found is None:
            return False
        try:
            _set_xdp(ipr, found["index"], -1, XDP_FLAGS_REPLACE | MODE_FLAGS[mode], expected_fd)
        except NetlinkFailure as e:
            if e.errno in (errno.EEXIST, errno.ENOENT, errno.ENODEV):
                return False
            raise
        return True
