"""Raw bpf(2) for what libbpf 1.1 lacks (tcx links, link update, queries) or what we need directly.

Every command takes one zeroed ``union bpf_attr`` buffer. Layouts follow the kernel's
include/uapi/linux/bpf.h (6.6+ for tcx and the link-info unions); /usr/include/linux/bpf.h on the
project's hosts is older (6.1), so the offsets are written out here rather than read from it.
Errors are raised as ``OSError`` with the kernel's errno; callers turn them into KernelErrors.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from reconciler.kernel.sys.libc import libc as _libc

# bpf(2) syscall numbers per architecture.
_NR_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "ppc64le": 361, "s390x": 351}

# enum bpf_cmd
PROG_LOAD = 5
OBJ_PIN = 6
OBJ_GET = 7
PROG_GET_FD_BY_ID = 13
MAP_GET_FD_BY_ID = 14
OBJ_GET_INFO_BY_FD = 15
PROG_QUERY = 16
MAP_LOOKUP_ELEM = 1
BTF_LOAD = 18
LINK_CREATE = 28
LINK_UPDATE = 29
LINK_GET_FD_BY_ID = 30
LINK_DETACH = 34
LINK_GET_NEXT_ID = 31

# enum bpf_attach_type (the ones we use)
CGROUP_INET_INGRESS = 0
CGROUP_INET_EGRESS = 1
# cgroup_sock_addr hooks: the socket call they run in, by libbpf's section suffix.
CGROUP_SOCK_ADDR = {
    "bind4": 8,
    "bind6": 9,
    "connect4": 10,
    "connect6": 11,
    "sendmsg4": 14,
    "sendmsg6": 15,
    "recvmsg4": 19,
    "recvmsg6": 20,
    "getpeername4": 29,
    "getpeername6": 30,
    "getsockname4": 31,
    "getsockname6": 32,
}
TRACE_FENTRY = 24
TRACE_FEXIT = 25
ATTACH_XDP = 37
ATTACH_PERF_EVENT = 41
TCX_INGRESS = 46
TCX_EGRESS = 47

# Attach flags
F_REPLACE = 1 << 2
F_BEFORE = 1 << 3
F_AFTER = 1 << 4
F_ID = 1 << 5
F_LINK = 1 << 13  # relative_fd names a link, not a program

ATTR_SIZE = 256  # >= sizeof(union bpf_attr) on any kernel we know; the tail stays zero


def _words(text: str) -> list[str]:
    return text.split()


# In enum order: index = the kernel's number.
PROG_TYPES = _words(
    "unspec socket_filter kprobe sched_cls sched_act tracepoint xdp perf_event cgroup_skb "
    "cgroup_sock lwt_in lwt_out lwt_xmit sock_ops sk_skb cgroup_device sk_msg raw_tracepoint "
    "cgroup_sock_addr lwt_seg6local lirc_mode2 sk_reuseport flow_dissector cgroup_sysctl "
    "raw_tracepoint_writable cgroup_sockopt tracing struct_ops ext lsm sk_lookup syscall "
    "netfilter"
)
PROG_TYPE_KPROBE = 2
PROG_TYPE_SCHED_CLS = 3
PROG_TYPE_TRACEPOINT = 5
PROG_TYPE_XDP = 6
PROG_TYPE_CGROUP_SKB = 8
PROG_TYPE_CGROUP_SOCK_ADDR = 18
PROG_TYPE_TRACING = 26
PROG_TYPE_EXT = 28

# In enum order: index = the kernel's number.
MAP_TYPES = _words(
    "unspec hash array prog_array perf_event_array percpu_hash percpu_array stack_trace "
    "cgroup_array lru_hash lru_percpu_hash lpm_trie array_of_maps hash_of_maps devmap sockmap "
    "cpumap xskmap sockhash cgroup_storage reuseport_sockarray percpu_cgroup_storage queue "
    "stack sk_storage devmap_hash struct_ops ringbuf inode_storage task_storage bloom_filter "
    "user_ringbuf cgrp_storage arena"
)

# In enum order: index = the kernel's number.
LINK_TYPES = _words(
    "unspec raw_tracepoint tracing cgroup iter netns xdp perf_event kprobe_multi struct_ops "
    "netfilter tcx uprobe_multi netkit sockmap"
)
LINK_TYPE_TRACING = 2
LINK_TYPE_CGROUP = 3
LINK_TYPE_PERF_EVENT = 7
LINK_TYPE_TCX = 11

PERF_EVENT_TYPES = _words("unspec uprobe uretprobe kprobe kretprobe tracepoint event")

ATTACH_TYPE_NAMES = {ATTACH_XDP: "xdp", ATTACH_PERF_EVENT: "perf_event"}
ATTACH_TYPE_NAMES |= {TRACE_FENTRY: "trace_fentry", TRACE_FEXIT: "trace_fexit"}
ATTACH_TYPE_NAMES |= {TCX_INGRESS: "tcx_ingress", TCX_EGRESS: "tcx_egress"}
ATTACH_TYPE_NAMES |= {
    CGROUP_INET_INGRESS: "cgroup_inet_ingress",
    CGROUP_INET_EGRESS: "cgroup_inet_egress",
}


# bpftool's (libbpf's) names: cgroup_inet4_connect, cgroup_udp6_sendmsg, ...
def _split(hook: str) -> tuple[str, str]:
    return hook[:-1], hook[-1]  # "connect4" -> ("connect", "4")


ATTACH_TYPE_NAMES |= {
    number: f"cgroup_{'udp' if call in ('sendmsg', 'recvmsg') else 'inet'}{family}_{call}"
    for (call, family), number in ((_split(hook), n) for hook, n in CGROUP_SOCK_ADDR.items())
}


def _name(table: list[str], index: int) -> str:
    return table[index] if 0 <= index < len(table) else str(index)


def map_type_name(map_type: int) -> str:
    """The kernel's name of a map type, as bpftool prints it (``percpu_array``)."""
    return _name(MAP_TYPES, map_type)


