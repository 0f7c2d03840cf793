"""RealKernel on a distribution kernel (the VM tier: tests/vmtier.py boots Debian's kernel and runs
these inside it, as root): kprobe, kretprobe, fentry and fexit programs installed, observed,
replaced and uninstalled on the kernel function getpid(2) enters, seen counting through bpftool,
the feature probes saying yes where the host's kernel says no, and global data and shared maps
on this older kernel too.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.kernel import (
    FentryPoint,
    FexitPoint,
    Installed,
    KernelError,
    KprobePoint,
    ProgramSpec,
    ProgType,
    RealKernel,
    TracepointPoint,
)
from reconciler.kernel.types import KprobeLinkView, PerfEventLinkView, TracingLinkView
from tests import support
from tests.kernel.conftest import CLANG_FLAGS
from tests.kernel.harness import BPF, World, wait_for
from tests.vm.conftest import vmlinux_func_ids

pytestmark = pytest.mark.vm

CALLS = 20


@pytest.fixture(scope="module")
def kernel_probes(vm_bytecode: Path) -> str:
    """tests/vm/bpf/kernel_probes.o (`make bytecode` builds it on the host first)."""
    return str(vm_bytecode / "kernel_probes.o")


@pytest.fixture
def kernel(no_leaks: None, bpffs_root: Path) -> Iterator[RealKernel]:
    """A RealKernel with a private root; everything it installed is uninstalled after the test
    (and no_leaks then checks that no program, link or map is left)."""
    k = RealKernel(bpffs_root)
    try:
        yield k
    finally:
        for inst in k.observe():
            k.uninstall(inst.pin_dir)


def counters(inst: Installed) -> list[int]:
    (m,) = [m for m in inst.maps if m.name == "counters"]
    return support.bpftool_map_values(m.id)


def bpftool_prog(prog_id: int) -> dict:
    return support.bpftool_json("prog", "show", "id", str(prog_id))  # type: ignore[return-value]


def bpftool_link(link_id: int) -> dict | None:
    p = support.sh("bpftool", "-j", "link", "show", "id", str(link_id), check=False)
    return json.loads(p.stdout) if p.returncode == 0 else None


def assert_gone(kernel: RealKernel, old: Installed) -> None:
    wait_for(lambda: bpftool_link(old.link_id or 0) is None, "the old link to be released")
    wait_for(lambda: not World.prog_exists(old.prog_id), "the old program to be freed")


def test_probes_say_this_kernel_can() -> None:
    kernel = RealKernel("/sys/fs/bpf/unused")
    for feature in ("kprobe", "uprobe", "tracepoint", "perf_link", "fentry", "fexit", "freplace"):
        found = kernel.probe(feature)
        assert found, f"{feature} on {kernel.release()}: {found.reason}"
    major, minor = (int(n) for n in re.findall(r"\d+", kernel.release())[:2])
    tcx = kernel.probe("tcx")
    assert bool(tcx) is ((major, minor) >= (6, 6)), tcx.reason  # tcx links came with 6.6


def test_kprobe_then_kretprobe(
    kernel: RealKernel, kernel_probes: str, getpid_function: str
) -> None:
    fn, pin = getpid_function, "KprobeProgram/getpid/x"
    inst = kernel.install(pin, ProgramSpec(kernel_probes, "kprobe_count", ProgType.KPROBE),
                          KprobePoint(fn))  # fmt: skip
    assert inst.attached and inst.prog_type == "kprobe" and inst.link_id is not None
    assert isinstance(inst.attach, KprobeLinkView | PerfEventLinkView)
    if isinstance(inst.attach, KprobeLinkView):  # Linux 6.6+ describes perf-event links
        assert (inst.attach.func, inst.attach.offset, inst.attach.retprobe) == (fn, 0, False)
    else:
        assert inst.attach.perf_event_type == "unspec"
    prog = bpftool_prog(inst.prog_id)
    assert (prog["type"], prog["name"]) == ("kprobe", "kprobe_count")
    link = bpftool_link(inst.link_id)
    assert link is not None and (link["type"], link["prog_id"]) == ("perf_event", inst.prog_id)
    World.getpid(CALLS)
    assert counters(inst)[0] >= CALLS

    new = kernel.replace(pin, ProgramSpec(kernel_probes, "kretprobe_count", ProgType.KPROBE),
                         KprobePoint(fn, retprobe=True))  # fmt: skip
    assert new.link_pin == inst.link_pin and new.link_id != inst.link_id and new.attached
    assert isinstance(new.attach, KprobeLinkView | PerfEventLinkView)
    if new.attach.perf_event_type != "unspec":
        assert isinstance(new.attach, KprobeLinkView)
        assert new.attach.perf_event_type == "kretprobe" and new.attach.retprobe is True
    assert kernel.observe() == [new]
    assert_gone(kernel, inst)
    World.getpid(CALLS)
    assert counters(new)[0] >= CALLS  # a new program with a new map, counting returns

    kernel.uninstall(pin)
    assert kernel.observe() == [] and not kernel.root.joinpath("KprobeProgram").exists()
    wait_for(lambda: bpftool_link(new.link_id or 0) is None, "the kretprobe link to go")


@pytest.mark.parametrize("kind", ["fentry", "fexit"])
def test_fentry_and_fexit(
    kernel: RealKernel, kernel_probes: str, getpid_function: str, kind: str
) -> None:
    fn, pin = getpid_function, f"{kind.title()}Program/getpid/x"
    spec = ProgramSpec(kernel_probes, f"{kind}_count", ProgType(kind))
    point = FentryPoint(fn) if kind == "fentry" else FexitPoint(fn)
    kernel.verify(spec, point)
    with pytest.raises(KernelError, match="kernel function bpfman_no_such_function has no BTF"):
        kernel.verify(spec, type(point)("bpfman_no_such_function"))

    inst = kernel.install(pin, spec, point)
    assert inst.attached and inst.prog_type == "tracing" and inst.link_id is not None
    assert isinstance(inst.attach, TracingLinkView)
    assert inst.attach.attach_type == f"trace_{kind}"
    assert inst.attach.target_btf_id == vmlinux_func_ids()[fn]  # bpftool's id of fn
    prog = bpftool_prog(inst.prog_id)
    assert (prog["type"], prog["name"]) == ("tracing", f"{kind}_count")
    link = bpftool_link(inst.link_id)
    assert link is not None and (link["type"], link["prog_id"]) == ("tracing", inst.prog_id)
    if "target_btf_id" in link:  # bpftool prints it from v7.2
        assert link["target_btf_id"] == inst.attach.target_btf_id
    World.getpid(CALLS)
    assert counters(inst)[0] >= CALLS
    new = kernel.replace(pin, spec, point)
    assert new.prog_id != inst.prog_id and new.link_pin == inst.link_pin and new.attached
    assert isinstance(new.attach, TracingLinkView)
    assert new.attach.target_btf_id == inst.attach.target_btf_id
    assert kernel.observe() == [new]
    assert_gone(kernel, inst)
    World.getpid(CALLS)
    assert counters(new)[0] >= CALLS

    kernel.uninstall(pin)
    assert kernel.observe() == []
    wait_for(lambda: bpftool_link(new.link_id or 0) is None, f"the {kind} link to go")


@pytest.fixture(scope="module")
def host_objects() -> Path:
    """tests/bpf's global data and shared maps objects (`make bytecode` builds them)."""
    for name in ("global_data", "shared_maps"):
        src = BPF / f"{name}.bpf.c"
        out = BPF / f"{name}.o"
        if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
            subprocess.run(["clang", *CLANG_FLAGS, "-c", str(src), "-o", str(out)], check=True)
    return BPF


