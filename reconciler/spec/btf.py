"""Just enough BTF to check ``globaldata`` before anything touches the kernel.

clang -g describes every global variable of an eBPF object in its ``.BTF`` section: a ``VAR`` type
per variable, and a ``DATASEC`` per data section (``.rodata``, ``.data``, ``.bss`` and their
``.rodata.*``-style siblings) listing the variables it holds with their offsets and sizes. That is
all this reader extracts; libbpf does the real work at load time. Like the ELF reader it never
crashes on a bad file: malformed input raises :class:`BtfError` with the reason.

Format: linux/Documentation/bpf/btf.rst (header, then the type section, then the string section).
"""

from __future__ import annotations

import struct

from reconciler.values import frozen

_MAGIC = 0xEB9F
_HEADER = "HBBIIIII"  # magic, version, flags, hdr_len, type_off, type_len, str_off, str_len
_HEADER_SIZE = struct.calcsize("<" + _HEADER)
_TYPE_SIZE = 12  # name_off, info, size_or_type

# Bytes that follow the common 12-byte header, per kind: (fixed, per vlen item).
_EXTRA: dict[int, tuple[int, int]] = {
    1: (4, 0),  # INT
    2: (0, 0),  # PTR
    3: (12, 0),  # ARRAY
    4: (0, 12),  # STRUCT
    5: (0, 12),  # UNION
    6: (0, 8),  # ENUM
    7: (0, 0),  # FWD
    8: (0, 0),  # TYPEDEF
    9: (0, 0),  # VOLATILE
    10: (0, 0),  # CONST
    11: (0, 0),  # RESTRICT
    12: (0, 0),  # FUNC
    13: (0, 8),  # FUNC_PROTO
    14: (4, 0),  # VAR
    15: (0, 12),  # DATASEC
    16: (0, 0),  # FLOAT
    17: (4, 0),  # DECL_TAG
    18: (0, 0),  # TYPE_TAG
    19: (0, 12),  # ENUM64
}
_VAR, _DATASEC = 14, 15
_VAR_EXTERN = 2  # linkage of an extern variable: it lives in the kernel or another object
_DATA_SECTIONS = (".rodata", ".data", ".bss")


class BtfError(Exception):
    """The .BTF section is malformed; the message says how."""


@frozen
class GlobalVariable:
    name: str
    section: str  # .rodata, .data, .bss (or e.g. .data.counters)
    size: int  # bytes

    @property
    def read_only(self) -> bool:
        return self.section.startswith(".rodata")


def global_variables(btf: bytes, byte_order: str = "little") -> dict[str, GlobalVariable]:
    """The global variables of an object, by name, from its raw ``.BTF`` section.

    Only variables of the data sections bpfman can set before load are returned (externs,
    ``.kconfig`` and ``.maps`` are not), in section order; compiler-generated names (starting
    with ``.``) are skipped.
    """
    try:
        return _Reader(btf, "<" if byte_order == "little" else ">").variables()
    except struct.error as e:  # a bounds check missed a field: still the file's fault
        raise BtfError(f"malformed BTF ({e})") from None


def _is_data_section(name: str) -> bool:
    return any(name == s or name.startswith(s + ".") for s in _DATA_SECTIONS)


class _Reader:
    def __init__(self, data: bytes, order: str) -> None:
        self.data = data
        self.order = order

    def variables(self) -> dict[str, GlobalVariable]:
        data, order = self.data, self.order
        if len(data) < _HEADER_SIZE:
            raise BtfError(f"truncated BTF header ({len(data)} bytes)")
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            order + _HEADER, data, 0
        )
        if magic != _MAGIC:
            raise BtfError(f"bad BTF magic {magic:#06x} (expected {_MAGIC:#06x})")
        types = self._slice(hdr_len + type_off, type_len, "type section")
        self.strings = self._slice(hdr_len + str_off, str_len, "string section")

        # Type ids start at 1; id 0 is void.
        names: list[str] = [""]
        var_linkage: list[int | None] = [None]
        datasecs: list[tuple[str, list[tuple[int, int]]]] = []
        pos = 0
        while pos < len(types):
            if pos + _TYPE_SIZE > len(types):
                raise BtfError("truncated BTF type")
            name_off, info, _size = struct.unpack_from(order + "III", types, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            if kind not in _EXTRA:
                raise BtfError(f"unknown BTF kind {kind} (type {len(names)})")
            fixed, per_item = _EXTRA[kind]
            body = pos + _TYPE_SIZE
            end = body + fixed + per_item * vlen
            if end > len(types):
                raise BtfError(f"truncated BTF type {len(names)}")
            name = self._string(name_off)
            names.append(name)
            var_linkage.append(
                struct.unpack_from(order + "I", types, body)[0] if kind == _VAR else None
            )
            if kind == _DATASEC:
                entries = [
                    struct.unpack_from(order + "III", types, body + 12 * i) for i in range(vlen)
                ]
                datasecs.append((name, [(t, size) for t, _offset, size in entries]))
            pos = end

        out: dict[str, GlobalVariable] = {}
        for section, entries in datasecs:
            if not _is_data_section(section):
                continue
            for type_id, size in entries:
                if not 0 < type_id < len(names) or var_linkage[type_id] is None:
                    raise BtfError(f"DATASEC {section} names type {type_id}, which is not a VAR")
                name = names[type_id]
                if var_linkage[type_id] == _VAR_EXTERN or not name or name.startswith("."):
                    continue
                out.setdefault(name, GlobalVariable(name, section, size))
        return out

    def _slice(self, offset: int, size: int, what: str) -> bytes:
        if offset + size > len(self.data):
            raise BtfError(f"truncated BTF: the {what} lies beyond the end of .BTF")
        return self.data[offset : offset + size]

    def _string(self, offset: int) -> str:
        if offset >= len(self.strings) and offset:
            raise BtfError(f"BTF name offset {offset} outside the string section")
        end = self.strings.find(b"\0", offset)
        raw = self.strings[offset : end if end >= 0 else len(self.strings)]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BtfError("BTF name is not valid UTF-8") from None
