"""The Kernel contract, run against FakeKernel and RealKernel alike.

Real-kernel runs also check with independent tools (ip, bpftool) and prove the programs run:
frames counted by XDP and TCX programs, getpid(2) calls by a tracepoint program, function calls
by a uprobe program.
"""

from __future__ import annotations

import pytest

from reconciler.kernel import (
    AttachConflict,
    AttachPoint,
    FakeKernel,
    Installed,
    KernelError,
    Placement,
    ProgramSpec,
    ProgType,
    TcxPoint,
    TracepointPoint,
    UprobePoint,
    VerifierError,
    XdpPoint,
)
from reconciler.kernel.types import (
    TcDirectView,
    TcHook,
    TcxLinkView,
    TracepointLinkView,
    UprobeLinkView,
    XdpView,
)
from tests import support
from tests.kernel.harness import World, obj, wait_for

XDP_V1 = ProgramSpec(obj("xdp_counter"), "xdp_count", ProgType.XDP)
XDP_V2 = ProgramSpec(obj("xdp_counter"), "xdp_count_v2", ProgType.XDP)
XDP_REJECT = ProgramSpec(obj("reject"), "xdp_reject", ProgType.XDP)
TCX = ProgramSpec(obj("tcx_counter"), "tcx_count", ProgType.TCX)
TC = ProgramSpec(obj("tcx_counter"), "tcx_count", ProgType.TC)
TP = ProgramSpec(obj("tracepoint_counter"), "tp_count", ProgType.TRACEPOINT)
UPROBE = ProgramSpec(obj("uprobe_counter"), "uprobe_count", ProgType.UPROBE)
TC = ProgramSpec(obj("tcx_counter"), "tcx_count", ProgType.TC)  # a cls_bpf program (SEC("tc"))
GETPID = TracepointPoint("syscalls", "sys_enter_getpid")

# The tests that exercise each program kind of the registry (reconciler.kinds), against both
# kernels; "MODULE.test" names a test of another tests/kernel module. tests/unit/test_kinds.py
# checks that every registered kind is listed here and that each named test exists.
KIND_COVERAGE: dict[str, tuple[str, ...]] = {
    "XdpProgram": (
        "test_xdp_install_observe_uninstall",
        "test_xdp_replace_swaps_atomically_and_keeps_pin_paths",
    ),
    "TcxProgram": ("test_tcx_placement_order", "test_tcx_replace_keeps_link_and_position"),
    "TcProgram": ("test_tc_alone_on_its_hook_attaches_directly",),
    "TracepointProgram": ("test_tracepoint_install_replace_uninstall",),
    "UprobeProgram": ("test_uprobe_counts_calls",),
    "KprobeProgram": ("test_contract_functions_data_maps.test_kprobe_install_replace_uninstall",),
    "FentryProgram": (
        "test_contract_functions_data_maps.test_fentry_fexit_install_replace_uninstall",
    ),
    "FexitProgram": (
        "test_contract_functions_data_maps.test_fentry_fexit_install_replace_uninstall",
    ),
    "CgroupSkbProgram": (
        "test_contract_cgroup.test_cgroup_skb_install_observe_replace_uninstall",
        "test_contract_cgroup.test_cgroup_skb_link_of_a_removed_cgroup_is_not_attached",
    ),
    "CgroupSockAddrProgram": (
        "test_contract_cgroup.test_cgroup_sock_addr_install_observe_replace_uninstall",
    ),
}


def assert_nothing_left(w: World) -> None:
    assert w.kernel.observe() == []
    if w.real:
        assert w.pins() == [], "pins left under the root"


# --- XDP ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "generic"])
def test_xdp_install_observe_uninstall(world: World, mode: str) -> None:
    inst = world.kernel.install("XdpProgram/count/eth0", XDP_V1, world.xdp(mode))

    assert inst.pin_dir == "XdpProgram/count/eth0"
    assert (inst.prog_name, inst.prog_type) == ("xdp_count", "xdp")
    assert inst.attached and inst.link_id is None  # netlink-attached: no bpf_link
    # Both kernels give the same view, so `bpfman list --json` shows the same keys.
    assert isinstance(inst.attach, XdpView) and inst.attach.ifname == "eth0"
    assert list(inst.attach_json()) == ["ifindex", "ifname", "mode", "netns"]
    assert inst.attach.mode in (("native", "generic") if mode == "auto" else (mode,))
    assert world.kernel.observe() == [inst]
    assert world.kernel.xdp_program_on("eth0", world.netns) == inst.prog_id

    if world.real:
        assert world.ip_xdp() == (inst.prog_id, inst.attach.mode)
        assert inst.prog_pin.endswith("/XdpProgram/count/eth0/prog")
        assert [m.name for m in inst.maps] == ["counters"]
        world.send_frames(7)
        assert world.counters(inst) == [7, 0]

    world.kernel.uninstall("XdpProgram/count/eth0")
    assert_nothing_left(world)
    assert world.kernel.xdp_program_on("eth0", world.netns) is None
    if world.real:
        assert world.ip_xdp() == (None, None)
        wait_for(lambda: not world.prog_exists(inst.prog_id), "the program to be freed")


