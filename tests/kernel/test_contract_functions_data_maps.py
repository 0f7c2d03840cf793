"""The Kernel contract, continued: kernel-function programs (kprobe, fentry, fexit), feature
probes, global data, shared maps, uprobes inside containers, host queries.

Like test_contract.py, every test runs against FakeKernel and RealKernel. Where this host's
kernel cannot do something (kprobes are not configured here, fentry/fexit load with EPERM) the
real-kernel run checks the refusal instead: a clear error that names the feature and leaves
nothing behind. The VM tier (tests/vm/test_kernel_vm.py) runs them for real.
"""

from __future__ import annotations

import os

import pytest

from reconciler.kernel import (
    FakeKernel,
    FentryPoint,
    FexitPoint,
    KernelError,
    KprobePoint,
    Probe,
    ProgramSpec,
    ProgType,
    TracepointPoint,
    UprobePoint,
)
from reconciler.kernel.probes import FEATURES
from reconciler.kernel.types import KprobeLinkView, TracingLinkView, UprobeLinkView
from tests import support
from tests.kernel.harness import World, obj, vm_obj, wait_for
from tests.kernel.test_contract import GETPID, UPROBE, assert_nothing_left

KPROBE = ProgramSpec(vm_obj("kernel_probes"), "kprobe_count", ProgType.KPROBE)
KRETPROBE = ProgramSpec(vm_obj("kernel_probes"), "kretprobe_count", ProgType.KPROBE)
FENTRY = ProgramSpec(vm_obj("kernel_probes"), "fentry_count", ProgType.FENTRY)
FEXIT = ProgramSpec(vm_obj("kernel_probes"), "fexit_count", ProgType.FEXIT)
GETPPID = TracepointPoint("syscalls", "sys_enter_getppid")
FUNC = "__x64_sys_getpid"


def u64(value: int) -> bytes:
    return value.to_bytes(8, "little")


def u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


def expect_refusal(w: World, feature: str, spec: ProgramSpec, point: object) -> None:
    """The kernel lacks ``feature``: install refuses, saying so, and leaves nothing."""
    reason = w.kernel.probe(feature).reason
    with pytest.raises(KernelError, match=f"cannot run {feature} programs") as err:
        w.kernel.install("Kernel/refused/x", spec, point)  # type: ignore[arg-type]
    assert reason in str(err.value) and w.kernel.release() in str(err.value)
    assert_nothing_left(w)


# --- probes and host queries ----------------------------------------------------------------


def test_probes_answer_every_feature(world: World) -> None:
    for feature in FEATURES:
        found = world.kernel.probe(feature)
        assert isinstance(found, Probe) and found.feature == feature and found.reason
        assert bool(found) is found.supported
        assert world.kernel.probe(feature) == found  # cached: the same answer
    with pytest.raises(ValueError, match="no probe for feature 'warp'"):
        world.kernel.probe("warp")
    if world.real:
        assert world.kernel.probe("tracepoint") and world.kernel.probe("uprobe")
    assert_nothing_left(world)


def test_release_and_interfaces(world: World) -> None:
    release = world.kernel.release()
    assert release and release == (os.uname().release if world.real else release)
    assert "lo" in world.kernel.interfaces()
    assert "eth0" in world.kernel.interfaces(world.netns)
    if world.real:  # the veth pair's namespace holds exactly its end and lo (ip agrees)
        out = support.sh("ip", "-n", world.ns_name, "-o", "link", "show").stdout
        names = sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())
        assert world.kernel.interfaces(world.netns) == names == ["eth0", "lo"]


# --- kprobes, fentry, fexit -----------------------------------------------------------------------


def test_kprobe_install_replace_uninstall(world: World) -> None:
    point = KprobePoint(FUNC)
    if not world.kernel.probe("kprobe"):
        expect_refusal(world, "kprobe", KPROBE, point)
        return
    inst = world.kernel.install("KprobeProgram/getpid/x", KPROBE, point)
    assert inst.attached and inst.prog_type == "kprobe" and inst.link_id is not None
    assert isinstance(inst.attach, KprobeLinkView)
    assert (inst.attach.perf_event_type, inst.attach.func) == ("kprobe", FUNC)
    new = world.kernel.replace(
        "KprobeProgram/getpid/x", KRETPROBE, KprobePoint(FUNC, retprobe=True)
    )
    assert new.link_pin == inst.link_pin and new.link_id != inst.link_id
    assert isinstance(new.attach, KprobeLinkView)
    assert new.attach.perf_event_type == "kretprobe" and new.attach.retprobe is True
    assert world.kernel.observe() == [new]
    world.kernel.uninstall("KprobeProgram/getpid/x")
    assert_nothing_left(world)


