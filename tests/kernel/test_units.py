"""Kernel-layer pieces that need no root: pin naming, walking, log summaries, fake knobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.kernel import (
    FakeKernel,
    KernelError,
    ProgramSpec,
    ProgType,
    TcxPoint,
    XdpPoint,
    bpffs,
)
from reconciler.kernel.bpfobject import _pin_name
from reconciler.kernel.libbpf import verifier_summary
from reconciler.kernel.real import RealKernel


def test_pin_dir_components_escape_dots_reversibly() -> None:
    assert bpffs.encode("xdp-counter.v2") == "xdp-counter%2Ev2"
    assert bpffs.decode("xdp-counter%2Ev2") == "xdp-counter.v2"
    assert bpffs.path_of(Path("/r"), "K/a.b/eth0.100") == Path("/r/K/a%2Eb/eth0%2E100")
    # What reconciler.address writes ('/' as %2F, '%' as %25) passes through untouched.
    assert bpffs.decode(bpffs.encode("%2Fdev%2Fx")) == "%2Fdev%2Fx"


def test_staging_names_are_skipped_but_encoded_components_are_not() -> None:
    assert bpffs.skipped("%next") and bpffs.skipped("%next-verify-42") and bpffs.skipped(".x")
    assert not bpffs.skipped("%2Fdev") and not bpffs.skipped("%25x")


def test_managed_dirs_are_the_ones_holding_a_prog(tmp_path: Path) -> None:
    for f in [
        "XdpProgram/a/eth0/prog",
        "XdpProgram/a/eth0/maps/counters",
        "XdpProgram/a/eth0/%next/prog",  # staging of a replace
        "TcxProgram/b/eth0/%next/prog",  # an install that never committed
        "Tracepoint/c%2Ev2/x/prog",
        "Tracepoint/c%2Ev2/x/link",
    ]:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).touch()
    assert bpffs.managed_dirs(tmp_path) == ["Tracepoint/c.v2/x", "XdpProgram/a/eth0"]
    assert bpffs.managed_dirs(tmp_path / "missing") == []


def test_remove_tree_and_prune(tmp_path: Path) -> None:
    leaf = tmp_path / "K" / "n" / "i"
    (leaf / "maps").mkdir(parents=True)
    (leaf / "maps" / "m").touch()
    (leaf / "prog").touch()
    bpffs.remove_tree(leaf)
    bpffs.prune_empty_parents(leaf.parent, tmp_path)
    assert list(tmp_path.iterdir()) == []
    bpffs.remove_tree(leaf)  # missing is fine


@pytest.mark.parametrize(
    ("name", "internal", "pin"),
    [
        ("counters", False, "counters"),
        ("xdp_coun.rodata", True, "rodata"),
        ("xdp_coun.rodata.str1.1", True, "rodata_str1_1"),
        ("tp_count.bss", True, "bss"),
    ],
)
def test_map_pin_names_have_no_dots(name: str, internal: bool, pin: str) -> None:
    assert _pin_name(name, internal) == pin


def test_verifier_summary_keeps_the_end_without_noise() -> None:
    log = "\n".join(f"{i}: insn" for i in range(40))
    log += "\ninvalid access to packet\nprocessed 3 insns (limit 1000000)\n"
    summary = verifier_summary(log).splitlines()
    assert len(summary) == 20 and summary[-1] == "invalid access to packet"


@pytest.mark.parametrize("bad", ["", "/abs", "../up", "a/../b", "a/.hidden", "a/%next/b", "a%2Eb"])
def test_pin_dirs_are_checked(bad: str) -> None:
    with pytest.raises(KernelError, match="invalid pin directory"):
        RealKernel("/sys/fs/bpf/unused").uninstall(bad)


# --- FakeKernel knobs -----------------------------------------------------------------------------

SPEC = ProgramSpec("/tests/x.o", "xdp_count", ProgType.XDP)
TCX = ProgramSpec("/tests/x.o", "tcx_count", ProgType.TCX)


def test_fake_failures_leave_nothing() -> None:
    k = FakeKernel(check_files=False)
    k.add_interface("eth0")
    k.fail_next["attach"] = KernelError("boom")
    with pytest.raises(KernelError, match="boom"):
        k.install("X/a/eth0", SPEC, XdpPoint("eth0"))
    assert k.observe() == [] and k.xdp_program_on("eth0") is None


def test_fake_device_removal_detaches() -> None:
    k = FakeKernel(check_files=False)
    k.add_interface("eth0", native_xdp=False)
    xdp = k.install("X/a/eth0", SPEC, XdpPoint("eth0"))
    assert xdp.attach["mode"] == "generic"  # auto falls back without native support
    tcx = k.install("T/a/eth0", TCX, TcxPoint("eth0", "egress"))
    assert k.tcx_order("eth0", "egress") == [tcx.link_id]
    k.remove_interface("eth0")
    assert [i.attached for i in k.observe()] == [False, False]