def test_xdp_replace_swaps_atomically_and_keeps_pin_paths(world: World) -> None:
    old = world.kernel.install("XdpProgram/count/eth0", XDP_V1, world.xdp())
    new = world.kernel.replace("XdpProgram/count/eth0", XDP_V2, world.xdp())

    assert new.prog_id != old.prog_id and new.prog_name == "xdp_count_v2"
    assert (new.prog_pin, [m.pin for m in new.maps]) == (old.prog_pin, [m.pin for m in old.maps])
    assert isinstance(old.attach, XdpView) and isinstance(new.attach, XdpView)
    assert new.attached and new.attach.mode == old.attach.mode
    assert world.kernel.observe() == [new]
    if world.real:
        assert world.ip_xdp() == (new.prog_id, old.attach.mode)
        wait_for(lambda: not world.prog_exists(old.prog_id), "the old program to be freed")
        world.send_frames(3)
        assert world.counters(new) == [0, 3]  # v2 counts in slot 1 of its own (new) map
        assert world.pins() == ["XdpProgram", "XdpProgram/count", "XdpProgram/count/eth0",
                                "XdpProgram/count/eth0/maps", "XdpProgram/count/eth0/maps/counters",
                                "XdpProgram/count/eth0/prog"]  # fmt: skip
    world.kernel.uninstall("XdpProgram/count/eth0")
    assert_nothing_left(world)


def test_xdp_never_clobbers_a_foreign_program(world: World) -> None:
    foreign = world.attach_foreign_xdp()

    with pytest.raises(AttachConflict) as err:
        world.kernel.install("XdpProgram/count/eth0", XDP_V1, world.xdp())
    assert "eth0" in str(err.value) and str(foreign) in str(err.value)
    assert_nothing_left(world)
    assert world.kernel.xdp_program_on("eth0", world.netns) == foreign
    if world.real:
        assert world.ip_xdp()[0] == foreign


def test_xdp_uninstall_leaves_a_foreign_program_alone(world: World) -> None:
    inst = world.kernel.install("XdpProgram/count/eth0", XDP_V1, world.xdp("generic"))
    # Someone else takes the interface over behind bpfman's back.
    if isinstance(world.kernel, FakeKernel):
        world.kernel.detach_xdp("eth0", world.netns)
    else:
        support.sh("ip", "-n", world.ns_name, "link", "set", "dev", "eth0", "xdpgeneric", "off")
    foreign = world.attach_foreign_xdp()
    (observed,) = world.kernel.observe()
    assert observed.prog_id == inst.prog_id and not observed.attached

    world.kernel.uninstall("XdpProgram/count/eth0")
    assert_nothing_left(world)
    assert world.kernel.xdp_program_on("eth0", world.netns) == foreign


def test_fingerprint_changes_whenever_observe_could(world: World) -> None:
    """The plan cache's premise: an unchanged fingerprint means observe() would answer the same.
    Counters are not part of it; pins, links and netlink attachments are."""
    ns = [world.netns]
    world.kernel.ensure_root()
    empty = world.kernel.fingerprint(ns)
    assert world.kernel.fingerprint(ns) == empty
    inst = world.kernel.install("XdpProgram/count/eth0", XDP_V1, world.xdp("generic"))
    installed = world.kernel.fingerprint(ns)
    assert installed != empty
    if world.real:
        world.send_frames(3)  # runs the program: its counters move, the fingerprint does not
    assert world.kernel.fingerprint(ns) == installed
    tp = world.kernel.install("TracepointProgram/tp/0", TP, GETPID)
    with_tp = world.kernel.fingerprint(ns)
    assert with_tp != installed

    # Detached behind bpfman's back through netlink: nothing under bpffs changes.
    if isinstance(world.kernel, FakeKernel):
        world.kernel.detach_xdp("eth0", world.netns)
    else:
        support.sh("ip", "-n", world.ns_name, "link", "set", "dev", "eth0", "xdpgeneric", "off")
    assert not world.kernel.observe()[1].attached
    assert world.kernel.fingerprint(ns) != with_tp
    detached = world.kernel.fingerprint(ns)

    world.kernel.uninstall("TracepointProgram/tp/0")
    assert world.kernel.fingerprint(ns) != detached
    world.kernel.uninstall("XdpProgram/count/eth0")
    assert world.kernel.fingerprint(ns) == empty
    assert_nothing_left(world)
    assert inst.prog_id and tp.prog_id


