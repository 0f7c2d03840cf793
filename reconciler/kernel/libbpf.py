"""ctypes binding over libbpf.so.1 (Debian's libbpf1, 1.1.x): open, load, pin and attach objects.

libbpf does the ELF work (relocations, CO-RE, BTF, maps, global data); everything it lacks in 1.1
(tcx links, link update, queries) lives in ``bpf.py``. libbpf 1.x reports errors as ``-errno``
from int-returning calls and as ``NULL`` + ``errno`` from pointer-returning ones.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from reconciler.kernel.types import KernelError, VerifierError

log = logging.getLogger("bpfman.libbpf")

_LOG_BUF_SIZE = 1 << 20  # per-program verifier log; kernels >= 6.4 keep its tail if it overflows
_c = ctypes
_P = _c.c_void_p


def _load() -> ctypes.CDLL:
    try:
        return _c.CDLL("libbpf.so.1", use_errno=True)
    except OSError as e:
        raise KernelError("libbpf.so.1 not found: install libbpf1 (apt-get install libbpf1)") from e


_lib = _load()
_libc = _c.CDLL(_c.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.vsnprintf.argtypes = [_c.c_char_p, _c.c_size_t, _c.c_char_p, _P]
_libc.vsnprintf.restype = _c.c_int

# name: (restype, argtypes)
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
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
    "bpf_program__set_autoload": (_c.c_int, [_P, _c.c_bool]),
    "bpf_program__set_log_buf": (_c.c_int, [_P, _P, _c.c_size_t]),
    "bpf_program__fd": (_c.c_int, [_P]),
    "bpf_program__pin": (_c.c_int, [_P, _c.c_char_p]),
    "bpf_program__attach_tracepoint": (_P, [_P, _c.c_char_p, _c.c_char_p]),
    "bpf_program__attach_uprobe_opts": (_P, [_P, _c.c_int, _c.c_char_p, _c.c_size_t, _P]),
    "bpf_map__name": (_c.c_char_p, [_P]),
    "bpf_map__fd": (_c.c_int, [_P]),
    "bpf_map__pin": (_c.c_int, [_P, _c.c_char_p]),
    "bpf_map__is_internal": (_c.c_bool, [_P]),
    "bpf_link__pin": (_c.c_int, [_P, _c.c_char_p]),
    "bpf_link__fd": (_c.c_int, [_P]),
    "bpf_link__disconnect": (None, [_P]),
    "bpf_link__destroy": (_c.c_int, [_P]),
}
for _name, (_res, _args) in _SIGNATURES.items():
    _fn = getattr(_lib, _name)
    _fn.restype, _fn.argtypes = _res, _args


class _OpenOpts(ctypes.Structure):
    """Head of struct bpf_object_open_opts; ``sz`` tells libbpf where our copy ends."""

    _fields_ = [
        ("sz", _c.c_size_t),
        ("object_name", _c.c_char_p),
        ("relaxed_maps", _c.c_bool),
        ("pin_root_path", _c.c_char_p),
    ]


class _UprobeOpts(ctypes.Structure):
    """struct bpf_uprobe_opts as of libbpf 1.1 (sz, ref_ctr_offset, bpf_cookie, retprobe,
    func_name): 40 bytes on 64-bit."""

    _fields_ = [
        ("sz", _c.c_size_t),
        ("ref_ctr_offset", _c.c_size_t),
        ("bpf_cookie", _c.c_uint64),
        ("retprobe", _c.c_bool),
        ("func_name", _c.c_char_p),
    ]


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
_lib.libbpf_set_print.restype = _P
_lib.libbpf_set_print.argtypes = [_PRINT_FN]
_lib.libbpf_set_print(_print_callback)


@contextmanager
def _capture() -> Iterator[collections.deque[str]]:
    """Collect libbpf's messages printed by this thread during the block."""
    previous = getattr(_tls, "sink", None)
    sink: collections.deque[str] = collections.deque(maxlen=100)
    _tls.sink = sink
    try:
        yield sink
    finally:
        _tls.sink = previous


def _fail(what: str, err: int, messages: collections.deque[str] | None = None) -> KernelError:
    detail = ""
    if messages:
        lines = [m.removeprefix("libbpf: ") for m in list(messages)[-5:]]
        detail = "\n  libbpf: " + "\n  libbpf: ".join(lines)
    return KernelError(f"{what}: {os.strerror(err)}{detail}")