@pytest.mark.parametrize(
    ("spec", "point", "message"),
    [
        (KPROBE, KprobePoint("no_such_kernel_function"), "no_such_kernel_function"),
        (KRETPROBE, KprobePoint(FUNC, offset=4, retprobe=True), "takes no offset"),
        (FENTRY, FentryPoint("no_such_kernel_function"), "no_such_kernel_function"),
        (FENTRY, KprobePoint(FUNC), "cannot attach to KprobePoint"),
    ],
)
def test_kernel_function_mistakes_name_the_problem(
    world: World, spec: ProgramSpec, point: object, message: str
) -> None:
    feature = {ProgType.KPROBE: "kprobe", ProgType.FENTRY: "fentry"}[spec.prog_type]
    if not world.kernel.probe(feature) and "cannot attach" not in message:
        message = f"cannot run {feature} programs"  # this kernel refuses before looking
    with pytest.raises(KernelError, match=message):
        world.kernel.install("Kernel/bad/x", spec, point)  # type: ignore[arg-type]
    assert_nothing_left(world)


@pytest.mark.parametrize(
    ("spec", "point"), [(FENTRY, FentryPoint(FUNC)), (FEXIT, FexitPoint(FUNC))]
)
def test_fentry_fexit_install_replace_uninstall(
    world: World, spec: ProgramSpec, point: FentryPoint | FexitPoint
) -> None:
    feature = spec.prog_type.value
    if not world.kernel.probe(feature):
        expect_refusal(world, feature, spec, point)
        return
    pin_dir = f"{spec.prog_type.value.title()}Program/getpid/x"
    inst = world.kernel.install(pin_dir, spec, point)
    assert inst.attached and inst.prog_type == "tracing"
    assert isinstance(inst.attach, TracingLinkView)
    assert inst.attach.attach_type == f"trace_{feature}"
    assert isinstance(inst.attach.target_btf_id, int) and inst.attach.target_btf_id > 0
    world.kernel.verify(spec, point)
    world.kernel.verify(spec)  # without the point: checks what it can without loading
    new = world.kernel.replace(pin_dir, spec, point)
    assert new.prog_id != inst.prog_id and new.link_pin == inst.link_pin
    assert isinstance(new.attach, TracingLinkView)
    assert new.attach.target_btf_id == inst.attach.target_btf_id
    world.kernel.uninstall(pin_dir)
    assert_nothing_left(world)


# --- global data ------------------------------------------------------------------------------


def test_global_data_sets_variables_before_load(world: World) -> None:
    spec = ProgramSpec(
        obj("global_data"),
        "tp_step",
        ProgType.TRACEPOINT,
        global_data=(("step", u64(5)), ("tag", u32(42)), ("calls", u64(1000))),
    )
    inst = world.kernel.install("TracepointProgram/step/x", spec, GETPID)
    assert sorted(m.name for m in inst.maps) == ["bss", "counters", "data", "rodata"]
    if world.real:
        world.getpid(4)
        counted, tag = world.counters(inst)
        assert counted >= 20 and counted % 5 == 0  # every getpid(2) adds step (5), not 1
        assert tag == 42
        assert world.counters(inst, "rodata") == [5]  # bpftool reads the frozen .rodata
        assert world.counters(inst, "bss")[0] >= 1004  # .bss started at the value we gave
    world.kernel.uninstall("TracepointProgram/step/x")
    assert_nothing_left(world)


def test_global_data_defaults_without_values(world: World) -> None:
    spec = ProgramSpec(obj("global_data"), "tp_step", ProgType.TRACEPOINT)
    inst = world.kernel.install("TracepointProgram/step/x", spec, GETPID)
    if world.real:
        world.getpid(3)
        counted, tag = world.counters(inst)
        assert counted >= 3 and tag == 7  # step 1 and tag 7, as compiled
    world.kernel.uninstall("TracepointProgram/step/x")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ((("nosuch", u32(1)),), "global variable nosuch not found .*step, tag"),
        ((("tag", b"\1\0"),), "global variable tag .* is 4 bytes, got 2"),
        ((("step", u64(2)), ("step", u32(2))), "global variable step .* is 8 bytes, got 4"),
    ],
)
def test_global_data_mistakes_name_the_variable(
    world: World, values: tuple[tuple[str, bytes], ...], message: str
) -> None:
    spec = ProgramSpec(obj("global_data"), "tp_step", ProgType.TRACEPOINT, global_data=values)
    with pytest.raises(KernelError, match=message):
        world.kernel.install("TracepointProgram/step/x", spec, GETPID)
    with pytest.raises(KernelError, match=message):
        world.kernel.verify(spec)
    assert_nothing_left(world)


# --- shared maps ------------------------------------------------------------------------------

WRITER = ProgramSpec(obj("shared_maps"), "tp_writer", ProgType.TRACEPOINT, maps_dir="maps/app")
READER = ProgramSpec(obj("shared_maps"), "tp_reader", ProgType.TRACEPOINT, maps_dir="maps/app")


