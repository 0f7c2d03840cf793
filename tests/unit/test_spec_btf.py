"""The minimal BTF reader: global variables and their sizes, and never a traceback on bad input."""

from __future__ import annotations

import contextlib
import random
import struct

import pytest

from reconciler.spec.btf import BtfError, GlobalVariable, global_variables
from reconciler.spec.elf import parse_bpf_object, read_bpf_object
from tests.unit.spec_support import SHF_ALLOC_EXEC, SHT_PROGBITS, bpf_object, build_elf

INT, VAR, DATASEC = 1, 14, 15


def build_btf(
    types: list[tuple[int, str, int, int, list[tuple[int, ...]]]], order: str = "<"
) -> bytes:
    """A .BTF section: ``types`` are (kind, name, size_or_type, extra u32, vlen items) with ids
    from 1; INT and VAR carry one extra u32, DATASEC items are (type, offset, size)."""
    strings = b"\0"
    body = b""
    for kind, name, size_or_type, extra, items in types:
        name_off = len(strings) if name else 0
        if name:
            strings += name.encode() + b"\0"
        body += struct.pack(order + "III", name_off, (kind << 24) | len(items), size_or_type)
        if kind in (INT, VAR):
            body += struct.pack(order + "I", extra)
        for item in items:
            body += struct.pack(order + "I" * len(item), *item)
    header = struct.pack(
        order + "HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body), len(strings)
    )
    return header + body + strings


# int (1), three variables (2-4), an extern (5), a compiler-generated name (6), then DATASECs.
TYPES = [
    (INT, "int", 4, 0x20, []),
    (VAR, "limit", 1, 1, []),  # global, allocated
    (VAR, "counter", 1, 0, []),  # static
    (VAR, "ratio", 1, 1, []),
    (VAR, "CONFIG_HZ", 1, 2, []),  # extern
    (VAR, ".compiler.tmp", 1, 0, []),
    (DATASEC, ".rodata", 12, 0, [(2, 0, 4), (6, 4, 8)]),
    (DATASEC, ".bss", 4, 0, [(3, 0, 4)]),
    (DATASEC, ".data.tuning", 2, 0, [(4, 0, 2)]),
    (DATASEC, ".kconfig", 4, 0, [(5, 0, 4)]),
]


@pytest.mark.parametrize("order", ["<", ">"])
def test_variables_of_the_data_sections(order: str) -> None:
    variables = global_variables(build_btf(TYPES, order), "little" if order == "<" else "big")
    assert variables == {
        "limit": GlobalVariable("limit", ".rodata", 4),
        "counter": GlobalVariable("counter", ".bss", 4),
        "ratio": GlobalVariable("ratio", ".data.tuning", 2),
    }
    assert variables["limit"].read_only and not variables["counter"].read_only


def test_variables_of_a_real_object() -> None:
    obj = read_bpf_object(bpf_object())
    assert obj.btf is not None
    assert global_variables(obj.btf, obj.byte_order) == {
        "GLOBAL_u8": GlobalVariable("GLOBAL_u8", ".rodata", 1),
        "GLOBAL_u32": GlobalVariable("GLOBAL_u32", ".rodata", 4),
        "sample_rate": GlobalVariable("sample_rate", ".data", 4),
        "packets": GlobalVariable("packets", ".bss", 8),
        "port": GlobalVariable("port", ".data.config", 2),
    }


def test_an_object_without_btf() -> None:
    data = build_elf([("xdp", SHT_PROGBITS, SHF_ALLOC_EXEC, bytes(16))], [("f", 2, "xdp")])
    assert parse_bpf_object(data).btf is None


def test_an_object_with_btf_and_no_variables() -> None:
    assert global_variables(build_btf([(INT, "int", 4, 0x20, [])])) == {}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated BTF header"),
        (b"\x9f\xeb" + bytes(10), "truncated BTF header"),
        (struct.pack("<HBBIIIII", 0x1234, 1, 0, 24, 0, 0, 0, 1) + b"\0", "bad BTF magic 0x1234"),
        (build_btf(TYPES)[:40], "lies beyond the end of .BTF"),
        (build_btf([(INT, "int", 4, 0x20, [])])[:-2], "the string section lies beyond the end"),
        (build_btf([(20, "x", 0, 0, [])]), "unknown BTF kind 20"),
        (build_btf([(DATASEC, ".data", 4, 0, [(1, 0, 4)])]), "DATASEC .data names type 1"),
        (build_btf([(DATASEC, ".data", 4, 0, [(9, 0, 4)])]), "DATASEC .data names type 9"),
    ],
)
def test_malformed_btf(data: bytes, message: str) -> None:
    with pytest.raises(BtfError, match=message.replace("(", r"\(")):
        global_variables(data)


def test_a_name_outside_the_strings() -> None:
    data = bytearray(build_btf([(INT, "int", 4, 0x20, [])]))
    struct.pack_into("<I", data, 24, 999)  # the first type's name offset
    with pytest.raises(BtfError, match="outside the string section"):
        global_variables(bytes(data))


def test_damaged_btf_is_an_error_never_a_crash() -> None:
    obj = read_bpf_object(bpf_object())
    assert obj.btf is not None
    rng = random.Random(3)
    for _ in range(400):
        data = bytearray(obj.btf)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cut = rng.choice([len(data), rng.randrange(len(data))])
        with contextlib.suppress(BtfError):
            global_variables(bytes(data[:cut]))