def verifier_summary(log_text: str, max_lines: int = 20) -> str:
    """The last relevant lines of a verifier log (the error is at the end)."""
    noise = ("processed ", "verification time", "stack depth", "-- END PROG LOAD LOG")
    lines = [ln for ln in log_text.splitlines() if ln.strip() and not ln.startswith(noise)]
    return "\n".join(lines[-max_lines:])


# --- objects ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedMap:
    name: str  # file-system safe: internal maps ("obj.rodata") become "rodata"
    kernel_name: str
    fd: int
    internal: bool


def _pin_name(name: str, internal: bool) -> str:
    if internal and "." in name:
        # libbpf names global-data maps "<obj prefix>.rodata" (.data, .bss, .rodata.str1.1, ...)
        name = name[name.index(".") + 1 :]
    return name.replace("/", "_").replace(".", "_").lstrip("_") or "map"


class BpfObject:
    """One opened ELF object. Use as a context manager; closing frees every fd libbpf holds
    (pinned and attached objects live on in the kernel)."""

    def __init__(self, path: str, pin_root: str | None = None) -> None:
        self.path = path
        self._obj: int | None = None
        root = os.fsencode(pin_root) if pin_root else None
        # Maps declaring `pinning = LIBBPF_PIN_BY_NAME` are auto-pinned at load into pin_root
        # (default /sys/fs/bpf): point it at our own maps directory so nothing lands outside.
        opts = _OpenOpts(sz=_c.sizeof(_OpenOpts), pin_root_path=root)
        with _capture() as messages:
            obj = _lib.bpf_object__open_file(os.fsencode(path), _c.byref(opts))
            err = _c.get_errno() or 5  # NULL + errno; EIO if libbpf left errno unset
        if not obj:
            raise _fail(f"cannot open BPF object {path}", err, messages)
        self._obj = obj
        self._prog: int | None = None
        self._log_buf: ctypes.Array[ctypes.c_char] | None = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._obj:
            _lib.bpf_object__close(self._obj)
            self._obj = None

    def _programs(self) -> Iterator[int]:
        prog = _lib.bpf_object__next_program(self._obj, None)
        while prog:
            yield prog
            prog = _lib.bpf_object__next_program(self._obj, prog)

    def program_names(self) -> list[str]:
        return [_lib.bpf_program__name(p).decode() for p in self._programs()]

    def load(self, function: str, prog_type: int, expected_attach_type: int | None = None) -> int:
        """Load only ``function`` (every other program is left out) as ``prog_type``; return its
        fd. Raises VerifierError with the verifier's log when the kernel rejects it."""
        prog = _lib.bpf_object__find_program_by_name(self._obj, function.encode())
        if not prog:
            names = ", ".join(self.program_names()) or "none"
            raise KernelError(
                f"function {function!r} not found in {self.path} (programs in it: {names}); "
                "fix the function name or rebuild the object"
            )
        for other in self._programs():
            _lib.bpf_program__set_autoload(other, other == prog)
        if _lib.bpf_program__type(prog) != prog_type:
            _lib.bpf_program__set_type(prog, prog_type)
            if expected_attach_type is not None:
                _lib.bpf_program__set_expected_attach_type(prog, expected_attach_type)
        # With a log buffer but log_level 0, libbpf loads without a log first and reloads with
        # log_level 1 into this buffer only if the kernel rejects the program.
        self._log_buf = _c.create_string_buffer(_LOG_BUF_SIZE)
        _lib.bpf_program__set_log_buf(prog, self._log_buf, _LOG_BUF_SIZE)
        with _capture() as messages:
            ret = _lib.bpf_object__load(self._obj)
        if ret < 0:
            verifier_log = self._log_buf.value.decode(errors="replace")
            where = f"{function} from {self.path}"
            if verifier_log.strip():
                raise VerifierError(
                    f"the verifier rejected {where} ({os.strerror(-ret)}); fix the program and "
                    "rebuild it. Last lines of the verifier log:\n"
                    + verifier_summary(verifier_log),
                    verifier_log,
                )
            raise _fail(f"cannot load {where}", -ret, messages)
        self._prog = prog
        return int(_lib.bpf_program__fd(prog))

    def pin_program(self, path: str) -> None:
        with _capture() as messages:
            ret = _lib.bpf_program__pin(self._prog, os.fsencode(path))
        if ret < 0:
            raise _fail(f"cannot pin program at {path}", -ret, messages)

    def _maps(self) -> Iterator[tuple[int, LoadedMap]]:
        m = _lib.bpf_object__next_map(self._obj, None)
        while m:
            fd = _lib.bpf_map__fd(m)
            if fd >= 0:  # a map libbpf did not create (e.g. .kconfig unused) has no fd
                name = _lib.bpf_map__name(m).decode()
                internal = bool(_lib.bpf_map__is_internal(m))
                yield m, LoadedMap(_pin_name(name, internal), name, fd, internal)
            m = _lib.bpf_object__next_map(self._obj, m)

    def maps(self) -> list[LoadedMap]:
        return [info for _, info in self._maps()]

    def pin_maps(self, directory: str) -> list[str]:
        """Pin every map of the loaded object as ``directory/<name>``; return the paths."""
        paths = []
        for m, info in self._maps():
            path = os.path.join(directory, info.name)
            with _capture() as messages:
                # A map auto-pinned at this very path (pinning = BY_NAME) reports success.
                ret = _lib.bpf_map__pin(m, os.fsencode(path))
            if ret < 0:
                raise _fail(f"cannot pin map {info.kernel_name} at {path}", -ret, messages)
            paths.append(path)
        return paths

    def attach_tracepoint(self, group: str, name: str) -> Link:
        with _capture() as messages, _new_perf_fds() as perf_fds:
            link = _lib.bpf_program__attach_tracepoint(self._prog, group.encode(), name.encode())
            err = _c.get_errno()
        if not link:
            raise _fail(f"cannot attach to tracepoint {group}/{name}", err or 5, messages)
        return Link(link, perf_fds)

    def attach_uprobe(
        self,
        target: str,
        func_name: str | None,
        offset: int,
        retprobe: bool,
        pid: int | None,
    ) -> Link:
        opts = _UprobeOpts(
            sz=_c.sizeof(_UprobeOpts),
            retprobe=retprobe,
            func_name=func_name.encode() if func_name else None,
        )
        what = f"{'uretprobe' if retprobe else 'uprobe'} {target}:{func_name or hex(offset)}"
        with _capture() as messages, _new_perf_fds() as perf_fds:
            link = _lib.bpf_program__attach_uprobe_opts(
                self._prog, -1 if pid is None else pid, os.fsencode(target), offset, _c.byref(opts)
            )
            err = _c.get_errno()
        if not link:
            raise _fail(f"cannot attach {what}", err or 5, messages)
        return Link(link, perf_fds)


