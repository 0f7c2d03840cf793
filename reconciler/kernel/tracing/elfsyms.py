"""The symbols of a uprobe target (an executable or shared library of this machine), read the way
libbpf resolves ``func_name`` when it attaches a uprobe, so that a plan can say before anything
is loaded whether apply would find the function.

What libbpf does (``elf_find_func_offset``; libbpf.c in 1.1/1.2, elf.c from 1.3):
- it searches ``.dynsym`` first, then ``.symtab`` (a stripped binary has only the first, a static
  one only the second), and stops at the first table that yields an offset above 0;
- only ``STT_FUNC`` symbols match: a GNU indirect function (``STT_GNU_IFUNC``, e.g. glibc's
  ``strlen``) is never found by name, nor is data;
- ``foo`` matches a symbol named ``foo`` or ``foo@...``; a name with a version is matched
  literally against the symbol names before 1.3 (``.dynsym`` names carry no version there, so
  ``malloc@@GLIBC_2.2.5`` finds nothing in a stripped libc), and against the version definitions
  (``.gnu.version_d``) of ``.dynsym`` from 1.3 on;
- two matching non-weak symbols in one table are "ambiguous" (from 1.3: only at different
  offsets); a weak one gives way to a non-weak one;
- the offset is ``st_value - sh_addr + sh_offset`` of the symbol's section; 0 means not found.

Reading is bounded: the file is opened through ``files.open_regular`` (so a FIFO, device or
directory is refused before it is opened for reading), the header and section headers are read
with seeks, symbol tables in chunks and their names through a small page cache: a large binary is
never read whole.
"""

from __future__ import annotations

import difflib
import os
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from reconciler import files
from reconciler.values import frozen

_MAGIC = b"\x7fELF"
ET_REL, ET_EXEC, ET_DYN, ET_CORE = 1, 2, 3, 4
SHT_SYMTAB, SHT_DYNSYM = 2, 11
SHT_GNU_VERDEF, SHT_GNU_VERSYM = 0x6FFFFFFD, 0x6FFFFFFF
STT_OBJECT, STT_FUNC, STT_TLS, STT_GNU_IFUNC = 1, 2, 6, 10
STB_WEAK = 2
_SHN_UNDEF, _SHN_XINDEX = 0, 0xFFFF
_VERSYM_VERSION = 0x7FFF

# Bounds: more section headers than this, or a symbol table larger than this, is not a binary
# anyone probes (a corrupt header claims it); names longer than this are cut.
MAX_SECTIONS = 1 << 16
MAX_SYMBOL_TABLE = 256 * 1024 * 1024
MAX_NAME = 64 * 1024
MAX_NEAR_CANDIDATES = 200_000
_CHUNK = 1 << 20

# ELF e_machine values, named as an error message should name them.
MACHINES = {
    0: "machine-independent",
    2: "SPARC",
    3: "x86 (i386)",
    8: "MIPS",
    20: "PowerPC",
    21: "PowerPC64",
    22: "s390",
    40: "ARM",
    43: "SPARC64",
    50: "IA-64",
    62: "x86-64",
    183: "AArch64",
    243: "RISC-V",
    247: "eBPF",
    258: "LoongArch",
}
# os.uname().machine -> the e_machine of the binaries this machine runs.
_HOST_MACHINE = {
    "x86_64": 62,
    "i686": 3,
    "i386": 3,
    "aarch64": 183,
    "armv7l": 40,
    "riscv64": 243,
    "s390x": 22,
    "ppc64le": 21,
    "ppc64": 21,
    "loongarch64": 258,
}
_TYPES = {
    ET_REL: "a relocatable object file (ET_REL, e.g. a .o)",
    ET_CORE: "a core dump (ET_CORE)",
}
_SYMBOL_TYPES = {
    0: "a symbol without a type (STT_NOTYPE)",
    STT_OBJECT: "a data object (STT_OBJECT), not a function",
    3: "a section symbol (STT_SECTION), not a function",
    4: "a file symbol (STT_FILE), not a function",
    5: "a common data object (STT_COMMON), not a function",
    STT_TLS: "thread-local data (STT_TLS), not a function",
    STT_GNU_IFUNC: (
        "a GNU indirect function (STT_GNU_IFUNC), which libbpf does not resolve by name: probe "
        "one of its implementations (e.g. __NAME_avx2) or give spec.offset"
    ),
}


