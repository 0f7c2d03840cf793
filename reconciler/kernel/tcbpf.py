"""Raw bpf(2) calls the TC dispatcher needs beyond bpf.py: freplace links, walking links, reading
a map element, and a program's BTF (to name the slot a freplace link targets)."""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterator

from reconciler.kernel import bpf, btf, libbpf

MAP_LOOKUP_ELEM = 1
LINK_GET_NEXT_ID = 31

_lib = libbpf.lib
_lib.btf__load_from_kernel_by_id.restype = ctypes.c_void_p
_lib.btf__load_from_kernel_by_id.argtypes = [ctypes.c_uint32]


def link_create_freplace(prog_fd: int, target_fd: int, target_btf_id: int) -> int:
    """BPF_LINK_CREATE for an EXT program: prog_fd@0 target_fd@4 attach_type@8 (0: an EXT
    program's expected attach type) flags@12 target_btf_id@16 (the slot function in the target
    program's BTF)."""
    attr = bpf._attr()
    struct.pack_into("=IIIII", attr, 0, prog_fd, target_fd, 0, 0, target_btf_id)
    return bpf.sys_bpf(bpf.LINK_CREATE, attr)


def link_ids() -> Iterator[int]:
    attr = bpf._attr()
    start = 0
    while True:
        struct.pack_into("=I", attr, 0, start)
        try:
            bpf.sys_bpf(LINK_GET_NEXT_ID, attr)
        except OSError:
            return  # ENOENT: no more
        start = struct.unpack_from("=I", attr, 4)[0]
        yield start


def freplace_links_to(target_prog_id: int) -> list[bpf.LinkInfo]:
    """Every tracing link whose target object is ``target_prog_id`` (freplace links on it)."""
    out = []
    for lid in link_ids():
        try:
            with bpf.opened(bpf.link_fd_by_id(lid)) as fd:
                info = bpf.link_info(fd)
        except OSError:
            continue  # went away meanwhile
        if info.type == bpf.LINK_TYPE_TRACING and info.detail.get("target_obj_id") == (
            target_prog_id
        ):
            out.append(info)
    return out


def map_lookup(map_fd: int, key: bytes, value_size: int) -> bytes:
    """BPF_MAP_LOOKUP_ELEM: map_fd@0 key@8 value@16 flags@24."""
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value_size)
    attr = bpf._attr()
    struct.pack_into("=IxxxxQQQ", attr, 0, map_fd, ctypes.addressof(k), ctypes.addressof(v), 0)
    bpf.sys_bpf(MAP_LOOKUP_ELEM, attr)
    return v.raw


def prog_btf_id(prog_fd: int) -> int:
    """struct bpf_prog_info.btf_id (offset 128)."""
    buf = ctypes.create_string_buffer(256)
    attr = bpf._attr()
    struct.pack_into("=IIQ", attr, 0, prog_fd, ctypes.sizeof(buf), ctypes.addressof(buf))
    bpf.sys_bpf(bpf.OBJ_GET_INFO_BY_FD, attr)
    return int(struct.unpack_from("=I", buf, 128)[0])


def func_names(btf_obj_id: int) -> dict[int, str]:
    """BTF type id -> name of every FUNC in the kernel BTF object ``btf_obj_id``."""
    handle = _lib.btf__load_from_kernel_by_id(btf_obj_id)
    if not handle:
        return {}
    try:
        out = {}
        for type_id in range(1, _lib.btf__type_cnt(handle)):
            name, kind, _vlen, _ptr = btf._type(handle, type_id)
            if kind == btf.KIND_FUNC:
                out[type_id] = name
        return out
    finally:
        _lib.btf__free(handle)
