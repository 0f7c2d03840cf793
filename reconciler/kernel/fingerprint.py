"""A cheap digest of everything ``observe()`` reads, for the plan cache (reconciler/plancache.py):
when it is unchanged, and so are the manifests and the state file, the last plan still holds.

What it covers, and why that is enough:

- **The pins under the root**: every path with its inode number (from the directory entries, no
  stat per file). A pin names one kernel object for its whole life, so a program or map replaced,
  unpinned or pinned anew changes an inode or a name; staging leftovers of a killed apply show up
  as their ``%next`` directories.
- **Every pinned link's info** (type, id, program id and the per-type attach data): the one kind
  of object whose meaning can change in place, when someone detaches it (``BPF_LINK_DETACH``) or
  swaps its program (``BPF_LINK_UPDATE``). Links are the pins named ``link``, ``linkN`` or
  ``progN-link`` (pins.py, the dispatchers); maps directories are never opened.
- **Netlink, in the namespaces asked for** (those where records or manifests name interfaces):
  each interface's index, name and XDP attachment, and the TC filters on its clsact hooks, since
  XDP and TC attachments made through netlink hold no link, and ``ip link set ... xdp off`` or
  ``tc filter del`` change nothing under bpffs.

Counters (run counts, statistics) are never part of it. Reading it costs a directory walk, three
syscalls per link and two netlink dumps per interface in scope: no program is opened.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import struct
from collections.abc import Iterable

from reconciler.kernel.sys import bpf, netns, rtnl
from reconciler.kernel.sys.bpffs import MAPS
from reconciler.kernel.tc import netlink as tcnetlink

_LINK_INFO_SIZE = 128  # struct bpf_link_info up to the end of its per-type union
_RTM_GETLINK = 18
_IFLA_IFNAME, _IFLA_XDP = 3, 43
_IFLA_XDP_ATTACHED_AND_IDS = (2, 4, 5, 6, 7)  # attached mode, prog id, drv, skb, hw prog ids


def fingerprint(root: str, namespaces: Iterable[str | None] = ()) -> str:
    h = hashlib.sha256()
    _pins(root, h)
    for ns in sorted(set(namespaces), key=lambda n: n or ""):
        _netlink(ns, h)
    return h.hexdigest()


def _put(h: hashlib._Hash, *fields: object) -> None:
    # Length-prefixed: names in bpffs may hold any byte but "/" and NUL.
    for f in fields:
        b = f if isinstance(f, bytes) else str(f).encode(errors="surrogateescape")
        h.update(len(b).to_bytes(4, "little") + b)


def _pins(root: str, h: hashlib._Hash) -> None:
    out: list[str] = []  # one record per entry, hashed at once: a name holds no NUL
    links: list[str] = []
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            out.append(f"missing\0{d}")
            continue
        except NotADirectoryError:
            out.append(f"not a directory\0{d}")
            continue
        for e in entries:
            is_dir = e.is_dir(follow_symlinks=False)
            out.append(f"{e.path}\0{e.inode()}\0{int(is_dir)}")
            if is_dir:
                if e.name != MAPS:
                    stack.append(e.path)
            elif "link" in e.name:
                links.append(e.path)
    h.update("\n".join(out).encode(errors="surrogateescape"))
    for path in links:
        _put(h, path, _link_info(path))


def _link_info(path: str) -> bytes:
    try:
        fd = bpf.obj_get(path)
    except OSError as e:
        return f"unreadable {e.errno}".encode()
    try:
        buf = ctypes.create_string_buffer(_LINK_INFO_SIZE)
        attr = ctypes.create_string_buffer(bpf.ATTR_SIZE)
        struct.pack_into("=IIQ", attr, 0, fd, _LINK_INFO_SIZE, ctypes.addressof(buf))
        try:
            bpf.sys_bpf(bpf.OBJ_GET_INFO_BY_FD, attr)
        except OSError as e:
            return f"no info {e.errno}".encode()
        return buf.raw
    finally:
        os.close(fd)


def _netlink(ns: str | None, h: hashlib._Hash) -> None:
    _put(h, "netns", ns or "")
    try:
        if ns is not None:
            st = os.stat(ns)
            _put(h, st.st_dev, st.st_ino)
        with netns.enter(ns):
            links = rtnl.request(
                _RTM_GETLINK,
                rtnl.NLM_F_REQUEST | rtnl.NLM_F_DUMP,
                struct.pack("=BxHiII", 0, 0, 0, 0, 0),
            )
            for payload in links:
                ifindex = struct.unpack_from("=i", payload, 4)[0]
                attrs = rtnl.attrs(payload[16:])
                xdp = rtnl.attrs(attrs.get(_IFLA_XDP, b""))
                _put(h, ifindex, attrs.get(_IFLA_IFNAME, b""))
                for key in _IFLA_XDP_ATTACHED_AND_IDS:
                    _put(h, key, xdp.get(key, b""))
                for direction in ("ingress", "egress"):
                    for f in tcnetlink.filters(ifindex, direction):
                        _put(h, direction, repr(f))
    except Exception as e:  # noqa: BLE001 -- a namespace that is gone is a state like any other
        _put(h, "unreadable", type(e).__name__, str(e))
