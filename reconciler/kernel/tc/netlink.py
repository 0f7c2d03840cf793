"""Raw rtnetlink for the TC dispatcher: the clsact qdisc and cls_bpf filters.

Written against the kernel's uapi (linux/pkt_sched.h, pkt_cls.h) on ``sys.rtnl``; pyroute2's
cls_bpf decoder (0.9) does not know TCA_BPF_ID, the id of the program a filter runs, which is
the one fact the dispatcher needs from a dump. Every call runs in the caller's network
namespace (enter one with ``netns.enter`` first).
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

from reconciler.kernel.sys import rtnl
from reconciler.kernel.sys.rtnl import (
    NLA_F_NESTED,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NetlinkError,
    nla,
    request,
)

RTM_NEWQDISC, RTM_DELQDISC, RTM_GETQDISC = 36, 37, 38
RTM_NEWTFILTER, RTM_DELTFILTER, RTM_GETTFILTER = 44, 45, 46
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_BPF_FD, TCA_BPF_NAME, TCA_BPF_FLAGS, TCA_BPF_ID = 6, 7, 8, 11
TCA_BPF_FLAG_ACT_DIRECT = 1
ETH_P_ALL = 0x0003

TC_H_CLSACT = 0xFFFFFFF1
CLSACT_HANDLE = 0xFFFF0000
PARENTS = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}  # TC_H_MAKE(TC_H_CLSACT, MIN_*)


@dataclass(frozen=True)
class Filter:
    pref: int
    handle: int
    protocol: int
    kind: str
    prog_id: int | None  # cls_bpf: the program it runs
    name: str | None
    flags: int | None = None  # cls_bpf: TCA_BPF_FLAGS (TCA_BPF_FLAG_ACT_DIRECT: direct-action)


def _tcmsg(ifindex: int, handle: int, parent: int, info: int) -> bytes:
    return struct.pack("=BxxxiIII", socket.AF_UNSPEC, ifindex, handle, parent, info)


def has_clsact(ifindex: int) -> bool:
    for payload in request(RTM_GETQDISC, NLM_F_REQUEST | NLM_F_DUMP, _tcmsg(0, 0, 0, 0)):
        idx, _handle, parent = struct.unpack_from("=iII", payload, 4)
        kind = rtnl.attrs(payload[20:]).get(TCA_KIND, b"").rstrip(b"\0")
        if idx == ifindex and parent == TC_H_CLSACT and kind == b"clsact":
            return True
    return False


def add_clsact(ifindex: int) -> bool:
    """Create the clsact qdisc; False if one is there already (it is left alone)."""
    body = _tcmsg(ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0) + nla(TCA_KIND, b"clsact\0")
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    try:
        request(RTM_NEWQDISC, flags, body)
    except NetlinkError as e:
        if e.errno == errno.EEXIST:
            return False
        raise
    return True


def del_clsact(ifindex: int) -> None:
    body = _tcmsg(ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0) + nla(TCA_KIND, b"clsact\0")
    request(RTM_DELQDISC, NLM_F_REQUEST | NLM_F_ACK, body)


def filters(ifindex: int, direction: str) -> list[Filter]:
    """Every filter on the clsact hook (one entry per filter; chain heads are skipped)."""
    body = _tcmsg(ifindex, 0, PARENTS[direction], 0)
    try:
        answers = request(RTM_GETTFILTER, NLM_F_REQUEST | NLM_F_DUMP, body)
    except NetlinkError as e:
        if e.errno == errno.EINVAL:  # no clsact qdisc: no filters
            return []
        raise
    out = []
    for payload in answers:
        handle, _parent, info = struct.unpack_from("=III", payload, 8)
        attrs = rtnl.attrs(payload[20:])
        if not handle:
            continue  # the (pref, protocol) chain itself, not a filter
        kind = attrs.get(TCA_KIND, b"").rstrip(b"\0").decode()
        opts = rtnl.attrs(attrs.get(TCA_OPTIONS, b""))
        prog_id = struct.unpack("=I", opts[TCA_BPF_ID])[0] if TCA_BPF_ID in opts else None
        name = opts[TCA_BPF_NAME].rstrip(b"\0").decode() if TCA_BPF_NAME in opts else None
        protocol = socket.ntohs(info & 0xFFFF)
        flags = struct.unpack("=I", opts[TCA_BPF_FLAGS])[0] if TCA_BPF_FLAGS in opts else None
        out.append(Filter(info >> 16, handle, protocol, kind, prog_id, name, flags))
    return out


def replace_bpf_filter(
    ifindex: int, direction: str, pref: int, handle: int, prog_fd: int, name: str
) -> None:
    """Create the direct-action cls_bpf filter (pref, handle), or swap the program of the one
    there in place: RTM_NEWTFILTER with NLM_F_CREATE | NLM_F_REPLACE. cls_bpf publishes the new
    program with one RCU pointer replacement, so every packet runs either the old program or
    the new one, and there is never a second filter."""
    info = (pref << 16) | socket.htons(ETH_P_ALL)
    opts = nla(TCA_BPF_FD, struct.pack("=I", prog_fd))
    opts += nla(TCA_BPF_NAME, name.encode() + b"\0")
    opts += nla(TCA_BPF_FLAGS, struct.pack("=I", TCA_BPF_FLAG_ACT_DIRECT))
    body = _tcmsg(ifindex, handle, PARENTS[direction], info) + nla(TCA_KIND, b"bpf\0")
    body += nla(TCA_OPTIONS | NLA_F_NESTED, opts)
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    request(RTM_NEWTFILTER, flags, body)


def del_filter(ifindex: int, direction: str, pref: int, handle: int) -> None:
    info = (pref << 16) | socket.htons(ETH_P_ALL)
    body = _tcmsg(ifindex, handle, PARENTS[direction], info) + nla(TCA_KIND, b"bpf\0")
    request(RTM_DELTFILTER, NLM_F_REQUEST | NLM_F_ACK, body)


# --- our place on a clsact hook ---------------------------------------------------------

PREF = 50  # our filter's priority on the clsact hook (tc "pref")
HANDLE = 0xB7F  # our filter's handle


def our_filter(ifindex: int, direction: str) -> Filter | None:
    """The filter at our pref and handle on a hook of the current namespace (whoever put it
    there): the TC dispatcher, or a program attached directly (tcdirect) sit at the same place."""
    found = filters(ifindex, direction)
    return next((f for f in found if f.pref == PREF and f.handle == HANDLE), None)