def prog_type_name(prog_type: int) -> str:
    """The kernel's name of a program type, as bpftool prints it (``sched_cls``)."""
    return _name(PROG_TYPES, prog_type)


def _attr() -> ctypes.Array[ctypes.c_char]:
    return ctypes.create_string_buffer(ATTR_SIZE)


def _addr(buf: ctypes.Array[ctypes.c_char] | None) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


_NR = _NR_BPF.get(os.uname().machine)


def sys_bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    """bpf(cmd, attr, size); returns the result (often an fd) or raises OSError(errno)."""
    if _NR is None:
        raise OSError(38, f"bpf(2) syscall number unknown for {os.uname().machine}")
    while True:
        ret = _libc.syscall(
            ctypes.c_long(_NR), ctypes.c_int(cmd), attr, ctypes.c_uint(ctypes.sizeof(attr))
        )
        if ret >= 0:
            return int(ret)
        err = ctypes.get_errno()
        if err != 4:  # EINTR: e.g. a signal during a large PROG_LOAD; just retry
            raise OSError(err, os.strerror(err))


@contextmanager
def opened(fd: int) -> Iterator[int]:
    """Close an fd when the block ends."""
    try:
        yield fd
    finally:
        os.close(fd)


# --- pins ---------------------------------------------------------------------------------------


def obj_pin(fd: int, path: str) -> None:
    attr, p = _attr(), ctypes.create_string_buffer(os.fsencode(path))
    struct.pack_into("=QI", attr, 0, _addr(p), fd)
    sys_bpf(OBJ_PIN, attr)


def obj_get(path: str, flags: int = 0) -> int:
    """fd of the program, map or link pinned at ``path``."""
    attr, p = _attr(), ctypes.create_string_buffer(os.fsencode(path))
    struct.pack_into("=QII", attr, 0, _addr(p), 0, flags)
    return sys_bpf(OBJ_GET, attr)


def _fd_by_id(cmd: int, obj_id: int) -> int:
    attr = _attr()
    struct.pack_into("=I", attr, 0, obj_id)
    return sys_bpf(cmd, attr)


def prog_fd_by_id(prog_id: int) -> int:
    return _fd_by_id(PROG_GET_FD_BY_ID, prog_id)


def map_fd_by_id(map_id: int) -> int:
    return _fd_by_id(MAP_GET_FD_BY_ID, map_id)


def link_fd_by_id(link_id: int) -> int:
    return _fd_by_id(LINK_GET_FD_BY_ID, link_id)


# --- info ---------------------------------------------------------------------------------------


def _info(fd: int, buf: ctypes.Array[ctypes.c_char]) -> None:
    attr = _attr()
    struct.pack_into("=IIQ", attr, 0, fd, ctypes.sizeof(buf), _addr(buf))
    sys_bpf(OBJ_GET_INFO_BY_FD, attr)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


@dataclass(frozen=True)
class ProgInfo:
    id: int
    type: int
    name: str
    tag: str  # hex, as bpftool prints it
    jited_size: int
    xlated_size: int
    map_ids: tuple[int, ...]

    @property
    def type_name(self) -> str:
        return _name(PROG_TYPES, self.type)