class TargetError(Exception):
    """The target is not something a uprobe can be set on; the message is a reason that follows
    the path, e.g. ``is a FIFO (named pipe), not a regular file``."""


@frozen
class Lookup:
    """Where libbpf would find a function, or why it would not."""

    name: str
    offset: int | None  # the file offset libbpf would probe; None: not found
    problem: str | None = None  # why not, when it is known (data, ifunc, imported, ambiguous)
    near: tuple[str, ...] = ()  # defined function names close to the one asked for (printable)
    stripped: bool = False  # the file has no .symtab (only the exported .dynsym)

    @property
    def found(self) -> bool:
        return self.offset is not None


@frozen
class _Section:
    type: int
    addr: int
    offset: int
    size: int
    link: int
    entsize: int


@dataclass
class _Symbol:
    index: int
    name: bytes
    type: int
    bind: int
    shndx: int
    value: int


def host_class() -> int:
    return 2 if sys.maxsize > 2**32 else 1


def describe_machine(machine: int) -> str:
    return machine_name(machine)


def libbpf_version() -> tuple[int, int]:
    """The version of the libbpf bpfman attaches with (its name matching changed in 1.3)."""
    from reconciler.kernel.sys import libbpf

    return libbpf.version()


class ElfFile:
    """An opened ELF executable or shared library of this machine. Use as a context manager."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._f: BinaryIO = files.open_regular(path)
        except FileNotFoundError:
            raise TargetError("does not exist") from None
        except files.NotReadable as e:
            raise TargetError(str(e)) from None
        except PermissionError:
            raise TargetError("cannot be read (permission denied)") from None
        except OSError as e:
            raise TargetError(f"cannot be opened ({e.strerror or e})") from None
        try:
            self.size = os.fstat(self._f.fileno()).st_size
            self._header()
        except BaseException:
            self._f.close()
            raise
        self._sections: list[_Section] | None = None

    def __enter__(self) -> ElfFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    # --- reading --------------------------------------------------------------------------

    def _read(self, offset: int, size: int, what: str) -> bytes:
        self._within(offset, size, what)
        self._f.seek(offset)
        data = self._f.read(size)
        if len(data) != size:
            raise TargetError(f"is a truncated ELF file: it ended while reading its {what}")
        return data

    def _within(self, offset: int, size: int, what: str) -> None:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise TargetError(
                f"is a truncated or corrupt ELF file: its {what} at bytes "
                f"{offset}..{offset + size} lies beyond its end ({self.size} bytes)"
            )

    def _header(self) -> None:
        self._f.seek(0)
        head = self._f.read(64)
        if head[:4] != _MAGIC:
            if not head:
                raise TargetError("is an empty file, not an ELF executable or library")
            if head.startswith(b"#!"):
                raise TargetError(
                    "is a script (it starts with #!), not an ELF executable or library: probe "
                    "its interpreter, or the binary it runs"
                )
            raise TargetError("is not an ELF executable or library (no ELF magic number)")
        if len(head) < 20:
            raise TargetError(f"is a truncated ELF file ({len(head)} bytes)")
        cls, data = head[4], head[5]
        if cls not in (1, 2) or data not in (1, 2):
            raise TargetError(f"is a corrupt ELF file (class {cls}, byte order {data})")
        self.elf_class = cls
        self.order = "<" if data == 1 else ">"
        host_order = 1 if sys.byteorder == "little" else 2
        if data != host_order:
            raise TargetError(
                f"is a {'little' if data == 1 else 'big'}-endian ELF file; this machine is "
                f"{sys.byteorder}-endian and cannot run it"
            )
        if cls != host_class():
            raise TargetError(
                f"is a {32 if cls == 1 else 64}-bit ELF file; this machine runs "
                f"{32 if host_class() == 1 else 64}-bit binaries"
            )
        self.type, self.machine = struct.unpack_from(self.order + "HH", head, 16)
        host_machine = _HOST_MACHINE.get(os.uname().machine)
        if host_machine is not None and self.machine != host_machine:
            raise TargetError(
                f"is an ELF file for {describe_machine(self.machine)}; this machine "
                f"({os.uname().machine}) runs {describe_machine(host_machine)} binaries"
            )
        if self.type not in (ET_EXEC, ET_DYN):
            what = _TYPES.get(self.type, f"an ELF file of type {self.type}")
            raise TargetError(f"is {what}, not an executable or shared library")
        need = 64 if cls == 2 else 52
        if len(head) < need:
            raise TargetError(f"is a truncated ELF file ({len(head)} of {need} header bytes)")
        if cls == 2:
            (self._shoff,) = struct.unpack_from(self.order + "Q", head, 40)
            self._shentsize, self._shnum, self._shstrndx = struct.unpack_from(
                self.order + "HHH", head, 58
            )
        else:
            (self._shoff,) = struct.unpack_from(self.order + "I", head, 32)
            self._shentsize, self._shnum, self._shstrndx = struct.unpack_from(
                self.order + "HHH", head, 46
            )

    def sections(self) -> list[_Section]:
        if self._sections is not None:
            return self._sections
        if self._shoff == 0:
            raise TargetError(
                "has no section headers, so its symbols cannot be read; give spec.offset "
                "instead of func_name"
            )
        size = 64 if self.elf_class == 2 else 40
        if self._shentsize != size:
            raise TargetError(
                f"is a corrupt ELF file: section header size {self._shentsize}, not {size}"
            )
        count = self._shnum
        if count == 0:  # 0xff00 sections or more: the count is in section 0's size
            count = self._section(self._read(self._shoff, size, "section header table")).size
        if count > MAX_SECTIONS:
            raise TargetError(f"is a corrupt ELF file: it claims {count} sections")
        raw = self._read(self._shoff, count * size, f"section header table ({count} entries)")
        self._sections = [self._section(raw[i * size : (i + 1) * size]) for i in range(count)]
        return self._sections

    def _section(self, raw: bytes) -> _Section:
        if self.elf_class == 2:
            _n, kind, _fl, addr, off, size, link, _info, _al, ent = struct.unpack(
                self.order + "IIQQQQIIQQ", raw
            )
        else:
            _n, kind, _fl, addr, off, size, link, _info, _al, ent = struct.unpack(
                self.order + "IIIIIIIIII", raw
            )
        return _Section(kind, addr, off, size, link, ent)

    def _first(self, kind: int) -> _Section | None:
        return next((s for s in self.sections() if s.type == kind), None)

    def symbol_tables(self) -> list[tuple[int, _Section]]:
        """(.dynsym, then .symtab) as libbpf searches them; the ones the file has."""
        return [(k, s) for k in (SHT_DYNSYM, SHT_SYMTAB) if (s := self._first(k)) is not None]

    def symbols(self, table: _Section) -> Iterator[_Symbol]:
        """Every symbol of ``table`` with its name (read through a bounded page cache)."""
        size = 24 if self.elf_class == 2 else 16
        if table.entsize != size:
            raise TargetError(
                f"is a corrupt ELF file: symbol table entry size {table.entsize}, not {size}"
            )
        if table.size > MAX_SYMBOL_TABLE:
            raise TargetError(
                f"has a symbol table of {table.size} bytes, over the {MAX_SYMBOL_TABLE >> 20} "
                "MiB bpfman reads; give spec.offset instead of func_name"
            )
        sections = self.sections()
        if not 0 <= table.link < len(sections):
            raise TargetError(f"is a corrupt ELF file: symbol names in section {table.link}")
        strtab = sections[table.link]
        self._within(strtab.offset, strtab.size, "symbol names")
        self._within(table.offset, table.size, "symbol table")
        names = _Strings(self._f, strtab.offset, strtab.size)
        fmt = self.order + ("IBBHQQ" if self.elf_class == 2 else "IIIBBH")
        count = table.size // size
        index = 0
        per_chunk = _CHUNK // size
        while index < count:
            n = min(per_chunk, count - index)
            raw = self._read(table.offset + index * size, n * size, "symbol table")
            for entry in struct.iter_unpack(fmt, raw):
                if self.elf_class == 2:
                    st_name, info, _other, shndx, value, _size = entry
                else:
                    st_name, value, _size, info, _other, shndx = entry
                yield _Symbol(index, names.at(st_name), info & 0xF, info >> 4, shndx, value)
                index += 1

    def symbol_offset(self, sym: _Symbol) -> int | None:
        """``st_value - sh_addr + sh_offset`` of the symbol's section (None when libelf would
        find no such section: SHN_ABS and other indexes past the section count)."""
        sections = self.sections()
        if not 0 <= sym.shndx < len(sections):
            return None
        sec = sections[sym.shndx]
        return (sym.value - sec.addr + sec.offset) & 0xFFFFFFFFFFFFFFFF

    def version_names(self) -> dict[int, bytes]:
        """Version index -> version name, from .gnu.version_d (empty without one)."""
        verdef = self._first(SHT_GNU_VERDEF)
        if verdef is None or verdef.size > _CHUNK:
            return {}
        sections = self.sections()
        if not 0 <= verdef.link < len(sections):
            return {}
        strtab = sections[verdef.link]
        names = _Strings(self._f, strtab.offset, strtab.size)
        raw = self._read(verdef.offset, verdef.size, "version definitions")
        out: dict[int, bytes] = {}
        offset = 0
        for _ in range(4096):
            if offset + 20 > len(raw):
                break
            _v, _flags, ndx, _cnt, _hash, aux, nxt = struct.unpack_from(
                self.order + "HHHHIII", raw, offset
            )
            if offset + aux + 8 <= len(raw):
                (vda_name,) = struct.unpack_from(self.order + "I", raw, offset + aux)
                out.setdefault(ndx, names.at(vda_name))
            if not nxt:
                break
            offset += nxt
        return out

    def versions(self, count: int) -> list[int] | None:
        """The .gnu.version entry (version index) of each of ``count`` dynamic symbols."""
        versym = self._first(SHT_GNU_VERSYM)
        if versym is None or versym.size < 2 * count or versym.size > MAX_SYMBOL_TABLE:
            return None
        raw = self._read(versym.offset, 2 * count, "symbol versions")
        return [v & _VERSYM_VERSION for (v,) in struct.iter_unpack(self.order + "H", raw)]

    # --- what libbpf would do -------------------------------------------------------------

    def find_function(self, name: str, version: tuple[int, int] | None = None) -> Lookup:
        """Resolve ``name`` as libbpf ``version`` (default: the one bpfman uses) would."""
        version = version or libbpf_version()
        tables = self.symbol_tables()
        if not tables:
            return Lookup(
                name,
                None,
                "it has no symbol table (.dynsym or .symtab): it is stripped; give spec.offset "
                "instead of func_name",
            )
        modern = version >= (1, 3)
        want = name.encode()
        at = want.find(b"@")
        base = want[:at] if at >= 0 else want
        lib_ver = want[at + 1 :].removeprefix(b"@") if at >= 0 and modern else None
        qualified = b"@@" in want
        ret: int | None = None  # libbpf's ret: None = -ENOENT
        for kind, table in tables:
            last_bind = -1
            vernames: dict[int, bytes] = {}
            versyms: list[int] | None = None
            if lib_ver is not None and kind == SHT_DYNSYM:
                vernames = self.version_names()
                versyms = self.versions(table.size // table.entsize)
            for sym in self.symbols(table):
                if sym.type != STT_FUNC:
                    continue
                offset = self.symbol_offset(sym)
                if modern:
                    if offset is None or not _match_base(sym.name, base):
                        continue
                    if lib_ver is not None:
                        if kind == SHT_DYNSYM:
                            ver = versyms[sym.index] if versyms else 0
                            if vernames.get(ver) != lib_ver:
                                continue
                        elif sym.name != want:
                            continue
                    if ret is not None and ret > 0:
                        if offset == ret:
                            continue
                        if last_bind != STB_WEAK and sym.bind != STB_WEAK:
                            return self._ambiguous(name, sym)
                        if sym.bind == STB_WEAK:
                            continue
                else:
                    if not sym.name.startswith(want):
                        continue
                    rest = sym.name[len(want) : len(want) + 1]
                    if not qualified and rest not in (b"", b"@"):
                        continue
                    if ret is not None:
                        if last_bind != STB_WEAK and sym.bind != STB_WEAK:
                            return self._ambiguous(name, sym)
                        if sym.bind == STB_WEAK:
                            continue
                    if offset is None:
                        continue
                ret = offset
                last_bind = sym.bind
            if ret is not None and ret > 0:
                return Lookup(name, ret)
        return self._missing(name, base, version if at >= 0 else None)

    def _ambiguous(self, name: str, sym: _Symbol) -> Lookup:
        return Lookup(
            name,
            None,
            f"it defines {_show(sym.name)} more than once (two non-weak symbols), which libbpf "
            "refuses as ambiguous; give spec.offset instead of func_name",
        )

    def _missing(self, name: str, base: bytes, versioned: tuple[int, int] | None) -> Lookup:
        """Not found: say why when a symbol of that name exists, else offer near names.
        ``versioned``: the name asked for carries a version (and libbpf is this one)."""
        problem = None
        functions: set[str] = set()
        for _kind, table in self.symbol_tables():
            for sym in self.symbols(table):
                defined = sym.shndx != _SHN_UNDEF
                if problem is None and _match_base(sym.name, base):
                    problem = self._why_not(sym, base, versioned)
                if sym.type == STT_FUNC and defined and len(functions) < MAX_NEAR_CANDIDATES:
                    functions.add(sym.name.split(b"@", 1)[0].decode(errors="replace"))
        near: tuple[str, ...] = ()
        if problem is None:
            near = tuple(printable(n) for n in near_names(base.decode(errors="replace"), functions))
        return Lookup(name, None, problem, near, self._first(SHT_SYMTAB) is None)

    @staticmethod
    def _why_not(sym: _Symbol, base: bytes, versioned: tuple[int, int] | None) -> str | None:
        plain = printable(base.decode(errors="replace"))
        if sym.type == STT_FUNC and sym.shndx == _SHN_UNDEF:
            return (
                "it only imports that function (an undefined symbol): probe the library that "
                "defines it (e.g. spec.target: libc)"
            )
        if sym.type == STT_FUNC and versioned is not None:
            major, minor = versioned
            if versioned < (1, 3):
                return (
                    f"it defines {_show(sym.name)}, but libbpf {major}.{minor} matches a "
                    "versioned name literally against symbol names (which carry no version "
                    f"here): name the function without its version (func_name: {plain})"
                )
            return f"it defines {_show(sym.name)}, but not with the version asked for"
        if sym.type == STT_FUNC:
            return "libbpf finds no offset for it (its address is 0)"
        if sym.type in _SYMBOL_TYPES:
            return f"{_show(sym.name)} is {_SYMBOL_TYPES[sym.type].replace('NAME', plain)}"
        return None


def near_names(name: str, candidates: set[str] | list[str], n: int = 3) -> list[str]:
    """Up to ``n`` candidates close to ``name`` (difflib), on a prefiltered set so that a few
    hundred thousand symbols stay fast."""
    low = name.lower()
    pool = [c for c in candidates if abs(len(c) - len(name)) <= max(3, len(name) // 2)]
    if len(pool) > 20_000:
        pool = [c for c in pool if c[:1].lower() == low[:1] or low in c.lower()]
    return difflib.get_close_matches(name, pool, n=n, cutoff=0.75)


def _match_base(sym_name: bytes, base: bytes) -> bool:
    """libbpf: ``foo`` matches ``foo`` and ``foo@VERSION``/``foo@@VERSION``, not ``foo2``."""
    return sym_name.startswith(base) and sym_name[len(base) : len(base) + 1] in (b"", b"@")


def _show(name: bytes) -> str:
    return printable(name.decode(errors="replace"))


def printable(text: str) -> str:
    """``text`` with control and bidi characters escaped (names come from untrusted files)."""
    out = []
    for ch in text:
        code = ord(ch)
        if code < 0x20 or 0x7F <= code <= 0x9F or ch in _BIDI:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@dataclass
class _Strings:
    """A string table read in pages on demand (at most ``max_pages`` kept)."""

    f: BinaryIO
    offset: int
    size: int
    page: int = 64 * 1024
    max_pages: int = 256
    pages: dict[int, bytes] = field(default_factory=dict)

    def _page(self, n: int) -> bytes:
        data = self.pages.get(n)
        if data is None:
            if len(self.pages) >= self.max_pages:
                self.pages.pop(next(iter(self.pages)))
            start = n * self.page
            self.f.seek(self.offset + start)
            data = self.f.read(min(self.page, max(0, self.size - start)))
            self.pages[n] = data
        return data

    def at(self, index: int) -> bytes:
        """The NUL-terminated string at ``index`` (b"" outside the table)."""
        if not 0 <= index < self.size:
            return b""
        out = b""
        pos = index
        while pos < self.size and len(out) < MAX_NAME:
            n, skip = divmod(pos, self.page)
            data = self._page(n)[skip:]
            if not data:
                break
            end = data.find(b"\0")
            if end >= 0:
                return out + data[:end]
            out += data
            pos += len(data)
        return out[:MAX_NAME]


def machine_name(machine: int) -> str:
    return MACHINES.get(machine, f"unknown-architecture (e_machine {machine})")
