"""The minimal ELF reader: right about names, and never a traceback on a bad file."""

from __future__ import annotations

import contextlib
import os
import platform
import random
from pathlib import Path

import pytest

from reconciler.spec.elf import ElfError, ElfFunction, ElfObject, parse_bpf_object, read_bpf_object
from tests.unit.spec_support import (
    SHF_ALLOC_EXEC,
    SHT_PROGBITS,
    STT_FUNC,
    STT_OBJECT,
    bpf_object,
    build_elf,
)

BPF_CODE = bytes(16)  # two eBPF instructions' worth of bytes; never executed


def test_reads_programs_and_sections_of_a_real_object() -> None:
    obj = read_bpf_object(bpf_object())

    assert obj.byte_order == "little"
    assert obj.has_symbols
    assert obj.program_sections() == [
        "xdp",
        "xdp.frags",
        "xdp/devmap",
        "tc",
        "tcx/ingress",
        "classifier",
        "tracepoint/syscalls/sys_enter_openat",
        "tp/sched/sched_switch",
        "uprobe",
        "uretprobe",
        "uprobe.multi",
        "kprobe/do_sys_openat2",
        "raw_tp/sched_switch",
        "kretprobe/do_sys_openat2",
        "kprobe.multi/do_sys_*",
        "fentry/do_unlinkat",
        "fexit/do_unlinkat",
        "fmod_ret/do_unlinkat",
        "cgroup_skb/egress",
        "cgroup_skb/ingress",
        "cgroup/connect4",
    ]
    assert obj.function("xdp_stats") == ElfFunction("xdp_stats", "xdp")
    assert obj.function("tp_openat") == ElfFunction(
        "tp_openat", "tracepoint/syscalls/sys_enter_openat"
    )
    # The static helper is a function in .text: a subprogram, not a program.
    assert obj.function("helper") == ElfFunction("helper", ".text")
    assert "helper" not in [f.name for f in obj.programs()]
    assert obj.function("LICENSE") is None  # data, not a function
    assert obj.function("nope") is None


def test_host_executable_is_named_by_architecture() -> None:
    true = Path("/bin/true").resolve()
    with pytest.raises(ElfError, match="not eBPF") as info:
        read_bpf_object(true)
    if platform.machine() == "x86_64":
        assert str(info.value).startswith("x86-64 ")
    assert "clang -target bpf" in str(info.value)


def test_x86_64_relocatable_object() -> None:
    data = build_elf([(".text", SHT_PROGBITS, SHF_ALLOC_EXEC, b"\xc3")], [], machine=62)
    with pytest.raises(ElfError) as info:
        parse_bpf_object(data)
    assert str(info.value) == (
        "x86-64 object, not eBPF (ELF e_machine 62, eBPF is 247); compile the program with "
        "clang -target bpf"
    )


def test_big_endian_object() -> None:
    data = build_elf(
        [("xdp", SHT_PROGBITS, SHF_ALLOC_EXEC, BPF_CODE), (".data", SHT_PROGBITS, 0x3, bytes(8))],
        [("prog", STT_FUNC, "xdp"), ("counter", STT_OBJECT, ".data"), ("ext", STT_FUNC, None)],
        order=">",
    )
    assert parse_bpf_object(data) == ElfObject(
        byte_order="big",
        sections=("xdp",),
        functions=(ElfFunction("prog", "xdp"),),
        has_symbols=True,
    )


def test_stripped_object_has_no_symbols() -> None:
    obj = parse_bpf_object(build_elf([("xdp", SHT_PROGBITS, SHF_ALLOC_EXEC, BPF_CODE)]))
    assert (obj.sections, obj.functions, obj.has_symbols) == (("xdp",), (), False)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty; expected an eBPF object compiled with clang -target bpf"),
        (b'SEC("xdp") int f() {}\n' * 3, "not an ELF file; expected an eBPF object compiled"),
        (build_elf([], [], elf_class=1), "32-bit ELF file; eBPF objects are ELF64"),
        (build_elf([], [], machine=4242), "unknown-architecture (e_machine 4242) object, not eBPF"),
        (build_elf([], [], machine=183, e_type=2), "AArch64 executable, not eBPF"),
    ],
)
def test_not_an_ebpf_object(data: bytes, message: str) -> None:
    with pytest.raises(ElfError) as info:
        parse_bpf_object(data)
    assert str(info.value).startswith(message)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ElfError, match="^no such file$"):
        read_bpf_object(tmp_path / "missing.o")
    with pytest.raises(ElfError, match="^a directory, not a regular file$"):
        read_bpf_object(tmp_path)
    os.mkfifo(tmp_path / "fifo.o")  # never opened: a FIFO would block the read
    with pytest.raises(ElfError, match=r"^a FIFO \(named pipe\), not a regular file$"):
        read_bpf_object(tmp_path / "fifo.o")
    with pytest.raises(ElfError, match="^a character device, not a regular file$"):
        read_bpf_object(Path("/dev/zero"))


def test_truncated_object_at_every_length_is_a_clear_error() -> None:
    data = bpf_object().read_bytes()
    lengths = [*range(0, 128), *range(128, len(data), 11)]
    for n in lengths:
        with pytest.raises(ElfError):
            parse_bpf_object(data[:n])
    with pytest.raises(ElfError, match="truncated or corrupt ELF file: section header table"):
        parse_bpf_object(data[: len(data) - 1])


def test_random_bytes_never_raise_anything_but_elf_error() -> None:
    rng = random.Random(1234)
    header = bpf_object().read_bytes()[:64]
    for size in [1, 3, 20, 63, 64, 65, 200, 4096]:
        for _ in range(50):
            noise = rng.randbytes(size)
            for data in (noise, header + noise, header[:20] + noise):
                with contextlib.suppress(ElfError):
                    parse_bpf_object(data)


def test_corrupted_object_never_raises_anything_but_elf_error() -> None:
    original = bpf_object().read_bytes()
    rng = random.Random(99)
    for _ in range(3000):
        data = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            # Favour the header and the section headers at the end, where the structure is.
            at = rng.choice(
                [
                    rng.randrange(64),
                    rng.randrange(len(data) - 1024, len(data)),
                    rng.randrange(len(data)),
                ]
            )
            data[at] = rng.randrange(256)
        try:
            obj = parse_bpf_object(bytes(data))
        except ElfError:
            continue
        assert all(isinstance(f.name, str) and isinstance(f.section, str) for f in obj.functions)
