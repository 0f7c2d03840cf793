"""One opened BPF ELF object (libbpf's struct bpf_object): choose the program, set global data
and map pins, load, pin and attach."""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from reconciler.kernel.sys import bpf, libbpf
from reconciler.kernel.sys.libbpf import LibbpfLink, verifier_summary
from reconciler.kernel.types import KernelError, LoadNotPermitted, VerifierError

_lib = libbpf.lib


class _OpenOpts(ctypes.Structure):
    """Head of struct bpf_object_open_opts; ``sz`` tells libbpf where our copy ends."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("object_name", ctypes.c_char_p),
        ("relaxed_maps", ctypes.c_bool),
        ("pin_root_path", ctypes.c_char_p),
    ]


class _KprobeOpts(ctypes.Structure):
    """struct bpf_kprobe_opts as of libbpf 1.1 (sz, bpf_cookie, offset, retprobe): 32 bytes on
    64-bit. (libbpf 1.2 appends attach_mode; ``sz`` tells it our copy has none.)"""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("bpf_cookie", ctypes.c_uint64),
        ("offset", ctypes.c_size_t),
        ("retprobe", ctypes.c_bool),
    ]


class _UprobeOpts(ctypes.Structure):
    """struct bpf_uprobe_opts as of libbpf 1.1 (sz, ref_ctr_offset, bpf_cookie, retprobe,
    func_name): 40 bytes on 64-bit."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ref_ctr_offset", ctypes.c_size_t),
        ("bpf_cookie", ctypes.c_uint64),
        ("retprobe", ctypes.c_bool),
        ("func_name", ctypes.c_char_p),
    ]


_tls = threading.local()


def _log_buffer() -> ctypes.Array[ctypes.c_char]:
    """This thread's verifier log buffer, emptied. One per thread rather than one per load:
    zeroing a fresh megabyte costs more than most loads, and only a rejected load writes it."""
    buf: ctypes.Array[ctypes.c_char] | None = getattr(_tls, "log_buf", None)
    if buf is None:
        buf = _tls.log_buf = ctypes.create_string_buffer(libbpf.LOG_BUF_SIZE)
    buf[0] = b"\0"  # a load that fails before the verifier runs must not show an old log
    return buf


# --- objects ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedMap:
    name: str  # file-system safe: internal maps ("obj.rodata") become "rodata"
    kernel_name: str
    fd: int
    internal: bool


@dataclass(frozen=True)
class MapShape:
    """What makes a pinned map reusable by an object's map definition."""

    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int


@dataclass(frozen=True)
class MapDecl:
    """A map of an opened (not yet loaded) object."""

    ptr: int  # struct bpf_map *, valid while the object is open
    name: str  # libbpf's name ("obj.rodata" for global data)
    pin_name: str
    internal: bool
    shape: MapShape


def _pin_name(name: str, internal: bool) -> str:
    if internal and "." in name:
        # libbpf names global-data maps "<obj prefix>.rodata" (.data, .bss, .rodata.str1.1, ...)
        name = name[name.index(".") + 1 :]
    return name.replace("/", "_").replace(".", "_").lstrip("_") or "map"


