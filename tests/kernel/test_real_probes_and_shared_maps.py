"""RealKernel behaviour the fake cannot show: feature probes against this kernel,
shared maps that do not fit, verify with shared maps, kernel symbol lookups."""

from __future__ import annotations

import os
import re

import pytest

from reconciler.kernel import KernelError, ProgramSpec, ProgType, RealKernel, probes
from reconciler.kernel.sys import bpf
from reconciler.kernel.tracing.ksyms import kallsyms_has
from tests import support
from tests.kernel.harness import World
from tests.kernel.test_contract_functions_data_maps import GETPID, READER, WRITER

pytestmark = pytest.mark.kernel

on_real = pytest.mark.parametrize("world", ["real"], indirect=True)


def _clear_probe_caches() -> None:
    for fn in (probes.prog_type_supported, probes.tcx_supported, probes.perf_link_supported,
               probes.kprobe_supported, probes.uprobe_supported, probes.tracepoint_supported,
               probes.tracing_supported, probes.freplace_supported):  # fmt: skip
        fn.cache_clear()
    probes.forget()


def test_probes_load_nothing_that_stays(no_leaks: None) -> None:
    _clear_probe_caches()
    answers = {feature: probes.probe(feature) for feature in probes.FEATURES}
    assert all(a.feature == f and a.reason for f, a in answers.items())
    assert probes.probe("fentry") is answers["fentry"]  # cached per process


def test_probes_say_why_this_kernel_cannot() -> None:
    kprobe = probes.probe("kprobe")
    if probes.kernel_config("CONFIG_KPROBES") == "n":
        assert not kprobe and "CONFIG_KPROBES is not set" in kprobe.reason
    else:
        assert bool(kprobe) == os.path.isdir("/sys/bus/event_source/devices/kprobe")
    for feature in ("fentry", "fexit", "freplace"):
        found = probes.probe(feature)
        if not found:  # the kernel refused a load: the reason quotes its errno
            assert re.search(r"fails with E[A-Z0-9]+ \(", found.reason), found.reason


def test_the_freplace_probes_target_program_and_btf_load(no_leaks: None) -> None:
    # The half of the freplace probe this host allows: the hand-written BTF is valid and an
    # XDP program with its function info loads (the extension itself may be refused).
    btf_fd = probes._btf_load(probes._btf_blob())
    try:
        os.close(probes._prog_load(bpf.PROG_TYPE_XDP, btf_fd=btf_fd, func_type_id=3))
    finally:
        os.close(btf_fd)


def test_kallsyms_lookup() -> None:
    assert kallsyms_has("__x64_sys_getpid") or kallsyms_has("__arm64_sys_getpid")
    assert kallsyms_has("no_such_kernel_function_at_all") is False


def test_interfaces_of_a_missing_namespace_is_an_error() -> None:
    with pytest.raises(KernelError, match="/run/netns/no-such-ns"):
        RealKernel("/sys/fs/bpf/unused").interfaces("/run/netns/no-such-ns")


@on_real
def test_a_shared_map_that_does_not_fit_is_refused(world: World) -> None:
    shared = world.root / "maps" / "app" / "shared"
    shared.parent.mkdir(parents=True)
    support.sh("bpftool", "map", "create", str(shared), "type", "array", "key", "4", "value",
               "8", "entries", "4", "name", "shared")  # fmt: skip
    pinned = support.bpftool_json("map", "show", "pinned", str(shared))
    with pytest.raises(KernelError, match=r"max_entries 4 \(wanted 1\)") as err:
        world.kernel.install("TracepointProgram/writer/x", WRITER, GETPID)
    assert str(shared) in str(err.value)
    with pytest.raises(KernelError, match=r"max_entries 4 \(wanted 1\)"):
        world.kernel.verify(WRITER)  # apply's pre-flight sees it too
    assert world.kernel.observe() == []
    assert support.bpftool_json("map", "show", "pinned", str(shared)) == pinned  # untouched
    world.kernel.remove_maps("maps/app")
    assert world.pins() == []


@on_real
def test_verify_reuses_shared_maps_and_pins_nothing(world: World) -> None:
    writer = world.kernel.install("TracepointProgram/writer/x", WRITER, GETPID)
    before = world.pins()
    world.kernel.verify(READER)
    fresh = ProgramSpec(WRITER.object_path, WRITER.function, ProgType.TRACEPOINT, maps_dir="new")
    world.kernel.verify(fresh)
    assert world.pins() == before and world.kernel.map_dirs() == ["maps/app"]
    assert world.kernel.observe() == [writer]
    world.kernel.uninstall("TracepointProgram/writer/x")
    world.kernel.remove_maps("maps/app")
    assert world.pins() == []