def test_shared_maps_are_one_map_for_every_user(world: World) -> None:
    writer = world.kernel.install("TracepointProgram/writer/x", WRITER, GETPID)
    reader = world.kernel.install("TracepointProgram/reader/x", READER, GETPPID)
    shared = str(world.root / "maps" / "app" / "shared")
    (w_shared,) = [m for m in writer.maps if m.name == "shared"]
    (r_shared,) = [m for m in reader.maps if m.name == "shared"]
    assert w_shared == r_shared and w_shared.pin == shared
    (w_bss,) = [m for m in writer.maps if m.name == "bss"]
    (r_bss,) = [m for m in reader.maps if m.name == "bss"]
    assert w_bss.id != r_bss.id  # global data stays private
    assert r_bss.pin.endswith("/TracepointProgram/reader/x/maps/bss")
    assert world.kernel.map_dirs() == ["maps/app"]

    if world.real:
        before = support.map_u64(f"id {w_shared.id}")
        world.getpid(7)
        world.getppid()
        seen = world.counters(reader, "bss")[0]
        after = support.map_u64(f"pinned {shared}")
        assert before + 7 <= seen <= after  # the reader saw the writer's count
        bpftool = support.bpftool_json("map", "show", "pinned", shared)
        assert bpftool["id"] == w_shared.id  # type: ignore[index, call-overload]

    world.kernel.uninstall("TracepointProgram/writer/x")
    assert world.kernel.map_dirs() == ["maps/app"]  # uninstall never removes shared maps
    (observed,) = world.kernel.observe()
    assert observed.maps == reader.maps
    if world.real:
        count = support.map_u64(f"pinned {shared}")
        world.getppid()
        assert world.counters(reader, "bss")[0] == count  # still reads the shared map

    again = world.kernel.install("TracepointProgram/writer/x", WRITER, GETPID)
    assert [m for m in again.maps if m.name == "shared"] == [w_shared]  # reused, not recreated
    for name in ("writer", "reader"):
        world.kernel.uninstall(f"TracepointProgram/{name}/x")
    world.kernel.remove_maps("maps/app")
    world.kernel.remove_maps("maps/app")  # idempotent
    assert world.kernel.map_dirs() == []
    assert_nothing_left(world)
    if world.real:
        wait_for(lambda: w_shared.id not in support.map_ids(), "the shared map to be freed")


def test_a_failed_install_leaves_no_new_shared_maps(world: World) -> None:
    spec = ProgramSpec(UPROBE.object_path, UPROBE.function, ProgType.UPROBE, maps_dir="maps/u")
    if isinstance(world.kernel, FakeKernel):
        world.kernel.fail_next["attach"] = KernelError("cannot attach uprobe: no such function")
    with pytest.raises(KernelError, match="no such function|nosuch"):
        world.kernel.install("UprobeProgram/x/y", spec, UprobePoint(world.uprobe_target, "nosuch"))
    assert world.kernel.map_dirs() == []
    assert_nothing_left(world)


@pytest.mark.parametrize(
    ("maps_dir", "message"),
    [
        ("../escape", "invalid maps directory"),
        ("/abs", "invalid maps directory"),
        ("TracepointProgram/writer/x", "inside the pin directory of attachment"),
        ("TracepointProgram/writer/x/maps", "inside the pin directory of attachment"),
    ],
)
def test_maps_dirs_stay_in_the_root_and_out_of_attachments(
    world: World, maps_dir: str, message: str
) -> None:
    world.kernel.install("TracepointProgram/writer/x", WRITER, GETPID)
    reader = ProgramSpec(READER.object_path, READER.function, READER.prog_type, maps_dir=maps_dir)
    with pytest.raises(KernelError, match=message):
        world.kernel.install("TracepointProgram/reader/x", reader, GETPPID)
    with pytest.raises(KernelError, match=message):
        world.kernel.remove_maps(maps_dir)
    assert [i.pin_dir for i in world.kernel.observe()] == ["TracepointProgram/writer/x"]
    world.kernel.uninstall("TracepointProgram/writer/x")
    world.kernel.remove_maps("maps/app")
    assert_nothing_left(world)


# --- uprobes in containers --------------------------------------------------------------------


def test_uprobe_in_a_container(world: World) -> None:
    ctr = world.container()
    if world.real:
        assert not os.path.exists(ctr.target)  # only the container's mount namespace has it
    point = UprobePoint(ctr.target, "bpfman_probe_me", container_pid=ctr.pid)
    inst = world.kernel.install("UprobeProgram/ctr/x", UPROBE, point)
    assert inst.attached and isinstance(inst.attach, UprobeLinkView)
    assert inst.attach.perf_event_type == "uprobe"
    assert inst.attach.file == f"/proc/{ctr.pid}/root{ctr.target}"
    if world.real:
        ctr.run(6)
        assert world.counters(inst) == [6]
        world.run_uprobe_target(3)  # the same binary outside the container is another file
        assert world.counters(inst) == [6]
    world.kernel.uninstall("UprobeProgram/ctr/x")
    assert_nothing_left(world)


def test_uprobe_container_mistakes(world: World) -> None:
    ctr = world.container()
    gone = UprobePoint(ctr.target, "bpfman_probe_me", container_pid=2**22 + 1)
    with pytest.raises(KernelError, match=f"container process {2**22 + 1} does not exist"):
        world.kernel.install("UprobeProgram/ctr/x", UPROBE, gone)
    missing = UprobePoint("/usr/bin/no-such-binary", "main", container_pid=ctr.pid)
    with pytest.raises(KernelError, match="not an existing file in the mount namespace"):
        world.kernel.install("UprobeProgram/ctr/x", UPROBE, missing)
    assert_nothing_left(world)