_MAP_ID_ROOM = 64  # map ids asked for in the first OBJ_GET_INFO: one call for almost any program


def prog_info(fd: int) -> ProgInfo:
    """struct bpf_prog_info: type@0 id@4 tag[8]@8 jited_prog_len@16 xlated_prog_len@20
    nr_map_ids@52 map_ids@56 name[16]@64."""
    room = _MAP_ID_ROOM
    while True:
        ids = (ctypes.c_uint32 * room)()
        buf = ctypes.create_string_buffer(256)
        struct.pack_into("=I", buf, 52, room)
        struct.pack_into("=Q", buf, 56, ctypes.addressof(ids))
        _info(fd, buf)
        # The kernel says how many maps the program uses, and fills at most ``room`` of them.
        nr_maps = struct.unpack_from("=I", buf, 52)[0]
        if nr_maps <= room:
            break
        room = nr_maps
    ptype, pid = struct.unpack_from("=II", buf, 0)
    jited, xlated = struct.unpack_from("=II", buf, 16)
    return ProgInfo(
        id=pid,
        type=ptype,
        name=_cstr(buf.raw[64:80]),
        tag=buf.raw[8:16].hex(),
        jited_size=jited,
        xlated_size=xlated,
        map_ids=tuple(ids[:nr_maps]),
    )


@dataclass(frozen=True)
class MapRecord:
    id: int
    type: int
    name: str
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0

    @property
    def type_name(self) -> str:
        return _name(MAP_TYPES, self.type)


def map_info(fd: int) -> MapRecord:
    """struct bpf_map_info: type@0 id@4 key_size@8 value_size@12 max_entries@16 map_flags@20
    name[16]@24."""
    buf = ctypes.create_string_buffer(128)
    _info(fd, buf)
    mtype, mid, ksz, vsz, maxe, flags = struct.unpack_from("=IIIIII", buf, 0)
    return MapRecord(mid, mtype, _cstr(buf.raw[24:40]), ksz, vsz, maxe, flags)


@dataclass(frozen=True)
class LinkInfo:
    id: int
    type: int
    prog_id: int
    detail: dict[str, object] = field(default_factory=dict)

    @property
    def type_name(self) -> str:
        return _name(LINK_TYPES, self.type)


def link_info(fd: int, link_type: int | None = None) -> LinkInfo:
    """struct bpf_link_info: type@0 id@4 prog_id@8, then a per-type union at 16 (8-aligned).
    ``link_type``: the link's type when the caller knows it (it made the link), which saves
    asking twice.

    Kernels before 6.6 say nothing about perf-event links beyond type/id/prog_id (the detail
    then has ``perf_event_type`` "unspec")."""
    name = None
    buf = ctypes.create_string_buffer(128)
    ltype = _peek_link_type(fd) if link_type is None else link_type
    if ltype == LINK_TYPE_PERF_EVENT:
        # perf_event.{uprobe.file_name | kprobe.func_name | tracepoint.tp_name}@24 and
        # name_len@32 are in/out: both set (or both zero) or the kernel answers EINVAL.
        name = ctypes.create_string_buffer(4096)
        struct.pack_into("=QI", buf, 24, ctypes.addressof(name), ctypes.sizeof(name))
    _info(fd, buf)
    ltype, lid, prog_id = struct.unpack_from("=III", buf, 0)
    detail: dict[str, object] = {}
    if ltype == LINK_TYPE_TCX:
        ifindex, atype = struct.unpack_from("=II", buf, 16)
        detail = {"ifindex": ifindex, "attach_type": ATTACH_TYPE_NAMES.get(atype, str(atype))}
    elif ltype == LINK_TYPE_PERF_EVENT and name is not None:
        detail = _perf_event_detail(buf, name)
    elif ltype == LINK_TYPE_TRACING:
        # tracing: attach_type@16 target_obj_id@20 (the BTF object: vmlinux or a module, or the
        # target program for freplace) target_btf_id@24 (the function's BTF type id).
        atype, obj_id, btf_id = struct.unpack_from("=III", buf, 16)
        detail = {
            "attach_type": ATTACH_TYPE_NAMES.get(atype, str(atype)),
            "target_obj_id": obj_id,
            "target_btf_id": btf_id,
        }
    elif ltype == LINK_TYPE_CGROUP:
        # cgroup: cgroup_id@16 (u64; 0 once the cgroup is gone) attach_type@24.
        cgroup_id, atype = struct.unpack_from("=QI", buf, 16)
        detail = {
            "cgroup_id": cgroup_id,
            "attach_type": ATTACH_TYPE_NAMES.get(atype, str(atype)),
        }
    elif ltype == 6:  # xdp link: ifindex@16
        detail = {"ifindex": struct.unpack_from("=I", buf, 16)[0]}
    return LinkInfo(lid, ltype, prog_id, detail)


