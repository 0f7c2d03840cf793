"""ctypes binding over libbpf.so.1 (Debian's libbpf1, 1.1.x): the library and its signatures,
its log, and links. Objects (open, load, pin, attach) are ``bpfobject.LibbpfObject``.

libbpf does the ELF work (relocations, CO-RE, BTF, maps, global data); everything it lacks in 1.1
(tcx links, link update, queries) lives in ``bpf.py``. libbpf 1.x reports errors as ``-errno``
from int-returning calls and as ``NULL`` + ``errno`` from pointer-returning ones.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from reconciler.kernel.sys.libc import libc as _libc
from reconciler.kernel.types import KernelError

log = logging.getLogger("bpfman.libbpf")

LOG_BUF_SIZE = 1 << 20  # per-program verifier log; kernels >= 6.4 keep its tail if it overflows
_c = ctypes
_P = _c.c_void_p


def _load() -> ctypes.CDLL:
    try:
        return _c.CDLL("libbpf.so.1", use_errno=True)
    except OSError as e:
        raise KernelError("libbpf.so.1 not found: install libbpf1 (apt-get install libbpf1)") from e


lib = _load()
_libc.vsnprintf.argtypes = [_c.c_char_p, _c.c_size_t, _c.c_char_p, _P]
_libc.vsnprintf.restype = _c.c_int

# name: (restype, argtypes)
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "libbpf_major_version": (_c.c_uint32, []),
    "libbpf_minor_version": (_c.c_uint32, []),
    "bpf_object__open_file": (_P, [_c.c_char_p, _P]),
    "bpf_object__load": (_c.c_int, [_P]),
    "bpf_object__close": (None, [_P]),
    "bpf_object__next_program": (_P, [_P, _P]),
    "bpf_object__find_program_by_name": (_P, [_P, _c.c_char_p]),
    "bpf_object__next_map": (_P, [_P, _P]),
    "bpf_program__name": (_c.c_char_p, [_P]),
    "bpf_program__section_name": (_c.c_char_p, [_P]),
    "bpf_program__type": (_c.c_int, [_P]),
    "bpf_program__set_type": (_c.c_int, [_P, _c.c_int]),
    "bpf_program__set_expected_attach_type": (_c.c_int, [_P, _c.c_int]),
    "bpf_program__expected_attach_type": (_c.c_int, [_P]),
    "bpf_program__set_attach_target": (_c.c_int, [_P, _c.c_int, _c.c_char_p]),
    "bpf_program__set_autoload": (_c.c_int, [_P, _c.c_bool]),
    "bpf_program__set_log_buf": (_c.c_int, [_P, _P, _c.c_size_t]),
    "bpf_program__fd": (_c.c_int, [_P]),
    "bpf_program__pin": (_c.c_int, [_P, _c.c_char_p]),
    "bpf_program__attach_uprobe_opts": (_P, [_P, _c.c_int, _c.c_char_p, _c.c_size_t, _P]),
    "bpf_program__attach_kprobe_opts": (_P, [_P, _c.c_char_p, _P]),
    "bpf_program__attach_trace": (_P, [_P]),
    "bpf_map__name": (_c.c_char_p, [_P]),
    "bpf_map__type": (_c.c_int, [_P]),
    "bpf_map__key_size": (_c.c_uint32, [_P]),
    "bpf_map__value_size": (_c.c_uint32, [_P]),
    "bpf_map__max_entries": (_c.c_uint32, [_P]),
    "bpf_map__map_flags": (_c.c_uint32, [_P]),
    "bpf_map__set_pin_path": (_c.c_int, [_P, _c.c_char_p]),
    "bpf_map__initial_value": (_P, [_P, _c.POINTER(_c.c_size_t)]),
    "bpf_map__set_initial_value": (_c.c_int, [_P, _P, _c.c_size_t]),
    "bpf_map__fd": (_c.c_int, [_P]),
    "bpf_map__pin": (_c.c_int, [_P, _c.c_char_p]),
    "bpf_map__is_internal": (_c.c_bool, [_P]),
    "bpf_link__pin": (_c.c_int, [_P, _c.c_char_p]),
    "bpf_link__fd": (_c.c_int, [_P]),
    "bpf_link__disconnect": (None, [_P]),
    "bpf_link__destroy": (_c.c_int, [_P]),
    "bpf_object__btf": (_P, [_P]),
    "btf__load_vmlinux_btf": (_P, []),
    "btf__free": (None, [_P]),
    "btf__type_cnt": (_c.c_uint32, [_P]),
    "btf__find_by_name_kind": (_c.c_int, [_P, _c.c_char_p, _c.c_uint32]),
    "btf__type_by_id": (_P, [_P, _c.c_uint32]),
    "btf__name_by_offset": (_c.c_char_p, [_P, _c.c_uint32]),
}
for _name, (_res, _args) in _SIGNATURES.items():
    _fn = getattr(lib, _name)
    _fn.restype, _fn.argtypes = _res, _args


def version() -> tuple[int, int]:
    """(major, minor) of the libbpf.so.1 loaded (its behaviour, e.g. uprobe name matching,
    differs between versions)."""
    return int(lib.libbpf_major_version()), int(lib.libbpf_minor_version())


# --- libbpf's log ---------------------------------------------------------------------------------

_PRINT_FN = _c.CFUNCTYPE(_c.c_int, _c.c_int, _c.c_char_p, _P)
_tls = threading.local()


def _on_print(level: int, fmt: bytes, ap: int | None) -> int:
    if level > 1:  # LIBBPF_DEBUG: far too chatty to keep
        return 0
    buf = _c.create_string_buffer(4096)
    # va_list is an array type on x86-64 (a pointer when passed), so it can be handed on as is.
    _libc.vsnprintf(buf, len(buf), fmt, ap)
    text = buf.value.decode(errors="replace").rstrip("\n")
    sink = getattr(_tls, "sink", None)
    if sink is not None:
        sink.append(text)
    log.debug("%s", text)
    return 0


_print_callback = _PRINT_FN(_on_print)  # referenced for the life of the process
_NO_PRINT = _PRINT_FN()  # NULL: libbpf prints nothing
lib.libbpf_set_print.restype = _P
lib.libbpf_set_print.argtypes = [_PRINT_FN]
lib.libbpf_set_print(_print_callback)


@contextmanager
def quiet() -> Iterator[None]:
    """libbpf's printing off for the block, unless its messages are logged. libbpf prints a
    score of debug lines per object it opens, each a call into Python; a call that has no side
    effects can run quietly and, if it fails, again under ``capture`` to say why. (The print
    function is process-wide: only one thread of bpfman uses libbpf.)"""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    lib.libbpf_set_print(_NO_PRINT)
    try:
        yield
    finally:
        lib.libbpf_set_print(_print_callback)


@contextmanager
def capture() -> Iterator[collections.deque[str]]:
    """Collect libbpf's messages printed by this thread during the block."""
    previous = getattr(_tls, "sink", None)
    sink: collections.deque[str] = collections.deque(maxlen=100)
    _tls.sink = sink
    try:
        yield sink
    finally:
        _tls.sink = previous