@contextmanager
def _new_perf_fds() -> Iterator[list[int]]:
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


class Link:
    """A libbpf perf-event link (tracepoint or uprobe)."""

    def __init__(self, ptr: int, perf_fds: list[int]) -> None:
        self._ptr: int | None = ptr
        self._perf_fds = perf_fds

    @property
    def fd(self) -> int:
        return int(_lib.bpf_link__fd(self._ptr))

    def pin(self, path: str) -> None:
        with _capture() as messages:
            ret = _lib.bpf_link__pin(self._ptr, os.fsencode(path))
        if ret < 0:
            raise _fail(f"cannot pin link at {path}", -ret, messages)

    def release(self) -> None:
        """Drop our handles but keep the (pinned) attachment: bpf_link__destroy() would issue
        PERF_EVENT_IOC_DISABLE on the perf event first, so disconnect and close the fds here."""
        if self._ptr is None:
            return
        fd = self.fd
        _lib.bpf_link__disconnect(self._ptr)
        _lib.bpf_link__destroy(self._ptr)  # after disconnect: frees memory only
        self._ptr = None
        for f in {fd, *self._perf_fds}:
            with suppress(OSError):
                os.close(f)

    def destroy(self) -> None:
        """Detach now (if unpinned) and free."""
        if self._ptr is not None:
            _lib.bpf_link__destroy(self._ptr)
            self._ptr = None
