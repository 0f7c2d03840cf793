"""perf_event_open(2) for tracepoints: the perf event a tracepoint program's link hangs on.

libbpf 1.1 keeps the perf event's fd inside its link object and offers no getter, so a link it
creates can only be released (kept attached through its pin) by finding that fd in
/proc/self/fd. For tracepoints bpfman opens the event itself, as libbpf would (pid -1, cpu 0:
the event is only a handle, the program runs wherever the tracepoint fires), and links the
program to it with BPF_LINK_CREATE: it holds both fds from the start.
"""

from __future__ import annotations

import ctypes
import os
import struct

from reconciler.kernel.sys.libc import libc as _libc

_NR_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241, "armv7l": 364, "ppc64le": 319, "s390x": 331}
_NR = _NR_PERF_EVENT_OPEN.get(os.uname().machine)
PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 1 << 3
# PERF_ATTR_SIZE_VER0: every kernel takes it, and type, size, config and the flags word are
# all a tracepoint event needs.
_ATTR_SIZE = 64
# The event is created disabled (the first flag bit). A tracepoint runs its BPF programs
# whether or not their perf events are enabled (the kernel calls the programs before it looks
# at the enabled events), but an enabled event joins CPU 0's scheduled events: every later
# perf_event_open reschedules all of them (installing N programs costs N²), and every hit of
# the tracepoint on CPU 0 counts into each. libbpf enables the event; bpfman never needs it.
_DISABLED = 1 << 0


def tracepoint_event(tp_id: int) -> int:
    """fd of a new perf event on the tracepoint whose tracefs id is ``tp_id``; OSError(errno)."""
    if _NR is None:
        raise OSError(38, f"perf_event_open(2) syscall number unknown for {os.uname().machine}")
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("=IIQ", attr, 0, PERF_TYPE_TRACEPOINT, _ATTR_SIZE, tp_id)
    struct.pack_into("=Q", attr, 40, _DISABLED)  # type@0 size@4 config@8 ... flags@40
    while True:
        fd = _libc.syscall(
            ctypes.c_long(_NR),
            attr,
            ctypes.c_int(-1),  # pid: any process
            ctypes.c_int(0),  # cpu
            ctypes.c_int(-1),  # group fd: none
            ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC),
        )
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err != 4:  # EINTR
            raise OSError(err, os.strerror(err))
