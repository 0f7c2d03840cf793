"""Feature probes: can this kernel do X? Each returns a ``Probe`` (truthy if supported) with a
reason a plan can print ("tcx links need Linux 6.6+: ..."). Results are cached per process.

Probes load at most a two-instruction program and never attach anything.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from functools import cache

from reconciler.kernel import bpf
from reconciler.kernel.types import Probe

_PROG_LOAD = 5
# r0 = 0; exit
_RET0 = bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])


def _load_trivial(prog_type: int, expected_attach_type: int = 0) -> int:
    """BPF_PROG_LOAD of ``r0 = 0; exit``: prog_type@0 insn_cnt@4 insns@8 license@16
    expected_attach_type@68."""
    insns = ctypes.create_string_buffer(_RET0, len(_RET0))
    license_ = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(bpf.ATTR_SIZE)
    struct.pack_into("=IIQQ", attr, 0, prog_type, 2, ctypes.addressof(insns),
                     ctypes.addressof(license_))  # fmt: skip
    struct.pack_into("=I", attr, 68, expected_attach_type)
    return bpf.sys_bpf(_PROG_LOAD, attr)


@cache
def prog_type_supported(prog_type: int) -> Probe:
    """Whether programs of ``prog_type`` (a bpf.PROG_TYPE_* number) load at all."""
    name = bpf.PROG_TYPES[prog_type] if prog_type < len(bpf.PROG_TYPES) else str(prog_type)
    try:
        os.close(_load_trivial(prog_type))
    except OSError as e:
        if e.errno == errno.EPERM:
            return Probe(
                name, False, f"this kernel does not permit loading {name} programs (EPERM)"
            )
        return Probe(name, False, f"this kernel cannot load {name} programs ({e.strerror})")
    return Probe(name, True, f"{name} programs load")


@cache
def tcx_supported() -> Probe:
    """tcx (multi-program tc links with revisions), Linux 6.6+: a BPF_PROG_QUERY of the tcx
    ingress hook of lo succeeds only on kernels that know the attach type."""
    try:
        bpf.prog_query_tcx(1, bpf.TCX_INGRESS)  # ifindex 1 is lo in every namespace
    except OSError as e:
        if e.errno == errno.EPERM:
            return Probe("tcx", False, "querying tcx needs root (CAP_NET_ADMIN)")
        return Probe("tcx", False, f"tcx links need Linux 6.6+ ({e.strerror})")
    return Probe("tcx", True, "tcx links are supported")


@cache
def perf_link_supported() -> Probe:
    """bpf_link for perf events (tracepoints, uprobes, kprobes), Linux 5.15+: creating one with
    a bad perf-event fd fails with EBADF on kernels that support it, EINVAL otherwise."""
    try:
        prog_fd = _load_trivial(bpf.PROG_TYPE_TRACEPOINT)
    except OSError as e:
        return Probe("perf_link", False, f"cannot load a tracepoint program ({e.strerror})")
    try:
        attr = ctypes.create_string_buffer(bpf.ATTR_SIZE)
        struct.pack_into("=IiI", attr, 0, prog_fd, -1, bpf.ATTACH_PERF_EVENT)
        try:
            os.close(bpf.sys_bpf(bpf.LINK_CREATE, attr))
        except OSError as e:
            if e.errno == errno.EBADF:
                return Probe("perf_link", True, "perf-event links are supported")
            return Probe("perf_link", False, f"perf-event links need Linux 5.15+ ({e.strerror})")
        return Probe("perf_link", True, "perf-event links are supported")
    finally:
        os.close(prog_fd)


def bpf_link_supported(point_kind: str) -> Probe:
    """Whether the bpf_link kind an attach point kind needs exists ("tcx", "tracepoint",
    "uprobe"; "xdp" attaches over netlink and needs none)."""
    if point_kind == "tcx":
        return tcx_supported()
    if point_kind in ("tracepoint", "uprobe", "kprobe"):
        return perf_link_supported()
    if point_kind == "xdp":
        return Probe("xdp", True, "XDP attaches over netlink (no bpf_link needed)")
    return Probe(point_kind, False, f"no probe for {point_kind!r}")