class LibbpfObject:
    """One opened ELF object. Use as a context manager; closing frees every fd libbpf holds
    (pinned and attached objects live on in the kernel)."""

    def __init__(self, path: str, pin_root: str | None = None) -> None:
        self.path = path
        self._obj: int | None = None
        root = os.fsencode(pin_root) if pin_root else None
        # Maps declaring `pinning = LIBBPF_PIN_BY_NAME` are auto-pinned at load into pin_root
        # (default /sys/fs/bpf): point it at our own maps directory so nothing lands outside.
        opts = _OpenOpts(sz=ctypes.sizeof(_OpenOpts), pin_root_path=root)
        with libbpf.quiet():  # opening changes nothing: a failure is simply repeated, captured
            obj = _lib.bpf_object__open_file(os.fsencode(path), ctypes.byref(opts))
        if not obj:
            with libbpf.capture() as messages:
                obj = _lib.bpf_object__open_file(os.fsencode(path), ctypes.byref(opts))
                err = ctypes.get_errno() or 5  # NULL + errno; EIO if libbpf left errno unset
            if not obj:
                raise libbpf.fail(f"cannot open BPF object {path}", err, messages)
        self._obj = obj
        self._prog: int | None = None
        self._function = ""
        self._log_buf: ctypes.Array[ctypes.c_char] | None = None

    def __enter__(self) -> LibbpfObject:
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

    def select(
        self,
        function: str,
        prog_type: int,
        expected_attach_type: int | None = None,
        attach_target: str | None = None,
    ) -> None:
        """Choose ``function`` as the one program to load (every other one is left out), as
        ``prog_type``; ``attach_target`` names the kernel function of a fentry/fexit program."""
        prog = _lib.bpf_object__find_program_by_name(self._obj, function.encode())
        if not prog:
            names = ", ".join(self.program_names()) or "none"
            raise KernelError(
                f"function {function!r} not found in {self.path} (programs in it: {names}); "
                "fix the function name or rebuild the object"
            )
        for other in self._programs():
            _lib.bpf_program__set_autoload(other, other == prog)
        changed = _lib.bpf_program__type(prog) != prog_type
        if changed:
            _lib.bpf_program__set_type(prog, prog_type)
        # fentry and fexit share a program type and differ only in the expected attach type,
        # which the manifest's kind decides (whatever the section says).
        if expected_attach_type is not None and (changed or prog_type == bpf.PROG_TYPE_TRACING):
            _lib.bpf_program__set_expected_attach_type(prog, expected_attach_type)
        if attach_target is not None:
            # libbpf resolves the function's BTF id (vmlinux, then modules) right here, using
            # the expected attach type set above: it must come after that.
            with libbpf.capture() as messages:
                ret = _lib.bpf_program__set_attach_target(prog, 0, attach_target.encode())
            if ret < 0:
                if -ret in (errno.ESRCH, errno.ENOENT):
                    raise KernelError(
                        f"kernel function {attach_target} has no BTF on this kernel (not in "
                        "/sys/kernel/btf/vmlinux nor in a module's BTF), so fentry/fexit "
                        "cannot attach to it; check the name (e.g. `bpftool btf dump file "
                        "/sys/kernel/btf/vmlinux | grep FUNC`)"
                    )
                raise libbpf.fail(f"cannot target kernel function {attach_target}", -ret, messages)
        self._prog, self._function = prog, function

    def load(self) -> int:
        """Load the object with only the selected program; return the program's fd. Raises
        VerifierError with the verifier's log when the kernel rejects it."""
        assert self._prog is not None, "select() a program first"
        prog, function = self._prog, self._function
        # With a log buffer but log_level 0, libbpf loads without a log first and reloads with
        # log_level 1 into this buffer only if the kernel rejects the program.
        self._log_buf = _log_buffer()
        _lib.bpf_program__set_log_buf(prog, self._log_buf, libbpf.LOG_BUF_SIZE)
        with libbpf.capture() as messages:
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
                    errno=-ret,
                )
            if -ret in (errno.EPERM, errno.EACCES):
                failure = libbpf.fail(f"cannot load {where}", -ret, messages)
                raise LoadNotPermitted(str(failure), errno=-ret)
            raise libbpf.fail(f"cannot load {where}", -ret, messages)
        return int(_lib.bpf_program__fd(prog))

    def pin_program(self, path: str) -> None:
        with libbpf.capture() as messages:
            ret = _lib.bpf_program__pin(self._prog, os.fsencode(path))
        if ret < 0:
            raise libbpf.fail(f"cannot pin program at {path}", -ret, messages)

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

    def declared_maps(self) -> list[MapDecl]:
        """Every map of the opened object as libbpf will create it (before load)."""
        out = []
        m = _lib.bpf_object__next_map(self._obj, None)
        while m:
            name = _lib.bpf_map__name(m).decode()
            internal = bool(_lib.bpf_map__is_internal(m))
            out.append(
                MapDecl(
                    m,
                    name,
                    _pin_name(name, internal),
                    internal,
                    MapShape(
                        _lib.bpf_map__type(m),
                        _lib.bpf_map__key_size(m),
                        _lib.bpf_map__value_size(m),
                        _lib.bpf_map__max_entries(m),
                        _lib.bpf_map__map_flags(m),
                    ),
                )
            )
            m = _lib.bpf_object__next_map(self._obj, m)
        return out

    @staticmethod
    def set_pin_path(decl: MapDecl, path: str) -> None:
        """At load libbpf reuses the map pinned at ``path`` (checking it is compatible), or
        creates the map and pins it there."""
        ret = _lib.bpf_map__set_pin_path(decl.ptr, os.fsencode(path))
        if ret < 0:
            raise libbpf.fail(f"cannot set the pin path of map {decl.name} to {path}", -ret)

    def clear_pin_paths(self) -> None:
        """No map of this object is reused from, or pinned to, a path at load (libbpf gives
        maps declared with ``pinning = LIBBPF_PIN_BY_NAME`` one at open): for a dry run."""
        for decl in self.declared_maps():
            ret = _lib.bpf_map__set_pin_path(decl.ptr, None)
            if ret < 0:
                raise libbpf.fail(f"cannot clear the pin path of map {decl.name}", -ret)

    @staticmethod
    def initial_value(decl: MapDecl) -> bytes:
        """Initial contents of a global data map (.rodata, .data, .bss), before load."""
        size = ctypes.c_size_t(0)
        ptr = _lib.bpf_map__initial_value(decl.ptr, ctypes.byref(size))
        return ctypes.string_at(ptr, size.value) if ptr else b""

    @staticmethod
    def set_initial_value(decl: MapDecl, data: bytes) -> None:
        buf = ctypes.create_string_buffer(data, len(data))
        ret = _lib.bpf_map__set_initial_value(decl.ptr, buf, len(data))
        if ret < 0:
            raise libbpf.fail(f"cannot set the initial value of {decl.name}", -ret)

    def btf(self) -> int | None:
        """The object's own BTF (struct btf *, owned by the object), None without BTF."""
        return _lib.bpf_object__btf(self._obj) or None

    def pin_maps(self, directory: str, skip: frozenset[str] = frozenset()) -> list[str]:
        """Pin every map of the loaded object (but those named in ``skip``, which libbpf
        pinned elsewhere) as ``directory/<name>``; return the paths."""
        paths = []
        for m, info in self._maps():
            if info.kernel_name in skip:
                continue
            path = os.path.join(directory, info.name)
            with libbpf.capture() as messages:
                # A map auto-pinned at this very path (pinning = BY_NAME) reports success.
                ret = _lib.bpf_map__pin(m, os.fsencode(path))
            if ret < 0:
                raise libbpf.fail(f"cannot pin map {info.kernel_name} at {path}", -ret, messages)
            paths.append(path)
        return paths

    def attach_uprobe(
        self,
        target: str,
        func_name: str | None,
        offset: int,
        retprobe: bool,
        pid: int | None,
    ) -> LibbpfLink:
        opts = _UprobeOpts(
            sz=ctypes.sizeof(_UprobeOpts),
            retprobe=retprobe,
            func_name=func_name.encode() if func_name else None,
        )
        what = f"{'uretprobe' if retprobe else 'uprobe'} {target}:{func_name or hex(offset)}"
        with libbpf.capture() as messages, libbpf.new_perf_fds() as perf_fds:
            link = _lib.bpf_program__attach_uprobe_opts(
                self._prog,
                -1 if pid is None else pid,
                os.fsencode(target),
                offset,
                ctypes.byref(opts),
            )
            err = ctypes.get_errno()
        if not link:
            raise libbpf.fail(f"cannot attach {what}", err or 5, messages)
        return LibbpfLink(link, perf_fds)

    def attach_kprobe(self, func_name: str, offset: int, retprobe: bool) -> LibbpfLink:
        # libbpf 1.1 uses the kprobe PMU (perf_event_open) when the kernel has one, otherwise
        # a "legacy" kprobe_events entry in tracefs that only bpf_link__destroy removes: we
        # release links without destroying them, so the probes require the PMU (see probes.py).
        opts = _KprobeOpts(sz=ctypes.sizeof(_KprobeOpts), offset=offset, retprobe=retprobe)
        what = f"{'kretprobe' if retprobe else 'kprobe'} {func_name}+{offset:#x}"
        with libbpf.capture() as messages, libbpf.new_perf_fds() as perf_fds:
            link = _lib.bpf_program__attach_kprobe_opts(
                self._prog, func_name.encode(), ctypes.byref(opts)
            )
            err = ctypes.get_errno()
        if not link:
            raise libbpf.fail(f"cannot attach {what}", err or 5, messages)
        return LibbpfLink(link, perf_fds)

    def attach_trace(self, func_name: str) -> LibbpfLink:
        """Attach a fentry/fexit program to the kernel function chosen at select(): a tracing
        bpf_link (no perf event)."""
        with libbpf.capture() as messages:
            link = _lib.bpf_program__attach_trace(self._prog)
            err = ctypes.get_errno()
        if not link:
            raise libbpf.fail(f"cannot attach to kernel function {func_name}", err or 5, messages)
        return LibbpfLink(link, [])
