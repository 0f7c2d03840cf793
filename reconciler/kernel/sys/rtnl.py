"""Raw rtnetlink: one request on a fresh NETLINK_ROUTE socket, its answers as payloads.

Written against the kernel's uapi (linux/netlink.h, rtnetlink.h) rather than through pyroute2:
bpfman needs a handful of messages (links with their XDP attachment, clsact qdiscs, cls_bpf
filters), and pyroute2 costs 0.2 s to import on the host and over a second in an emulated VM,
more than everything else a reorder of an XDP hook does. The socket is opened in the caller's
network namespace (enter one with ``netns.enter`` first) and keeps it.
"""

from __future__ import annotations

import os
import socket
import struct

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK, NETLINK_EXT_ACK = 10, 11
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
NLM_F_ACK_TLVS = 0x200  # on an NLMSG_ERROR answer: extended-ack attributes follow
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 1 << 15

_HDR = struct.Struct("=IHHII")  # struct nlmsghdr


class NetlinkError(OSError):
    """The kernel refused a request: ``code`` (also ``errno``) its code, ``message`` (also
    ``strerror``) its extack message, or the code's name when it gave none."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


def nla(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def attrs(data: bytes) -> dict[int, bytes]:
    """The attributes of ``data`` by type (the nested flag cleared); the last of a type wins."""
    out, off = {}, 0
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, off)
        if length < 4:
            break
        out[kind & ~NLA_F_NESTED] = data[off + 4 : off + length]
        off += (length + 3) & ~3
    return out


def _error(payload: bytes, flags: int) -> NetlinkError | None:
    code = -struct.unpack_from("=i", payload, 0)[0]
    if not code:
        return None
    message = os.strerror(code)
    if flags & NLM_F_ACK_TLVS:
        # NETLINK_CAP_ACK: only the request's header is echoed, the attributes follow it.
        text = attrs(payload[4 + _HDR.size :]).get(NLMSGERR_ATTR_MSG)
        if text:
            message = text.rstrip(b"\0").decode(errors="replace")
    return NetlinkError(code, message)


def request(msg_type: int, flags: int, body: bytes) -> list[bytes]:
    """Send one request; return the payloads of the answers (a dump's messages). A refusal
    raises NetlinkError."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as s:
        s.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        s.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        s.bind((0, 0))
        s.send(_HDR.pack(_HDR.size + len(body), msg_type, flags, 1, 0) + body)
        out: list[bytes] = []
        while True:
            data = s.recv(1 << 16)
            off = 0
            while off + _HDR.size <= len(data):
                length, kind, mflags, _seq, _pid = _HDR.unpack_from(data, off)
                if length < _HDR.size:
                    break
                payload = data[off + _HDR.size : off + length]
                off += (length + 3) & ~3
                if kind == NLMSG_DONE:
                    # A dump the kernel could not finish says why here (an error code).
                    if len(payload) >= 4 and struct.unpack_from("=i", payload, 0)[0] < 0:
                        failure = _error(payload, mflags)
                        if failure is not None:
                            raise failure
                    return out
                if kind == NLMSG_ERROR:
                    failure = _error(payload, mflags)
                    if failure is not None:
                        raise failure
                    return out
                out.append(payload)
            if not flags & NLM_F_DUMP and not flags & NLM_F_ACK:
                return out
