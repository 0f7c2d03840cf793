"""libxdp's multi-program protocol, dispatcher layout version 2 (xdp-tools 1.3): the config
struct, the bpffs layout and lock libxdp shares with us, and the bpf(2) calls freplace needs.

See docs/dispatchers.md. Layout facts come from libxdp's protocol description (protocol.org):
the dispatcher program is named ``xdp_dispatcher``, has exactly one map (its .rodata: key 4
bytes, one entry, read-only for programs) whose value is the config below; its components are
pinned as ``<bpffs>/xdp/dispatch-<ifindex>-<dispatcher id>/prog<N>-{prog,link}``; writers hold
flock(LOCK_EX) on the ``<bpffs>/xdp`` directory.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reconciler.kernel.sys import bpf, btfinfo, libbpf
from reconciler.kernel.types import MAX_DISPATCHER_SLOTS, KernelError
from reconciler.values import frozen

MAGIC = 236  # 'X' + 'D' + 'P'
VERSION = 2
CONTINUE_BIT = 31  # XDP_DISPATCHER_RETVAL: what an empty slot returns; always chained on
DISPATCHER_NAME = "xdp_dispatcher"
DEFAULT_PRIORITY = 50  # libxdp's default run priority
ACTIONS = {"aborted": 0, "drop": 1, "pass": 2, "tx": 3, "redirect": 4}
ACTIONS["dispatcher_return"] = CONTINUE_BIT
_CONFIG = struct.Struct(
    f"=BBBB{MAX_DISPATCHER_SLOTS}I{MAX_DISPATCHER_SLOTS}I{MAX_DISPATCHER_SLOTS}I"
)
CONFIG_SIZE = _CONFIG.size  # 124
OBJECT = Path(__file__).resolve().parent.parent / "dispatchers" / "xdp_dispatcher.o"

BTF_GET_FD_BY_ID = 19
BPF_F_RDONLY_PROG = 1 << 7


def action_bits(proceed_on: tuple[str, ...]) -> int:
    bits = 1 << CONTINUE_BIT
    for name in proceed_on:
        if name not in ACTIONS:
            known = ", ".join(ACTIONS)
            raise KernelError(f"unknown XDP proceed-on action {name!r}; known: {known}")
        bits |= 1 << ACTIONS[name]
    return bits


def action_names(bits: int) -> tuple[str, ...]:
    """The proceed-on names of a chain_call_actions bitmap (the always-set continue bit left
    out, as libxdp does)."""
    return tuple(n for n, b in ACTIONS.items() if b != CONTINUE_BIT and bits & (1 << b))


@frozen
class Config:
    num_progs_enabled: int
    chain_call_actions: tuple[int, ...]
    run_prios: tuple[int, ...]
    program_flags: tuple[int, ...] = (0,) * MAX_DISPATCHER_SLOTS
    is_xdp_frags: int = 0

    def pack(self) -> bytes:
        def pad(v: tuple[int, ...]) -> list[int]:
            return list(v) + [0] * (MAX_DISPATCHER_SLOTS - len(v))

        return _CONFIG.pack(
            MAGIC,
            VERSION,
            self.num_progs_enabled,
            self.is_xdp_frags,
            *pad(self.chain_call_actions),
            *pad(self.run_prios),
            *pad(self.program_flags),
        )

    @staticmethod
    def unpack(raw: bytes) -> Config:
        v = _CONFIG.unpack(raw[:CONFIG_SIZE])
        n, s = v[2], MAX_DISPATCHER_SLOTS
        return Config(
            n,
            tuple(v[4 : 4 + n]),
            tuple(v[4 + s : 4 + s + n]),
            tuple(v[4 + 2 * s : 4 + 2 * s + n]),
            v[3],
        )


# --- bpf(2) bits ------------------------------------------------------------------------------


_lib = (
    libbpf.lib
)  # btf__load_from_kernel_by_id's prototype is set up by reconciler.kernel.sys.btfinfo


def slot_btf_ids(dispatcher_fd: int) -> list[int]:
    """BTF type ids of prog0 ... prog9 in the loaded dispatcher's BTF (freplace link targets)."""
    btf_id = bpf.prog_btf_id(dispatcher_fd)
    handle = _lib.btf__load_from_kernel_by_id(btf_id) if btf_id else None
    if not handle:
        raise KernelError("the XDP dispatcher has no BTF; rebuild it with clang -g")
    try:
        ids = [
            _lib.btf__find_by_name_kind(handle, f"prog{i}".encode(), btfinfo.KIND_FUNC)
            for i in range(MAX_DISPATCHER_SLOTS)
        ]
    finally:
        _lib.btf__free(handle)
    if min(ids) <= 0:
        raise KernelError("the XDP dispatcher lacks slot functions prog0..prog9")
    return ids


def read_config(prog_fd: int) -> Config | None:
    """The config of a dispatcher (ours or libxdp's, version 2); None if the program is not a
    dispatcher of this protocol (libxdp then calls it a "legacy" program)."""
    info = bpf.prog_info(prog_fd)
    if info.name != DISPATCHER_NAME or len(info.map_ids) != 1:
        return None
    try:
        with bpf.opened(bpf.map_fd_by_id(info.map_ids[0])) as map_fd:
            m = bpf.map_info(map_fd)
            if m.key_size != 4 or m.max_entries != 1 or not m.flags & BPF_F_RDONLY_PROG:
                return None
            raw = bpf.map_lookup(map_fd, b"\0\0\0\0", m.value_size)
    except OSError:
        return None
    if m.value_size != CONFIG_SIZE or raw[0] != MAGIC:
        return None
    if raw[1] != VERSION:
        raise KernelError(
            f"the XDP dispatcher (program id {info.id}) speaks libxdp's protocol version "
            f"{raw[1]}; bpfman speaks version {VERSION} and will not replace it: unload its "
            "programs (xdp-loader unload) first"
        )
    return Config.unpack(raw)


# --- libxdp's bpffs layout and lock -----------------------------------------------------------


def libxdp_dir() -> Path:
    """Where libxdp pins dispatchers (LIBXDP_BPFFS overrides the bpffs mount, as in libxdp)."""
    return Path(os.environ.get("LIBXDP_BPFFS", "/sys/fs/bpf")) / "xdp"


def libxdp_pins(ifindex: int, dispatcher_id: int) -> Path:
    return libxdp_dir() / f"dispatch-{ifindex}-{dispatcher_id}"


@contextmanager
def libxdp_lock() -> Iterator[None]:
    """libxdp's lock: flock(LOCK_EX) on the <bpffs>/xdp directory."""
    d = libxdp_dir()
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