def fail(what: str, err: int, messages: collections.deque[str] | None = None) -> KernelError:
    detail = ""
    if messages:
        lines = [m.removeprefix("libbpf: ") for m in list(messages)[-5:]]
        detail = "\n  libbpf: " + "\n  libbpf: ".join(lines)
    return KernelError(f"{what}: {os.strerror(err)}{detail}", errno=err)


def verifier_summary(log_text: str, max_lines: int = 20) -> str:
    """The last relevant lines of a verifier log (the error is at the end)."""
    noise = ("processed ", "verification time", "stack depth", "-- END PROG LOAD LOG")
    lines = [ln for ln in log_text.splitlines() if ln.strip() and not ln.startswith(noise)]
    return "\n".join(lines[-max_lines:])


@contextmanager
def new_perf_fds() -> Iterator[list[int]]:
    """Which perf-event fds the block opened (libbpf keeps them inside the link object and
    offers no getter). Assumes no other thread of this process opens perf events meanwhile."""
    # Compare targets, not just numbers: listdir's own directory fd shows up in the listing
    # and its number is free again (for the perf event) right after.
    before = _perf_event_fds()
    found: list[int] = []
    try:
        yield found
    finally:
        found += sorted(_perf_event_fds() - before)


def _perf_event_fds() -> set[int]:
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[perf_event]":
                out.add(int(name))
        except OSError:
            continue
    return out


class LibbpfLink:
    """A libbpf link: perf-event (tracepoint, uprobe, kprobe) or tracing (fentry, fexit)."""

    def __init__(self, ptr: int, perf_fds: list[int]) -> None:
        self._ptr: int | None = ptr
        self._perf_fds = perf_fds

    @property
    def fd(self) -> int:
        return int(lib.bpf_link__fd(self._ptr))

    def pin(self, path: str) -> None:
        with capture() as messages:
            ret = lib.bpf_link__pin(self._ptr, os.fsencode(path))
        if ret < 0:
            raise fail(f"cannot pin link at {path}", -ret, messages)

    def release(self, keep_fd: bool = False) -> int:
        """Drop our handles but keep the (pinned) attachment: bpf_link__destroy() would issue
        PERF_EVENT_IOC_DISABLE on the perf event first, so disconnect and close the fds here.
        With ``keep_fd`` the link's fd stays open and is returned (the caller closes it)."""
        if self._ptr is None:
            return -1
        fd = self.fd
        lib.bpf_link__disconnect(self._ptr)
        lib.bpf_link__destroy(self._ptr)  # after disconnect: frees memory only
        self._ptr = None
        for f in set(self._perf_fds) - {fd} if keep_fd else {fd, *self._perf_fds}:
            with suppress(OSError):
                os.close(f)
        return fd

    def destroy(self) -> None:
        """Detach now (if unpinned) and free."""
        if self._ptr is not None:
            lib.bpf_link__destroy(self._ptr)
            self._ptr = None
