"""Just enough ELF to check a manifest's bytecode before anything touches the kernel.

Reads the header, the section headers and the symbol table of an ELF64 file (either byte order):
is it an eBPF object, which functions does it hold and in which sections; it also hands out the raw
``.BTF`` section for :mod:`reconciler.spec.btf`. Loading and relocation are libbpf's job in
``reconciler.kernel``; this reader only has to be right about names and never crash: every
malformed input raises :class:`ElfError` with a sentence a user can act on.
"""

from __future__ import annotations

import struct
from dataclasses import field
from pathlib import Path
from typing import NamedTuple

from reconciler import files
from reconciler.kernel.tracing.elfsyms import machine_name
from reconciler.values import frozen

EM_BPF = 247
_MAGIC = b"\x7fELF"
_ELFCLASS64 = 2
_SHF_EXECINSTR = 0x4
_SHT_NULL = 0
_SHT_SYMTAB = 2
_SHT_NOBITS = 8
_SHT_SYMTAB_SHNDX = 18
_STT_OBJECT = 1
_STT_FUNC = 2
_MAP_SECTIONS = (".maps", "maps")  # BTF-defined maps, and the legacy struct bpf_map_def ones
_SHN_UNDEF = 0
_SHN_LORESERVE = 0xFF00
_SHN_XINDEX = 0xFFFF
_EHDR_SIZE = 64
_SHDR_SIZE = 64
_SYM_SIZE = 24
# An eBPF object is kilobytes to a few megabytes; this bound keeps a wrong path (a disk image, a
# database) from being read into memory just to be rejected.
MAX_OBJECT_SIZE = 64 * 1024 * 1024

_FILE_TYPES = {
    0: "file",
    1: "object",
    2: "executable",
    3: "shared object or PIE executable",
    4: "core dump",
}


class _Section(NamedTuple):
    name: int  # offset in the section name table
    type: int
    flags: int
    offset: int
    size: int
    link: int


class ElfError(Exception):
    """The file is not a usable eBPF ELF object; the message says why."""


@frozen
class ElfFunction:
    name: str
    section: str  # name of the executable section holding its code

    @property
    def is_program(self) -> bool:
        """Entry points live in their own sections; ``.text`` holds subprograms they call."""
        return self.section != ".text"


@frozen
class ElfObject:
    byte_order: str  # "little" | "big"
    sections: tuple[str, ...]  # executable sections (programs' and .text), in file order
    functions: tuple[ElfFunction, ...]  # STT_FUNC symbols defined in executable sections
    has_symbols: bool  # False when the object was stripped of its symbol table
    # The raw .BTF section (type information clang -g emits), None when there is none; read by
    # reconciler.spec.btf to find global variables and their sizes.
    btf: bytes | None = field(default=None, repr=False)
    # Names of the maps the object defines (STT_OBJECT symbols in ``.maps`` or ``maps``): each is
    # pinned under its name, so it must fit in a file name.
    maps: tuple[str, ...] = ()

    def program_sections(self) -> list[str]:
        return [s for s in self.sections if s != ".text"]

    def programs(self) -> list[ElfFunction]:
        """Functions that can be a manifest's ``bpffunctionname``."""
        return [f for f in self.functions if f.is_program]

    def function(self, name: str) -> ElfFunction | None:
        return next((f for f in self.functions if f.name == name), None)


def read_bpf_object(path: Path) -> ElfObject:
    """Read ``path`` and check it is an eBPF ELF object. Raises ElfError with the reason if not."""
    try:
        data = files.read_regular(path, MAX_OBJECT_SIZE)
    except files.TooLarge as e:
        raise ElfError(
            f"{e.size} bytes, over the {MAX_OBJECT_SIZE // (1024 * 1024)} MiB limit for an eBPF "
            "object; is this the right file?"
        ) from None
    except files.NotReadable as e:
        raise ElfError(str(e).removeprefix("is ")) from None
    except FileNotFoundError:
        raise ElfError("no such file") from None
    except OSError as e:
        raise ElfError(f"cannot read: {e.strerror or e}") from None
    return parse_bpf_object(data)