# --- verifier -------------------------------------------------------------------------------------


def test_verifier_rejection_leaves_nothing(world: World) -> None:
    with pytest.raises(VerifierError) as err:
        world.kernel.install("XdpProgram/bad/eth0", XDP_REJECT, world.xdp())
    assert "xdp_reject" in str(err.value) and err.value.log
    if world.real:
        assert "invalid access to packet" in str(err.value)
    assert_nothing_left(world)
    assert world.kernel.xdp_program_on("eth0", world.netns) is None


def test_rejected_replace_keeps_the_old_program_running(world: World) -> None:
    old = world.kernel.install("XdpProgram/count/eth0", XDP_V1, world.xdp())
    with pytest.raises(VerifierError):
        world.kernel.replace("XdpProgram/count/eth0", XDP_REJECT, world.xdp())
    assert world.kernel.observe() == [old]
    if world.real:
        assert world.ip_xdp()[0] == old.prog_id
        world.send_frames(2)
        assert world.counters(old) == [2, 0]
    world.kernel.uninstall("XdpProgram/count/eth0")


def test_verify_loads_and_releases(world: World) -> None:
    world.kernel.verify(TP)
    with pytest.raises(VerifierError):
        world.kernel.verify(XDP_REJECT)
    assert_nothing_left(world)


# --- TCX ------------------------------------------------------------------------------------------


def tcx_install(w: World, name: str, placement: Placement | None = None) -> Installed:
    return w.kernel.install(f"TcxProgram/{name}/eth0", TCX, w.tcx(), placement)


def order(w: World) -> list[str]:
    """Managed tcx programs on eth0 ingress, in the kernel's run order (our observer)."""
    tcx = [i for i in w.kernel.observe() if isinstance(i.attach, TcxLinkView)]
    assert all(i.attached for i in tcx)
    return [i.pin_dir.split("/")[1] for i in sorted(tcx, key=lambda i: i.attach.position)]


def run_order(w: World, installed: dict[str, Installed]) -> list[str]:
    """The order the programs actually ran in, from the marks they recorded (independent of our
    observer): each records the skb mark it saw in counters[1] and adds one to it."""
    w.send_frames(1)
    seen = {name: w.counters(inst)[1] for name, inst in installed.items()}
    return sorted(seen, key=seen.__getitem__)


def test_tcx_placement_order(world: World) -> None:
    a = tcx_install(world, "a")
    b = tcx_install(world, "b")  # appended last
    c = tcx_install(world, "c", Placement(before="TcxProgram/a/eth0"))
    d = tcx_install(world, "d", Placement(after="TcxProgram/a/eth0"))

    assert order(world) == ["c", "a", "d", "b"]
    assert isinstance(a.attach, TcxLinkView) and a.link_id is not None
    assert (a.attach.attach_type, a.attach.ifname, a.attach.netns) == (
        "tcx_ingress",
        "eth0",
        world.netns,
    )
    keys = ["link_type", "ifindex", "attach_type", "ifname", "position", "netns"]
    assert list(a.attach_json()) == keys
    if world.real:
        assert run_order(world, {"a": a, "b": b, "c": c, "d": d}) == ["c", "a", "d", "b"]
        link = world.link_json(a.link_id or 0)
        assert link is not None and link["prog_id"] == a.prog_id
    for name in "abcd":
        world.kernel.uninstall(f"TcxProgram/{name}/eth0")
    assert_nothing_left(world)


def test_tcx_replace_keeps_link_and_position(world: World) -> None:
    a = tcx_install(world, "a")
    b = tcx_install(world, "b")
    new_a = world.kernel.replace("TcxProgram/a/eth0", TCX, world.tcx())

    assert new_a.link_id == a.link_id and new_a.prog_id != a.prog_id  # BPF_LINK_UPDATE
    assert order(world) == ["a", "b"]
    if world.real:
        link = world.link_json(a.link_id or 0)
        assert link is not None and link["prog_id"] == new_a.prog_id
        wait_for(lambda: not world.prog_exists(a.prog_id), "the old program to be freed")
        assert run_order(world, {"a": new_a, "b": b}) == ["a", "b"]
    for name in "ab":
        world.kernel.uninstall(f"TcxProgram/{name}/eth0")
    assert_nothing_left(world)