def _perf_event_detail(
    buf: ctypes.Array[ctypes.c_char], name: ctypes.Array[ctypes.c_char]
) -> dict[str, object]:
    """perf_event: type@16, then uprobe {file_name@24 name_len@32 offset@36} | kprobe
    {func_name@24 name_len@32 offset@36 addr@40} | tracepoint {tp_name@24 name_len@32}."""
    ename = _name(PERF_EVENT_TYPES, struct.unpack_from("=I", buf, 16)[0])
    detail: dict[str, object] = {"perf_event_type": ename}
    text = name.value.decode(errors="replace")
    if ename == "tracepoint":
        detail["tracepoint"] = text
    elif ename in ("uprobe", "uretprobe"):
        detail["file"] = text
        detail["offset"] = struct.unpack_from("=I", buf, 36)[0]
    elif ename in ("kprobe", "kretprobe"):
        detail["func"] = text
        detail["offset"] = struct.unpack_from("=I", buf, 36)[0]
        detail["retprobe"] = ename == "kretprobe"
        # addr is 0 unless kallsyms shows addresses to this caller (kptr_restrict).
        detail["addr"] = struct.unpack_from("=Q", buf, 40)[0]
    return detail


def _peek_link_type(fd: int) -> int:
    buf = ctypes.create_string_buffer(16)  # just type/id/prog_id: the kernel truncates the rest
    _info(fd, buf)
    return int(struct.unpack_from("=I", buf, 0)[0])


# --- tcx links ------------------------------------------------------------------------------------


def link_create_tcx(
    prog_fd: int,
    ifindex: int,
    attach_type: int,
    flags: int = 0,
    relative_fd: int = 0,
    expected_revision: int = 0,
) -> int:
    """BPF_LINK_CREATE for tcx: prog_fd@0 target_ifindex@4 attach_type@8 flags@12
    tcx.relative_fd@16 tcx.expected_revision@24 (0 = don't check)."""
    attr = _attr()
    struct.pack_into("=IIII", attr, 0, prog_fd, ifindex, attach_type, flags)
    struct.pack_into("=IxxxxQ", attr, 16, relative_fd, expected_revision)
    return sys_bpf(LINK_CREATE, attr)


def link_create_perf_event(prog_fd: int, perf_fd: int) -> int:
    """BPF_LINK_CREATE on a perf event (tracepoint, kprobe, uprobe): prog_fd@0 target_fd@4
    (the perf event) attach_type@8 (BPF_PERF_EVENT) flags@12 perf_event.bpf_cookie@16 (0)."""
    attr = _attr()
    struct.pack_into("=IIII", attr, 0, prog_fd, perf_fd, ATTACH_PERF_EVENT, 0)
    return sys_bpf(LINK_CREATE, attr)


def link_create_cgroup(prog_fd: int, cgroup_fd: int, attach_type: int) -> int:
    """BPF_LINK_CREATE on a cgroup: prog_fd@0 target_fd@4 (the cgroup directory) attach_type@8
    flags@12 (0: a multi-program attachment, as every cgroup link is)."""
    attr = _attr()
    struct.pack_into("=IIII", attr, 0, prog_fd, cgroup_fd, attach_type, 0)
    return sys_bpf(LINK_CREATE, attr)


def link_update(link_fd: int, new_prog_fd: int, old_prog_fd: int | None = None) -> None:
    """Swap a link's program atomically; with ``old_prog_fd`` only if it still runs that one.
    Layout: link_fd@0 new_prog_fd@4 flags@8 old_prog_fd@12."""
    attr = _attr()
    flags = F_REPLACE if old_prog_fd is not None else 0
    struct.pack_into("=IIII", attr, 0, link_fd, new_prog_fd, flags, old_prog_fd or 0)
    sys_bpf(LINK_UPDATE, attr)


def link_detach(link_fd: int) -> None:
    """Detach a link from its hook now (the link object lives on, defunct, until released)."""
    attr = _attr()
    struct.pack_into("=I", attr, 0, link_fd)
    sys_bpf(LINK_DETACH, attr)


