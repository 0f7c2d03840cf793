"""Checks beyond the schema: unique names, bytecode files, functions and their sections."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from reconciler.spec import ManifestError, load_manifests
from reconciler.spec.semantic import describe_section, section_fits
from tests.unit.spec_support import (
    SHF_ALLOC_EXEC,
    SHT_PROGBITS,
    bpf_object,
    build_elf,
    problems_of,
    write_tree,
    xdp,
)


def test_duplicate_names_name_both_locations(tmp_path: Path) -> None:
    copy = xdp(bytecode="{path: ../../bytecode/spec_progs.o}")
    files = {"a.yaml": xdp(), "sub/b.yaml": "# a copy\n" + copy}
    assert problems_of(tmp_path, files) == [
        "sub/b.yaml:5: metadata.name: XdpProgram/xdp-counter is defined twice: here and at "
        "a.yaml:4; names must be unique per kind, so rename or remove one"
    ]


def test_same_name_in_different_kinds_is_fine(tmp_path: Path) -> None:
    tcx = xdp(bpffunctionname="tc_count", direction="egress").replace("XdpProgram", "TcxProgram")
    manifests = load_manifests(write_tree(tmp_path, {"x.yaml": xdp(), "t.yaml": tcx}))
    assert sorted(m.resource for m in manifests) == [
        "TcxProgram/xdp-counter",
        "XdpProgram/xdp-counter",
    ]


def test_bytecode_path_is_relative_to_the_manifest_file(tmp_path: Path) -> None:
    nested = xdp(bytecode="{path: ../../bytecode/spec_progs.o}")
    [manifest] = load_manifests(write_tree(tmp_path, {"deep/x.yaml": nested}))
    assert manifest.spec["bytecode"]["path"] == "../../bytecode/spec_progs.o"


def test_absolute_bytecode_path(tmp_path: Path) -> None:
    text = xdp(bytecode=f"{{path: {bpf_object()}}}")
    assert len(load_manifests(write_tree(tmp_path, {"x.yaml": text}))) == 1


def test_missing_bytecode_file(tmp_path: Path) -> None:
    text = xdp(bytecode="{path: ../bytecode/missing.o}")
    assert problems_of(tmp_path, {"x.yaml": text}) == [
        f"x.yaml:7: spec.bytecode.path: bytecode file not found: {tmp_path}/bytecode/missing.o "
        "(relative to the directory of x.yaml)"
    ]


def test_bytecode_directory(tmp_path: Path) -> None:
    text = xdp(bytecode="{path: ../bytecode}")
    assert problems_of(tmp_path, {"x.yaml": text}) == [
        "x.yaml:7: spec.bytecode.path: ../bytecode is a directory, not an eBPF object file"
    ]


def test_bytecode_that_is_not_ebpf(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"x.yaml": xdp(bytecode="{path: ../bytecode/x86.o}")})
    x86 = build_elf([(".text", SHT_PROGBITS, SHF_ALLOC_EXEC, b"\xc3")], [], machine=62)
    (tmp_path / "bytecode" / "x86.o").write_bytes(x86)
    (root / "y.yaml").write_text(
        xdp(bytecode="{path: ../bytecode/notes.o}").replace("xdp-counter", "y")
    )
    (tmp_path / "bytecode" / "notes.o").write_text("not an object\n")
    (root / "z.yaml").write_text(
        xdp(bytecode="{path: ../bytecode/cut.o}").replace("xdp-counter", "z")
    )
    whole = bpf_object().read_bytes()
    (tmp_path / "bytecode" / "cut.o").write_bytes(whole[:5000])
    shoff, shnum = struct.unpack_from("<Q", whole, 40)[0], struct.unpack_from("<H", whole, 60)[0]

    with pytest.raises(ManifestError) as info:
        load_manifests(root)
    assert info.value.problems == [
        "x.yaml:7: spec.bytecode.path: ../bytecode/x86.o: x86-64 object, not eBPF (ELF e_machine "
        "62, eBPF is 247); compile the program with clang -target bpf",
        "y.yaml:7: spec.bytecode.path: ../bytecode/notes.o: not an ELF file; expected an eBPF "
        "object compiled with clang -target bpf",
        "z.yaml:7: spec.bytecode.path: ../bytecode/cut.o: truncated or corrupt ELF file: section "
        f"header table ({shnum} entries) at bytes {shoff}..{shoff + 64 * shnum} lies beyond the "
        "end of the file "
        "(5000 bytes)",
    ]


def test_function_not_in_object_lists_candidates(tmp_path: Path) -> None:
    assert problems_of(tmp_path, {"x.yaml": xdp(bpffunctionname="xdp_stat")}) == [
        "x.yaml:6: spec.bpffunctionname: function 'xdp_stat' is not in ../bytecode/spec_progs.o "
        "(did you mean 'xdp_stats'?); functions there that an XdpProgram can use: xdp_stats, "
        "xdp_frags"
    ]


def test_function_not_in_object_without_candidates(tmp_path: Path) -> None:
    only_tc = build_elf([("tc", SHT_PROGBITS, SHF_ALLOC_EXEC, bytes(16))], [("count", 2, "tc")])
    root = write_tree(tmp_path, {"x.yaml": xdp(bytecode="{path: ../bytecode/tc.o}")})
    (tmp_path / "bytecode" / "tc.o").write_bytes(only_tc)
    with pytest.raises(ManifestError) as info:
        load_manifests(root)
    assert info.value.problems == [
        "x.yaml:6: spec.bpffunctionname: function 'xdp_stats' is not in ../bytecode/tc.o, and no "
        "function there is in a section holding an XDP program (xdp[/...], xdp.frags[/...]) or "
        "one libbpf gives no type; its programs: count (tc)"
    ]


def test_stripped_object(tmp_path: Path) -> None:
    stripped = build_elf([("xdp", SHT_PROGBITS, SHF_ALLOC_EXEC, bytes(16))])
    root = write_tree(tmp_path, {"x.yaml": xdp(bytecode="{path: ../bytecode/s.o}")})
    (tmp_path / "bytecode" / "s.o").write_bytes(stripped)
    with pytest.raises(ManifestError, match="has no symbol table \\(was it stripped\\?\\)"):
        load_manifests(root)


def test_subprogram_is_not_an_entry_point(tmp_path: Path) -> None:
    assert problems_of(tmp_path, {"x.yaml": xdp(bpffunctionname="helper")}) == [
        "x.yaml:6: spec.bpffunctionname: function 'helper' is a subprogram in .text, not a "
        'program entry point; put it in its own section, e.g. SEC("xdp")'
    ]


@pytest.mark.parametrize(
    ("kind", "function", "message"),
    [
        (
            "XdpProgram",
            "tc_count",
            "function 'tc_count' is in section 'tc', a TC classifier; an XdpProgram needs a "
            "section holding an XDP program (xdp[/...], xdp.frags[/...]) or one libbpf gives no "
            "type (for this section, use kind TcProgram)",
        ),
        (
            "XdpProgram",
            "xdp_devmap",
            "function 'xdp_devmap' is in section 'xdp/devmap', an XDP program for a devmap (it "
            "runs on redirected frames, not on an interface); an XdpProgram needs a section "
            "holding an XDP program (xdp[/...], xdp.frags[/...]) or one libbpf gives no type",
        ),
        (
            "TcxProgram",
            "xdp_stats",
            "function 'xdp_stats' is in section 'xdp', an XDP program; a TcxProgram needs a "
            "section holding a TC classifier (tc[/...], tcx[/...], classifier[/...], "
            "netkit[/...]) or one libbpf gives no type (for this section, use kind XdpProgram)",
        ),
        (
            "TracepointProgram",
            "raw_tp_switch",
            "function 'raw_tp_switch' is in section 'raw_tp/sched_switch', a raw tracepoint "
            "program; a TracepointProgram needs a section holding a tracepoint program "
            "(tracepoint[/...], tp[/...]) or one libbpf gives no type",
        ),
        (
            "UprobeProgram",
            "xdp_stats",
            "function 'xdp_stats' is in section 'xdp', an XDP program; a UprobeProgram needs a "
            "section holding a kprobe or uprobe program (kprobe[/...], kretprobe[/...], "
            "uprobe[/...], uretprobe[/...], ...) or one libbpf gives no type (for this section, "
            "use kind XdpProgram)",
        ),
        (
            "UprobeProgram",
            "uprobe_multi",
            "function 'uprobe_multi' is in section 'uprobe.multi', a multi-probe program "
            "(bpfman does not attach multi-probe links yet); a UprobeProgram needs a section "
            "holding a kprobe or uprobe program (kprobe[/...], kretprobe[/...], uprobe[/...], "
            "uretprobe[/...], ...) or one libbpf gives no type",
        ),
    ],
)
def test_section_must_suit_the_kind(tmp_path: Path, kind: str, function: str, message: str) -> None:
    interfaces = "  interfaceselector: {interfaces: [eth0]}\n"
    spec = {
        "XdpProgram": interfaces + "  priority: 1\n",
        "TcxProgram": interfaces + "  direction: ingress\n  priority: 1\n",
        "TracepointProgram": "  names: [sched/sched_switch]\n",
        "UprobeProgram": "  target: /bin/bash\n  func_name: readline\n",
    }[kind]
    text = (
        f"apiVersion: bpfman.io/v1alpha1\nkind: {kind}\nmetadata: {{name: p}}\nspec:\n"
        f"  bpffunctionname: {function}\n  bytecode: {{path: ../bytecode/spec_progs.o}}\n{spec}"
    )
    assert problems_of(tmp_path, {"p.yaml": text}) == [f"p.yaml:5: spec.bpffunctionname: {message}"]


@pytest.mark.parametrize(
    ("kind", "fits", "does_not_fit"),
    [
        (
            "XdpProgram",
            ["xdp", "xdp/prog", "xdp.frags", "xdp.frags/x", "my_xdp", "xdpx"],
            ["xdp/devmap", "xdp.frags/cpumap", "tc", "classifier/x", "tracepoint/a/b"],
        ),
        (
            "TcxProgram",
            # bpfman's own TCX objects use classifier/...; netkit programs are classifiers too.
            [
                "tc",
                "tcx/ingress",
                "tcx/egress",
                "tc/ingress",
                "classifier",
                "classifier/tcx_stats",
                "tcx",
                "netkit/primary",
                "stats",
            ],
            ["action", "xdp", "xdp/devmap"],
        ),
        (
            "TracepointProgram",
            ["tracepoint/a/b", "tp/a/b", "tp"],
            ["tp_btf/x", "raw_tp/x", "raw_tracepoint/x"],
        ),
        (
            "UprobeProgram",
            ["uprobe", "uprobe/x", "uretprobe", "kprobe/x", "malloc_probe"],
            ["uprobe.multi", "usdt", "uprobe.s", "uretprobe.s/x", "tp/x"],
        ),
    ],
)
def test_section_rules(kind: str, fits: list[str], does_not_fit: list[str]) -> None:
    assert [s for s in fits if not section_fits(kind, s)] == []
    assert [s for s in does_not_fit if section_fits(kind, s)] == []


def test_describe_section_prefers_the_longest_prefix() -> None:
    assert describe_section("tp_btf/sched_switch") == "a BTF tracepoint program"
    assert describe_section("tp/sched/sched_switch") == "a tracepoint program"
    assert describe_section("weird") == "a section libbpf gives no program type"


def test_uprobe_needs_func_name_or_offset(tmp_path: Path) -> None:
    text = """
    apiVersion: bpfman.io/v1alpha1
    kind: UprobeProgram
    metadata: {name: up}
    spec:
      bpffunctionname: uprobe_malloc
      bytecode: {path: ../bytecode/spec_progs.o}
      target: /usr/bin/bash
    """
    assert problems_of(tmp_path, {"u.yaml": text}) == [
        "u.yaml:4: spec: set func_name (a function in target) or a non-zero offset (a byte "
        "offset in target); with neither, the uprobe has nowhere to attach"
    ]
    offset_only = text.replace("target: /usr/bin/bash", "target: /usr/bin/bash\n      offset: 0x40")
    assert len(load_manifests(write_tree(tmp_path, {"u.yaml": offset_only}))) == 1


def test_uprobe_target_need_not_exist_here(tmp_path: Path) -> None:
    """Whether the binary exists is a host check made at plan time."""
    text = """
    apiVersion: bpfman.io/v1alpha1
    kind: UprobeProgram
    metadata: {name: up}
    spec:
      bpffunctionname: uprobe_malloc
      bytecode: {path: ../bytecode/spec_progs.o}
      target: /opt/not/here
      func_name: f
    """
    assert len(load_manifests(write_tree(tmp_path, {"u.yaml": text}))) == 1


def test_one_object_is_read_once_for_many_manifests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler.spec import semantic

    reads: list[Path] = []
    real = semantic.read_bpf_object

    def counting(path: Path):  # type: ignore[no-untyped-def]
        reads.append(path)
        return real(path)

    monkeypatch.setattr(semantic, "read_bpf_object", counting)
    text = "---\n".join(xdp().replace("xdp-counter", f"x{i}") for i in range(5))
    assert len(load_manifests(write_tree(tmp_path, {"x.yaml": text}))) == 5
    assert len(reads) == 1


def test_schema_errors_skip_semantic_checks_for_that_document(tmp_path: Path) -> None:
    # A bad priority must not also produce a confusing "function not found" for the same doc.
    text = xdp(priority="5000", bpffunctionname="nope")
    assert problems_of(tmp_path, {"x.yaml": text}) == [
        "x.yaml:11: spec.priority: must be <= 1000 (got 5000)"
    ]


def test_symlinked_bytecode_is_followed(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"x.yaml": xdp(bytecode="{path: ../bytecode/current.o}")})
    (tmp_path / "bytecode" / "current.o").symlink_to("spec_progs.o")
    assert len(load_manifests(root)) == 1
