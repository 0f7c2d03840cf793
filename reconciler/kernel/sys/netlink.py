"""Interfaces and netlink XDP attachment (IFLA_XDP), on raw rtnetlink (``sys.rtnl``).

Single-program XDP is attached with netlink, never as a bpf_link, so that libxdp's dispatcher
and ``xdp-loader`` see (and can take turns with) what we attach. The kernel gives netlink XDP a
compare-and-swap: ``XDP_FLAGS_UPDATE_IF_NOEXIST`` refuses to clobber an attached program, and
``XDP_FLAGS_REPLACE`` + ``IFLA_XDP_EXPECTED_FD`` swaps (or removes, with fd -1) a program only if
the one attached is the one we expect.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

from reconciler.kernel.sys import netns, rtnl
from reconciler.kernel.types import KernelError

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_REPLACE = 1 << 4

MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}
RTM_GETLINK, RTM_SETLINK = 18, 19
IFLA_IFNAME, IFLA_XDP = 3, 43
IFLA_XDP_FD, IFLA_XDP_ATTACHED, IFLA_XDP_FLAGS = 1, 2, 3
IFLA_XDP_PROG_ID, IFLA_XDP_DRV_PROG_ID, IFLA_XDP_EXPECTED_FD = 4, 5, 8
# IFLA_XDP_ATTACHED (XDP_ATTACHED_DRV, _SKB, _HW, _MULTI) -> our mode names
_ATTACHED = {1: "native", 2: "generic", 3: "offload", 4: "multi"}


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


def _ifinfomsg(ifindex: int) -> bytes:
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, ifindex, 0, 0)


def _interface(payload: bytes) -> Interface:
    ifindex = struct.unpack_from("=i", payload, 4)[0]
    attrs = rtnl.attrs(payload[16:])
    name = attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(errors="replace")
    prog_id, mode = None, None
    xdp = rtnl.attrs(attrs.get(IFLA_XDP, b""))
    attached = _ATTACHED.get(_u(xdp, IFLA_XDP_ATTACHED, "=B") or 0)
    if attached == "multi":
        # Several modes at once (only offload + native is possible): report native.
        prog_id, mode = _u(xdp, IFLA_XDP_DRV_PROG_ID, "=I"), "native"
    elif attached:
        prog_id, mode = _u(xdp, IFLA_XDP_PROG_ID, "=I"), attached
    return Interface(ifindex, name, prog_id, mode)


def _u(attrs: dict[int, bytes], kind: int, fmt: str) -> int | None:
    raw = attrs.get(kind)
    return struct.unpack_from(fmt, raw)[0] if raw and len(raw) >= struct.calcsize(fmt) else None


def interfaces(ns: str | None = None) -> list[Interface]:
    """Every interface of the namespace with its XDP program (one netlink dump)."""
    with netns.enter(ns):
        try:
            answers = rtnl.request(RTM_GETLINK, rtnl.NLM_F_REQUEST | rtnl.NLM_F_DUMP, _ifinfomsg(0))
        except rtnl.NetlinkError as e:
            raise NetlinkFailure(f"cannot list interfaces: {e.message}", e.code) from e
    return [_interface(p) for p in answers]


def _lookup(ifname: str) -> Interface | None:
    """``ifname`` in the current namespace; None if there is none of that name."""
    body = _ifinfomsg(0) + rtnl.nla(IFLA_IFNAME, ifname.encode() + b"\0")
    try:
        answers = rtnl.request(RTM_GETLINK, rtnl.NLM_F_REQUEST, body)
    except rtnl.NetlinkError as e:
        if e.errno == errno.ENODEV:
            return None
        raise NetlinkFailure(f"cannot look up interface {ifname}: {e.message}", e.code) from e
    return _interface(answers[0]) if answers else None


def interface(ifname: str, ns: str | None = None) -> Interface | None:
    with netns.enter(ns):
        return _lookup(ifname)


def require(ifname: str, ns: str | None) -> Interface:
    found = interface(ifname, ns)
    if found is None:
        where = f" in network namespace {ns}" if ns else ""
        raise KernelError(
            f"interface {ifname} does not exist{where}; fix the interface name or create it"
        )
    return found


def _set_xdp(ifindex: int, fd: int, flags: int, expected_fd: int | None) -> None:
    xdp = rtnl.nla(IFLA_XDP_FD, struct.pack("=i", fd))
    xdp += rtnl.nla(IFLA_XDP_FLAGS, struct.pack("=I", flags))
    if expected_fd is not None:
        xdp += rtnl.nla(IFLA_XDP_EXPECTED_FD, struct.pack("=i", expected_fd))
    body = _ifinfomsg(ifindex) + rtnl.nla(IFLA_XDP | rtnl.NLA_F_NESTED, xdp)
    try:
        rtnl.request(RTM_SETLINK, rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK, body)
    except rtnl.NetlinkError as e:
        raise NetlinkFailure(e.message, e.code) from e


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
    with netns.enter(ns):
        found = _lookup(ifname)
        if found is None:
            raise KernelError(f"interface {ifname} does not exist")
        for i, m in enumerate(modes):
            try:
                _set_xdp(found.ifindex, prog_fd, base | MODE_FLAGS[m], expected)
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
    with netns.enter(ns):
        found = _lookup(ifname)
        if found is None:
            return False
        try:
            _set_xdp(found.ifindex, -1, XDP_FLAGS_REPLACE | MODE_FLAGS[mode], expected_fd)
        except NetlinkFailure as e:
            if e.errno in (errno.EEXIST, errno.ENOENT, errno.ENODEV):
                return False
            raise
        return True