@dataclass(frozen=True)
class TcxQuery:
    prog_ids: tuple[int, ...]  # in run order
    link_ids: tuple[int, ...]  # parallel to prog_ids; 0 for a program attached without a link
    revision: int


def prog_query_tcx(ifindex: int, attach_type: int) -> TcxQuery:
    """BPF_PROG_QUERY on a tcx hook: target_ifindex@0 attach_type@4 query_flags@8
    attach_flags@12 prog_ids@16 count@24 prog_attach_flags@32 link_ids@40
    link_attach_flags@48 revision@56."""
    room = 64
    while True:
        progs, links = (ctypes.c_uint32 * room)(), (ctypes.c_uint32 * room)()
        attr = _attr()
        struct.pack_into("=II", attr, 0, ifindex, attach_type)
        struct.pack_into("=QI", attr, 16, ctypes.addressof(progs), room)
        struct.pack_into("=Q", attr, 40, ctypes.addressof(links))
        try:
            sys_bpf(PROG_QUERY, attr)
        except OSError as e:
            if e.errno == 28 and room < 65536:  # ENOSPC: more programs than room; ask again
                room *= 4
                continue
            raise
        count = struct.unpack_from("=I", attr, 24)[0]
        revision = struct.unpack_from("=Q", attr, 56)[0]
        return TcxQuery(tuple(progs[:count]), tuple(links[:count]), revision)


def tcx_query_prog_ids_in_netns(netns_path: str | None, ifname: str, direction: str) -> list[int]:
    """Program ids on an interface's tcx hook (``direction``: ingress | egress), in run order,
    queried inside network namespace ``netns_path`` (for tools and tests: bpftool < 7.3 cannot
    list tcx programs)."""
    import socket

    from reconciler.kernel.sys import netns

    attach_type = {"ingress": TCX_INGRESS, "egress": TCX_EGRESS}[direction]
    with netns.enter(netns_path):
        return list(prog_query_tcx(socket.if_nametoindex(ifname), attach_type).prog_ids)


# --- freplace (extension programs on dispatcher slots) -------------------------------------------


def prog_btf_id(prog_fd: int) -> int:
    """struct bpf_prog_info.btf_id (offset 128): the BTF object of a loaded program."""
    buf = ctypes.create_string_buffer(256)
    attr = _attr()
    struct.pack_into("=IIQ", attr, 0, prog_fd, ctypes.sizeof(buf), ctypes.addressof(buf))
    sys_bpf(OBJ_GET_INFO_BY_FD, attr)
    return int(struct.unpack_from("=I", buf, 128)[0])


def map_lookup(map_fd: int, key: bytes, value_size: int) -> bytes:
    """BPF_MAP_LOOKUP_ELEM: map_fd@0 key@8 value@16 flags@24."""
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value_size)
    attr = _attr()
    struct.pack_into("=IxxxxQQQ", attr, 0, map_fd, ctypes.addressof(k), ctypes.addressof(v), 0)
    sys_bpf(MAP_LOOKUP_ELEM, attr)
    return v.raw


def link_create_freplace(prog_fd: int, target_fd: int, target_btf_id: int) -> int:
    """BPF_LINK_CREATE for an extension program: prog_fd@0 target_fd@4 attach_type@8 (0: an EXT
    program's expected attach type) flags@12 target_btf_id@16 (the slot function in the target
    program's BTF). One program may be linked to several targets at once (5.10+): that is how a
    dispatcher component keeps its id across dispatcher revisions."""
    attr = _attr()
    struct.pack_into("=IIIII", attr, 0, prog_fd, target_fd, 0, 0, target_btf_id)
    return sys_bpf(LINK_CREATE, attr)


def link_ids() -> Iterator[int]:
    """Every bpf_link id on the system (BPF_LINK_GET_NEXT_ID)."""
    attr = _attr()
    start = 0
    while True:
        struct.pack_into("=I", attr, 0, start)
        try:
            sys_bpf(LINK_GET_NEXT_ID, attr)
        except OSError:
            return  # ENOENT: no more
        start = struct.unpack_from("=I", attr, 4)[0]
        yield start


def freplace_links_to(target_prog_id: int) -> list[LinkInfo]:
    """Every tracing link whose target object is ``target_prog_id`` (freplace links on it)."""
    out = []
    for lid in link_ids():
        try:
            with opened(link_fd_by_id(lid)) as fd:
                info = link_info(fd)
        except OSError:
            continue  # went away meanwhile
        if info.type == LINK_TYPE_TRACING and info.detail.get("target_obj_id") == target_prog_id:
            out.append(info)
    return out
