"""KprobeProgram, FentryProgram and FexitProgram: fields, sections, addresses and attributes."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.kernel.types import FexitPoint, KprobePoint, ProgType
from reconciler.spec import load_desired
from reconciler.spec.semantic import describe_section, section_fits
from tests.unit.spec_support import StubHost, problems_of, write_tree

KPROBE = """
apiVersion: bpfman.io/v1alpha1
kind: KprobeProgram
metadata: {name: kp}
spec:
  bpffunctionname: kprobe_open
  bytecode: {path: ../bytecode/spec_progs.o}
  func_name: do_sys_openat2
"""
FENTRY = """
apiVersion: bpfman.io/v1alpha1
kind: FentryProgram
metadata: {name: fe}
spec:
  bpffunctionname: fentry_unlink
  bytecode: {path: ../bytecode/spec_progs.o}
  func_name: do_unlinkat
"""


def test_kprobe_address_and_attributes(tmp_path: Path) -> None:
    files = {
        "a.yaml": KPROBE + "  offset: 0x10\n",
        "b.yaml": KPROBE.replace("kp}", "kr}").replace("kprobe_open", "kretprobe_open")
        + "  retprobe: true\n",
        "c.yaml": KPROBE.replace("kp}", "local}").replace("do_sys_openat2", "do_open.isra.0"),
    }
    state = load_desired(write_tree(tmp_path, files), StubHost())
    assert [(str(a.address), a.point) for a in state.attachments] == [
        ("KprobeProgram/kp[do_sys_openat2+16]", KprobePoint("do_sys_openat2", 16, False)),
        ("KprobeProgram/kr[do_sys_openat2]", KprobePoint("do_sys_openat2", 0, True)),
        ("KprobeProgram/local[do_open.isra.0]", KprobePoint("do_open.isra.0", 0, False)),
    ]
    kr = state.attachments[1]
    assert kr.program.prog_type is ProgType.KPROBE
    assert list(kr.attributes) == [
        "bytecode",
        "bytecode_digest",
        "function",
        "func_name",
        "offset",
        "retprobe",
        "global_data",
        "map_owner",
    ]
    assert (kr.priority, kr.proceedon, kr.depends_on) == (None, (), ())


def test_fexit_address(tmp_path: Path) -> None:
    text = FENTRY.replace("FentryProgram", "FexitProgram").replace("fentry_unlink", "fexit_unlink")
    [a] = load_desired(write_tree(tmp_path, {"f.yaml": text}), StubHost()).attachments
    assert (str(a.address), a.point, a.program.prog_type) == (
        "FexitProgram/fe[do_unlinkat]",
        FexitPoint("do_unlinkat"),
        ProgType.FEXIT,
    )
    assert a.attributes["func_name"] == "do_unlinkat"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            KPROBE + "  retprobe: true\n  offset: 8\n",
            "k.yaml:9: spec.offset: a kretprobe runs when do_sys_openat2 returns, so it takes no "
            "offset (got 8); remove offset, or set retprobe: false for a kprobe",
        ),
        (
            KPROBE.replace("  func_name: do_sys_openat2\n", ""),
            "k.yaml:4: spec.func_name: required field is missing; expected a kernel function "
            "name: letters, digits, '_' and '.', e.g. do_unlinkat",
        ),
        (
            KPROBE.replace("do_sys_openat2", "'do sys'"),
            "k.yaml:7: spec.func_name: must be a kernel function name",
        ),
        (KPROBE + "  offset: -1\n", "k.yaml:8: spec.offset: must be >= 0 (got -1)"),
        (KPROBE + "  retprobe: yes please\n", "k.yaml:8: spec.retprobe: must be true or false"),
        (
            KPROBE + "  target: /bin/bash\n",
            "k.yaml:8: spec.target: unknown field 'target'; allowed fields here: bpffunctionname, "
            "bytecode, func_name, offset, retprobe, nodeselector, globaldata, mapownerselector",
        ),
        (
            KPROBE.replace("kprobe_open", "fentry_unlink"),
            "k.yaml:5: spec.bpffunctionname: function 'fentry_unlink' is in section "
            "'fentry/do_unlinkat', an fentry program; a KprobeProgram needs a section holding a "
            "kprobe or uprobe program (kprobe[/...], kretprobe[/...], uprobe[/...], "
            "uretprobe[/...], ...) or one libbpf gives no type (for this section, use kind "
            "FentryProgram)",
        ),
        (
            KPROBE.replace("kprobe_open", "kprobe_multi"),
            "k.yaml:5: spec.bpffunctionname: function 'kprobe_multi' is in section "
            "'kprobe.multi/do_sys_*', a multi-probe program (bpfman does not attach multi-probe "
            "links yet); a KprobeProgram needs a section holding a kprobe or uprobe program",
        ),
        (
            FENTRY.replace("fentry_unlink", "fmod_ret_unlink"),
            "k.yaml:5: spec.bpffunctionname: function 'fmod_ret_unlink' is in section "
            "'fmod_ret/do_unlinkat', an fmod_ret program; an FentryProgram needs a section "
            "holding an fentry program (fentry[/...]) or one libbpf gives no type",
        ),
        (
            FENTRY.replace("fentry_unlink", "kprobe_open"),
            "k.yaml:5: spec.bpffunctionname: function 'kprobe_open' is in section "
            "'kprobe/do_sys_openat2', a kprobe or uprobe program; an FentryProgram needs a "
            "section holding an fentry program (fentry[/...]) or one libbpf gives no type (for "
            "this section, use kind KprobeProgram)",
        ),
        (
            FENTRY.replace("FentryProgram", "FexitProgram"),
            "k.yaml:5: spec.bpffunctionname: function 'fentry_unlink' is in section "
            "'fentry/do_unlinkat', an fentry program; an FexitProgram needs a section holding an "
            "fexit program (fexit[/...]) or one libbpf gives no type (for this section, use kind "
            "FentryProgram)",
        ),
        (
            FENTRY + "  offset: 4\n",
            "k.yaml:8: spec.offset: unknown field 'offset'; allowed fields here: bpffunctionname, "
            "bytecode, func_name, nodeselector, globaldata, mapownerselector",
        ),
    ],
)
def test_problems(tmp_path: Path, text: str, message: str) -> None:
    problems = problems_of(tmp_path, {"k.yaml": text})
    assert problems[0].startswith(message), problems


@pytest.mark.parametrize(
    ("kind", "fits", "does_not_fit"),
    [
        (
            "KprobeProgram",
            # One program type: kprobes, uprobes and syscall probes; and names libbpf gives no
            # type, as upstream loads anything.
            [
                "kprobe",
                "kprobe/do_unlinkat",
                "kretprobe",
                "kretprobe/x",
                "ksyscall/x",
                "uprobe",
                "my_probe",
                "fentryx",
            ],
            [
                "kprobe.multi/x",
                "kretprobe.multi",
                "kprobe.session/x",
                "fentry/x",
                "usdt/x",
                "xdp",
                "uprobe.s/x",
            ],
        ),  # fmt: skip
        (
            "FentryProgram",
            ["fentry", "fentry/do_unlinkat", "counter"],
            ["fexit/x", "fmod_ret/x", "fentry.s/x", "kprobe/x"],
        ),  # fmt: skip
        ("FexitProgram", ["fexit", "fexit/do_unlinkat"], ["fentry/x", "fexit.s/x"]),
    ],
)
def test_section_rules(kind: str, fits: list[str], does_not_fit: list[str]) -> None:
    assert [s for s in fits if not section_fits(kind, s)] == []
    assert [s for s in does_not_fit if section_fits(kind, s)] == []


def test_describe_kernel_sections() -> None:
    assert describe_section("kretprobe/x") == "a kprobe or uprobe program"
    assert describe_section("kprobe.session/x").startswith("a multi-probe program")
    assert describe_section("fexit/x") == "an fexit program"
