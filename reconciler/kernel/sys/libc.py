"""The C library, for the calls ``os`` does not offer: syscall(2) (bpf, perf_event_open),
setns, mount, statfs and vsnprintf.

``dlopen(NULL)``: the process's own global symbols, the C library's among them, whatever its
file is called (glibc's libc.so.6, musl's). ``ctypes.util.find_library`` would run ldconfig in
a subprocess for every module that asked, milliseconds of start-up each.
"""

from __future__ import annotations

import ctypes

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