def test_tcx_replace_with_placement_moves_the_link(world: World) -> None:
    a = tcx_install(world, "a")
    tcx_install(world, "b")
    moved = world.kernel.replace(
        "TcxProgram/a/eth0", TCX, world.tcx(), Placement(after="TcxProgram/b/eth0")
    )
    assert moved.link_id != a.link_id and moved.link_pin == a.link_pin
    assert order(world) == ["b", "a"]
    if world.real:
        wait_for(lambda: world.link_json(a.link_id or 0) is None, "the old link to be freed")
    for name in "ab":
        world.kernel.uninstall(f"TcxProgram/{name}/eth0")
    assert_nothing_left(world)


def test_tc_program_alone_on_its_hook(world: World) -> None:
    """A TC program attached directly (our cls_bpf filter, as on kernels without freplace):
    both kernels give the same view of it."""
    inst = world.kernel.install("TcProgram/count/eth0", TC, TcHook("eth0", "egress", world.netns))

    assert inst.attached and inst.link_id is None
    assert isinstance(inst.attach, TcDirectView) and inst.attach.ifindex > 0
    assert (inst.attach.ifname, inst.attach.direction, inst.attach.netns) == (
        "eth0",
        "egress",
        world.netns,
    )
    doc = inst.attach_json()
    assert list(doc) == ["ifindex", "ifname", "direction", "filter", "netns"]
    assert doc["filter"] == "pref 50 handle 0xb7f"
    assert world.kernel.observe() == [inst]
    world.kernel.uninstall("TcProgram/count/eth0")
    assert_nothing_left(world)


def test_tcx_placement_next_to_an_unknown_neighbour_fails_cleanly(world: World) -> None:
    with pytest.raises(KernelError, match="TcxProgram/nope/eth0"):
        tcx_install(world, "a", Placement(before="TcxProgram/nope/eth0"))
    assert_nothing_left(world)


# --- TC ------------------------------------------------------------------------------------------


def test_tc_alone_on_its_hook_attaches_directly(world: World) -> None:
    """A TC program alone on its hook, without a dispatcher (how a kernel without freplace runs
    it; with freplace, Kernel.dispatch takes TC programs)."""
    hook = TcHook("eth0", "ingress", netns=world.netns)
    inst = world.kernel.install("TcProgram/count/eth0", TC, hook)

    assert inst.attached and (inst.prog_name, inst.prog_type) == ("tcx_count", "sched_cls")
    assert world.kernel.observe() == [inst]
    if world.real:
        world.send_frames(3)
        assert world.counters(inst)[0] >= 3

    world.kernel.uninstall("TcProgram/count/eth0")
    assert_nothing_left(world)


# --- tracepoints and uprobes ----------------------------------------------------------------------


def test_tracepoint_install_replace_uninstall(world: World) -> None:
    inst = world.kernel.install("TracepointProgram/getpid/x", TP, GETPID)
    assert inst.attached and inst.link_id is not None and inst.prog_type == "tracepoint"
    assert isinstance(inst.attach, TracepointLinkView)
    assert inst.attach.tracepoint == "sys_enter_getpid"
    if world.real:
        world.getpid(25)
        assert world.counters(inst)[0] >= 25
        link = world.link_json(inst.link_id or 0)
        assert link is not None and link["prog_id"] == inst.prog_id

    new = world.kernel.replace("TracepointProgram/getpid/x", TP, GETPID)
    assert new.link_id != inst.link_id and new.link_pin == inst.link_pin and new.attached
    if world.real:
        wait_for(lambda: world.link_json(inst.link_id or 0) is None, "the old link to go")
        before = world.counters(new)[0]
        world.getpid(10)
        assert world.counters(new)[0] >= before + 10

    world.kernel.uninstall("TracepointProgram/getpid/x")
    assert_nothing_left(world)
    if world.real:
        wait_for(lambda: world.link_json(new.link_id or 0) is None, "the link to go")


