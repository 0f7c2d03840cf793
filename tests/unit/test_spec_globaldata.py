"""globaldata / globalData: checked against the bytecode's BTF, loaded as global_data."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.spec import ManifestError, load_desired, load_manifests
from tests.unit.spec_support import (
    SHF_ALLOC_EXEC,
    SHT_PROGBITS,
    StubHost,
    build_elf,
    problems_of,
    write_tree,
    xdp,
)


def test_list_and_base64_values(tmp_path: Path) -> None:
    text = xdp(
        globaldata="{GLOBAL_u8: [0x01], GLOBAL_u32: DQwLCg==, packets: [0, 0, 0, 0, 0, 0, 0, 1]}"
    )
    root = write_tree(tmp_path, {"x.yaml": text})
    [manifest] = load_manifests(root)
    expected = (
        ("GLOBAL_u32", b"\x0d\x0c\x0b\x0a"),
        ("GLOBAL_u8", b"\x01"),
        ("packets", bytes(7) + b"\x01"),
    )
    assert manifest.global_data == expected
    [attachment] = load_desired(root, StubHost()).attachments
    assert attachment.program.global_data == expected
    assert attachment.attributes["global_data"] == {
        "GLOBAL_u32": "0d0c0b0a",
        "GLOBAL_u8": "01",
        "packets": "0000000000000001",
    }


def test_without_globaldata_the_attribute_is_null(tmp_path: Path) -> None:
    [attachment] = load_desired(write_tree(tmp_path, {"x.yaml": xdp()}), StubHost()).attachments
    assert (attachment.program.global_data, attachment.attributes["global_data"]) == ((), None)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "{GLOBAL_u33: [1, 2, 3, 4]}",
            "spec.globaldata.GLOBAL_u33: 'GLOBAL_u33' is not a global variable of "
            "../bytecode/spec_progs.o (did you mean 'GLOBAL_u32'?); its global variables: "
            "packets (8 bytes, .bss), sample_rate (4 bytes, .data), port (2 bytes, .data.config), "
            "GLOBAL_u8 (1 byte, .rodata), GLOBAL_u32 (4 bytes, .rodata)",
        ),
        (
            "{GLOBAL_u32: [1, 2]}",
            "spec.globaldata.GLOBAL_u32: GLOBAL_u32 is 4 bytes (in .rodata) but 2 bytes are "
            "given; give exactly 4, in the program's byte order (little-endian)",
        ),
        (
            "{GLOBAL_u8: AAA=}",
            "spec.globaldata.GLOBAL_u8: GLOBAL_u8 is 1 byte (in .rodata) but 2 bytes are given; "
            "give exactly 1, in the program's byte order (little-endian)",
        ),
        (
            "{port: AQ}",
            "spec.globaldata.port: not valid base64 (a string is read as base64, as Kubernetes "
            "encodes []byte); or write the bytes as a list, e.g. [0x01, 0x00]",
        ),
        ("{port: [1, 256]}", "spec.globaldata.port[1]: must be <= 255 (got 256)"),
        ("{port: [-1, 0]}", "spec.globaldata.port[0]: must be >= 0 (got -1)"),
        ("{port: []}", "spec.globaldata.port: must not be empty"),
        ("{port: 1}", "spec.globaldata.port: must be a list or a string (got integer 1)"),
        (
            "{port: 'a b'}",
            "spec.globaldata.port: must be a list of byte values 0 to 255, e.g. [0x01, 0x00], or "
            "a base64 string, e.g. AQA= (got 'a b')",
        ),
        ("{2port: [1, 0]}", 'spec.globaldata["2port"]: invalid key: must be a C variable name'),
        ("[1, 2]", "spec.globaldata: must be a mapping (got a list)"),
    ],
)
def test_values_must_fit_the_variables(tmp_path: Path, value: str, message: str) -> None:
    problems = problems_of(tmp_path, {"x.yaml": xdp(globaldata=value)})
    assert problems[0].startswith(f"x.yaml:12: {message}"), problems


def test_every_bad_value_is_reported(tmp_path: Path) -> None:
    text = xdp(globaldata="\n    GLOBAL_u8: [1, 2]\n    nope: [1]\n    port: [1, 0]")
    assert [p.split(":")[1] for p in problems_of(tmp_path, {"x.yaml": text})] == ["13", "14"]


def test_an_object_without_btf(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path, {"x.yaml": xdp(bytecode="{path: ../bytecode/plain.o}", globaldata="{x: [1]}")}
    )
    plain = build_elf([("xdp", SHT_PROGBITS, SHF_ALLOC_EXEC, bytes(16))], [("xdp_stats", 2, "xdp")])
    (tmp_path / "bytecode" / "plain.o").write_bytes(plain)
    with pytest.raises(ManifestError) as info:
        load_manifests(root)
    assert info.value.problems == [
        "x.yaml:11: spec.globaldata: ../bytecode/plain.o has no BTF, so its global variables "
        "cannot be found; compile it with clang -g (BTF is kept by llvm-strip -g too)"
    ]


def test_applications_share_global_data(tmp_path: Path) -> None:
    text = """
    apiVersion: bpfman.io/v1alpha1
    kind: ClusterBpfApplication
    metadata: {name: app}
    spec:
      byteCode: {path: ../bytecode/spec_progs.o}
      globalData: {sample_rate: [0x10, 0, 0, 0], GLOBAL_u8: [2]}
      programs:
        - name: tp_openat
          type: TracePoint
          tracepoint: {links: [{name: syscalls/sys_enter_openat}]}
        - name: kprobe_open
          type: KProbe
          kprobe: {links: [{function: do_sys_openat2}]}
    """
    state = load_desired(write_tree(tmp_path, {"a.yaml": text}), StubHost())
    expected = (("GLOBAL_u8", b"\x02"), ("sample_rate", b"\x10\0\0\0"))
    assert [a.program.global_data for a in state.attachments] == [expected, expected]
    wrong = text.replace("sample_rate: [0x10, 0, 0, 0]", "sample_rate: [0x10]")
    assert problems_of(tmp_path, {"a.yaml": wrong}) == [
        "a.yaml:6: spec.globalData.sample_rate: sample_rate is 4 bytes (in .data) but 1 byte is "
        "given; give exactly 4, in the program's byte order (little-endian)"
    ]


def test_an_object_with_broken_btf(tmp_path: Path) -> None:
    text = xdp(bytecode="{path: ../bytecode/bad.o}", globaldata="{x: [1]}")
    root = write_tree(tmp_path, {"x.yaml": text})
    sections = [
        ("xdp", SHT_PROGBITS, SHF_ALLOC_EXEC, bytes(16)),
        (".BTF", SHT_PROGBITS, 0, b"\x9f\xeb\x01\x00" + bytes(4)),
    ]
    (tmp_path / "bytecode" / "bad.o").write_bytes(build_elf(sections, [("xdp_stats", 2, "xdp")]))
    with pytest.raises(ManifestError) as info:
        load_manifests(root)
    assert info.value.problems == [
        "x.yaml:11: spec.globaldata: ../bytecode/bad.o: cannot read its BTF: truncated BTF header "
        "(8 bytes)"
    ]