def test_global_data_and_shared_maps_on_this_kernel(kernel: RealKernel, host_objects: Path) -> None:
    getpid = TracepointPoint("syscalls", "sys_enter_getpid")
    getppid = TracepointPoint("syscalls", "sys_enter_getppid")
    data = host_objects / "global_data.o"
    three = (("step", (3).to_bytes(8, "little")),)
    step = ProgramSpec(str(data), "tp_step", ProgType.TRACEPOINT, global_data=three)
    inst = kernel.install("TracepointProgram/step/x", step, getpid)
    World.getpid(CALLS)
    assert counters(inst)[0] >= 3 * CALLS and counters(inst)[0] % 3 == 0

    def shared(function: str) -> ProgramSpec:
        obj = str(host_objects / "shared_maps.o")
        return ProgramSpec(obj, function, ProgType.TRACEPOINT, maps_dir="maps/app")

    writer = kernel.install("TracepointProgram/writer/x", shared("tp_writer"), getpid)
    reader = kernel.install("TracepointProgram/reader/x", shared("tp_reader"), getppid)
    (w,), (r,) = ([m for m in i.maps if m.name == "shared"] for i in (writer, reader))
    assert w == r and kernel.map_dirs() == ["maps/app"]
    World.getpid(CALLS)
    World.getppid()
    (bss,) = [m for m in reader.maps if m.name == "bss"]
    assert support.bpftool_map_values(bss.id)[0] >= CALLS  # the reader saw the writer's count
    for installed in kernel.observe():
        kernel.uninstall(installed.pin_dir)
    kernel.remove_maps("maps/app")
    assert kernel.map_dirs() == [] and list(kernel.root.iterdir()) == []