def test_uprobe_counts_calls(world: World) -> None:
    point = UprobePoint(world.uprobe_target, func_name="bpfman_probe_me")
    inst = world.kernel.install("UprobeProgram/probe/x", UPROBE, point)
    assert inst.attached and inst.prog_type == "kprobe"
    assert isinstance(inst.attach, UprobeLinkView) and inst.attach.perf_event_type == "uprobe"
    if world.real:
        world.run_uprobe_target(5)
        assert world.counters(inst) == [5]

    ret = UprobePoint(world.uprobe_target, func_name="bpfman_probe_me", retprobe=True)
    new = world.kernel.replace("UprobeProgram/probe/x", UPROBE, ret)
    assert isinstance(new.attach, UprobeLinkView) and new.attach.perf_event_type == "uretprobe"
    if world.real:
        world.run_uprobe_target(4)
        assert world.counters(new) == [4]

    world.kernel.uninstall("UprobeProgram/probe/x")
    assert_nothing_left(world)


# --- errors and idempotence -----------------------------------------------------------------------


def test_uninstall_is_idempotent(world: World) -> None:
    world.kernel.uninstall("TracepointProgram/never/installed")
    world.kernel.install("TracepointProgram/getpid/x", TP, GETPID)
    world.kernel.uninstall("TracepointProgram/getpid/x")
    world.kernel.uninstall("TracepointProgram/getpid/x")
    assert_nothing_left(world)


def test_replace_of_nothing_installs(world: World) -> None:
    inst = world.kernel.replace("TracepointProgram/getpid/x", TP, GETPID)
    assert inst.attached and world.kernel.observe() == [inst]
    world.kernel.uninstall("TracepointProgram/getpid/x")
    assert_nothing_left(world)


def test_install_twice_is_refused(world: World) -> None:
    first = world.kernel.install("TracepointProgram/getpid/x", TP, GETPID)
    with pytest.raises(KernelError, match="already installed"):
        world.kernel.install("TracepointProgram/getpid/x", TP, GETPID)
    assert world.kernel.observe() == [first]
    world.kernel.uninstall("TracepointProgram/getpid/x")


@pytest.mark.parametrize(
    ("spec", "point", "message"),
    [
        (XDP_V1, XdpPoint("nosuch0"), "nosuch0"),
        (TP, TracepointPoint("syscalls", "sys_enter_nosuch"), "sys_enter_nosuch"),
        (TP, XdpPoint("lo"), "cannot attach"),
        (ProgramSpec(obj("xdp_counter"), "nosuch", ProgType.XDP), XdpPoint("lo"), "nosuch"),
        (ProgramSpec("/nonexistent.o", "f", ProgType.TRACEPOINT), GETPID, "nonexistent.o"),
        (UPROBE, UprobePoint("/nonexistent/bin", "main"), "/nonexistent/bin"),
        (XDP_V1, XdpPoint("lo", mode="turbo"), "turbo"),
        (TCX, TcxPoint("lo", "sideways"), "sideways"),
    ],
)
def test_user_errors_name_the_problem_and_leave_nothing(
    world: World, spec: ProgramSpec, point: AttachPoint, message: str
) -> None:
    if isinstance(world.kernel, FakeKernel):  # the fake knows an object's functions if told
        world.kernel.functions[obj("xdp_counter")] = {"xdp_count", "xdp_count_v2"}
    with pytest.raises(KernelError, match=message):
        world.kernel.install("Prog/bad/x", spec, point)
    assert_nothing_left(world)


@pytest.mark.parametrize("bad", ["", "/abs", "../escape", "a/./b", "a/.hidden", "a/%next/b"])
def test_invalid_pin_dirs_are_refused(world: World, bad: str) -> None:
    with pytest.raises(KernelError, match="invalid pin directory"):
        world.kernel.uninstall(bad)
    with pytest.raises(KernelError, match="invalid pin directory"):
        world.kernel.install(bad, TP, GETPID)


def test_pin_dirs_with_dots_round_trip(world: World) -> None:
    # bpffs refuses '.' in names; the pin dir must still come back exactly as given.
    inst = world.kernel.install("TracepointProgram/getpid.v2/x.y", TP, GETPID)
    assert inst.pin_dir == "TracepointProgram/getpid.v2/x.y"
    assert [i.pin_dir for i in world.kernel.observe()] == ["TracepointProgram/getpid.v2/x.y"]
    world.kernel.uninstall("TracepointProgram/getpid.v2/x.y")
    assert_nothing_left(world)


def test_queries(world: World) -> None:
    assert world.kernel.interface_exists("eth0", world.netns)
    assert not world.kernel.interface_exists("nosuch0", world.netns)
    assert world.kernel.interface_exists("lo")
    assert world.kernel.xdp_program_on("eth0", world.netns) is None
    assert world.kernel.tracepoint_exists("syscalls", "sys_enter_getpid")
    assert not world.kernel.tracepoint_exists("syscalls", "sys_enter_nosuch")
    assert "syscalls/sys_enter_getpid" in world.kernel.tracepoints()