def parse_bpf_object(data: bytes) -> ElfObject:
    """Parse the bytes of an ELF file; see :func:`read_bpf_object`."""
    try:
        return _Reader(data).parse()
    except struct.error as e:  # a bounds check missed a field: still the file's fault
        raise ElfError(f"malformed ELF file ({e})") from None


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.order = "<"

    def parse(self) -> ElfObject:
        data = self.data
        if len(data) < 20 or data[:4] != _MAGIC:
            what = "empty" if not data else "not an ELF file"
            raise ElfError(f"{what}; expected an eBPF object compiled with clang -target bpf")
        if data[5] not in (1, 2):
            raise ElfError(f"malformed ELF header: unknown byte order {data[5]}")
        self.order = "<" if data[5] == 1 else ">"
        e_type, machine = struct.unpack_from(self.order + "HH", data, 16)
        if machine != EM_BPF:
            arch = machine_name(machine)
            what = _FILE_TYPES.get(e_type, "file")
            raise ElfError(
                f"{arch} {what}, not eBPF (ELF e_machine {machine}, eBPF is {EM_BPF}); "
                "compile the program with clang -target bpf"
            )
        if data[4] != _ELFCLASS64:
            raise ElfError("32-bit ELF file; eBPF objects are ELF64 (clang -target bpf)")
        if len(data) < _EHDR_SIZE:
            raise ElfError(f"truncated ELF header ({len(data)} of {_EHDR_SIZE} bytes)")
        (shoff,) = struct.unpack_from(self.order + "Q", data, 40)
        shentsize, shnum, shstrndx = struct.unpack_from(self.order + "HHH", data, 58)
        if shoff == 0:
            raise ElfError("ELF file has no section headers")
        if shentsize != _SHDR_SIZE:
            raise ElfError(f"malformed ELF header: section header size {shentsize}, expected 64")
        if shnum == 0 or shstrndx == _SHN_XINDEX:
            # More than 0xff00 sections: the count and the name table index live in section 0.
            self._need(shoff, _SHDR_SIZE, "section header table")
            shnum = shnum or self._shdr(shoff).size
            shstrndx = self._shdr(shoff).link if shstrndx == _SHN_XINDEX else shstrndx
        self._need(shoff, shnum * _SHDR_SIZE, f"section header table ({shnum} entries)")
        headers = [self._shdr(shoff + i * _SHDR_SIZE) for i in range(shnum)]
        if not 0 < shstrndx < shnum:
            raise ElfError(f"malformed ELF header: section name table index {shstrndx}")
        names_hdr = headers[shstrndx]
        names = [self._string(names_hdr, h.name, "section name") for h in headers]
        executable = {i for i, h in enumerate(headers) if h.flags & _SHF_EXECINSTR and h.size}
        sections = tuple(names[i] for i in sorted(executable))

        functions: list[ElfFunction] = []
        maps: list[str] = []
        symtab = next((i for i, h in enumerate(headers) if h.type == _SHT_SYMTAB), None)
        if symtab is not None:
            xindex = next(
                (h for h in headers if h.type == _SHT_SYMTAB_SHNDX and h.link == symtab), None
            )
            functions = self._functions(headers, symtab, xindex, executable, names, maps)
        btf = next(
            (h for h, name in zip(headers, names, strict=True) if name == ".BTF" and h.size), None
        )
        return ElfObject(
            byte_order="little" if self.order == "<" else "big",
            sections=sections,
            functions=tuple(functions),
            has_symbols=symtab is not None,
            maps=tuple(maps),
            btf=(
                self.data[btf.offset : btf.offset + btf.size]
                if btf is not None and btf.type != _SHT_NOBITS
                else None
            ),
        )

    def _functions(
        self,
        headers: list[_Section],
        symtab: int,
        xindex: _Section | None,
        executable: set[int],
        names: list[str],
        maps: list[str],
    ) -> list[ElfFunction]:
        """The functions defined in executable sections; map definitions go into ``maps``."""
        sym_hdr = headers[symtab]
        if not 0 < sym_hdr.link < len(headers):
            raise ElfError(f"malformed symbol table: string table index {sym_hdr.link}")
        strtab = headers[sym_hdr.link]
        offset, size = sym_hdr.offset, sym_hdr.size
        out = []
        for i in range(size // _SYM_SIZE):
            st_name, st_info, _other, shndx = struct.unpack_from(
                self.order + "IBBH", self.data, offset + i * _SYM_SIZE
            )
            if st_info & 0xF not in (_STT_FUNC, _STT_OBJECT):
                continue
            if shndx == _SHN_XINDEX and xindex is not None:
                self._need(xindex.offset + 4 * i, 4, "extended section index table")
                (shndx,) = struct.unpack_from(self.order + "I", self.data, xindex.offset + 4 * i)
            if shndx == _SHN_UNDEF or _SHN_LORESERVE <= shndx <= _SHN_XINDEX:
                continue
            if st_info & 0xF == _STT_OBJECT:
                if shndx < len(names) and names[shndx] in _MAP_SECTIONS:
                    maps.append(self._string(strtab, st_name, "symbol name"))
                continue
            if shndx in executable:
                out.append(ElfFunction(self._string(strtab, st_name, "symbol name"), names[shndx]))
        return out

    def _shdr(self, offset: int) -> _Section:
        name, kind, flags, _addr, off, size, link = struct.unpack_from(
            self.order + "IIQQQQI", self.data, offset
        )
        if kind not in (_SHT_NULL, _SHT_NOBITS) and size:
            self._need(off, size, "section data")
        return _Section(name, kind, flags, off, size, link)

    def _string(self, table: _Section, index: int, what: str) -> str:
        if table.type in (_SHT_NULL, _SHT_NOBITS):
            raise ElfError(f"malformed ELF file: the {what} table has no data")
        start, size = table.offset, table.size
        if index >= size:
            raise ElfError(f"malformed ELF file: {what} outside its string table")
        end = self.data.find(b"\0", start + index, start + size)
        if end < 0:
            raise ElfError(f"malformed ELF file: unterminated {what}")
        try:
            return self.data[start + index : end].decode("utf-8")
        except UnicodeDecodeError:
            raise ElfError(f"malformed ELF file: {what} is not valid UTF-8") from None

    def _need(self, offset: int, size: int, what: str) -> None:
        if offset < 0 or size < 0 or offset + size > len(self.data):
            raise ElfError(
                f"truncated or corrupt ELF file: {what} at bytes {offset}..{offset + size} "
                f"lies beyond the end of the file ({len(self.data)} bytes)"
            )
