"""FakeKernel's multi-program hooks: what planner tests rely on (the real XDP dispatcher is
checked against the same behaviour in tests/vm/test_xdp_dispatch_vm.py)."""

from __future__ import annotations

import pytest

from reconciler.kernel import FakeKernel
from reconciler.kernel.types import (
    MAX_DISPATCHER_SLOTS,
    AttachConflict,
    DispatchSlot,
    KernelError,
    ProgramSpec,
    ProgType,
    TcHook,
    VerifierError,
    XdpDispatcherView,
    XdpHook,
)

NS = "/run/netns/fake-a"


def spec(function: str, prog_type: ProgType = ProgType.XDP, **kw: object) -> ProgramSpec:
    return ProgramSpec("/objs/prog.o", function, prog_type, **kw)  # type: ignore[arg-type]


def slot(
    pin_dir: str, priority: int, function: str = "", proceed_on: tuple[str, ...] = ("pass",)
) -> DispatchSlot:
    return DispatchSlot(pin_dir, spec(function or pin_dir.replace("/", "_")), priority, proceed_on)


@pytest.fixture
def kernel() -> FakeKernel:
    k = FakeKernel("/sys/fs/bpf/bpfman-fake", check_files=False)
    k.add_interface("eth0", NS)
    return k


HOOK = XdpHook("eth0", NS)


def order(kernel: FakeKernel, hook: XdpHook | TcHook = HOOK) -> list[str | None]:
    return [s.pin_dir or s.name for s in kernel.hook_state(hook).slots]


def test_programs_run_by_priority_then_pin_dir(kernel: FakeKernel) -> None:
    got = kernel.dispatch(HOOK, [slot("c", 10), slot("b", 20), slot("a", 20)])
    assert [i.pin_dir for i in got] == ["c", "b", "a"]  # one Installed per slot, as given
    assert order(kernel) == ["c", "a", "b"]
    state = kernel.hook_state(HOOK)
    assert state.dispatcher_id == kernel.xdp_program_on("eth0", NS)
    assert [s.priority for s in state.slots] == [10, 20, 20]
    assert kernel.dispatch_swaps == 1 and kernel.hook_swaps(HOOK) == 1
    a = next(i for i in kernel.observe() if i.pin_dir == "a")
    assert a.attached and a.prog_type == "ext"
    assert isinstance(a.attach, XdpDispatcherView)
    assert a.attach.slot.dispatcher_id == state.dispatcher_id
    assert (a.attach.slot.position, a.attach.slot.priority, a.attach.slot.proceed_on) == (
        1,
        20,
        ("pass",),
    )
    assert a.attach_json()["proceed_on"] == ["pass"]


def test_reorder_keeps_program_ids_and_swaps_once(kernel: FakeKernel) -> None:
    kernel.dispatch(HOOK, [slot("a", 1), slot("b", 2), slot("c", 3)])
    before = kernel.hook_state(HOOK)
    ids = {s.pin_dir: s.prog_id for s in before.slots}
    kernel.dispatch(HOOK, [slot("a", 3), slot("b", 2), slot("c", 1, proceed_on=("pass", "drop"))])
    after = kernel.hook_state(HOOK)
    assert order(kernel) == ["c", "b", "a"]
    assert {s.pin_dir: s.prog_id for s in after.slots} == ids
    assert after.dispatcher_id != before.dispatcher_id
    assert after.slots[0].proceed_on == ("pass", "drop")
    assert kernel.dispatch_swaps == 2


def test_same_slots_again_change_nothing(kernel: FakeKernel) -> None:
    slots = [slot("a", 1), slot("b", 2)]
    kernel.dispatch(HOOK, slots)
    state = kernel.hook_state(HOOK)
    kernel.dispatch(HOOK, slots)
    assert kernel.hook_state(HOOK) == state
    assert kernel.dispatch_swaps == 1


def test_a_changed_spec_gets_a_new_program(kernel: FakeKernel) -> None:
    kernel.dispatch(HOOK, [slot("a", 1), slot("b", 2)])
    ids = {s.pin_dir: s.prog_id for s in kernel.hook_state(HOOK).slots}
    changed = DispatchSlot("b", spec("b", global_data=(("x", b"\1"),)), 2, ("pass",))
    kernel.dispatch(HOOK, [slot("a", 1), changed])
    now = {s.pin_dir: s.prog_id for s in kernel.hook_state(HOOK).slots}
    assert now["a"] == ids["a"] and now["b"] != ids["b"]
    assert kernel.dispatch_swaps == 2


def test_adding_and_removing_is_one_swap_each(kernel: FakeKernel) -> None:
    kernel.dispatch(HOOK, [slot("a", 1)])
    kernel.dispatch(HOOK, [slot("a", 1), slot("b", 2)])
    kernel.dispatch(HOOK, [slot("b", 2)])
    assert order(kernel) == ["b"]
    assert [i.pin_dir for i in kernel.observe()] == ["b"]
    assert kernel.dispatch_swaps == 3
    kernel.dispatch(HOOK, [])
    assert kernel.hook_state(HOOK).dispatcher_id is None
    assert kernel.xdp_program_on("eth0", NS) is None
    assert kernel.observe() == []


def test_a_verifier_rejection_changes_nothing(kernel: FakeKernel) -> None:
    kernel.dispatch(HOOK, [slot("a", 1)])
    state = kernel.hook_state(HOOK)
    with pytest.raises(VerifierError):
        kernel.dispatch(HOOK, [slot("a", 1), slot("b", 2, function="reject_me")])
    assert kernel.hook_state(HOOK) == state
    assert [i.pin_dir for i in kernel.observe()] == ["a"]


def test_foreign_programs_are_kept_at_their_priority(kernel: FakeKernel) -> None:
    kernel.dispatch(HOOK, [slot("a", 10), slot("b", 30)])
    foreign = kernel.add_foreign_program(HOOK, "xdp_pass", priority=20, proceed_on=("pass",))
    state = kernel.hook_state(HOOK)
    assert [(s.name if s.pin_dir is None else s.pin_dir) for s in state.slots] == [
        "a",
        "xdp_pass",
        "b",
    ]
    assert state.slots[1].pin_dir is None and state.slots[1].prog_id == foreign
    kernel.dispatch(HOOK, [slot("a", 40), slot("b", 5)])  # reorder ours
    assert order(kernel) == ["b", "xdp_pass", "a"]
    kernel.dispatch(HOOK, [])  # all of ours gone: the foreign program keeps running
    state = kernel.hook_state(HOOK)
    assert [s.prog_id for s in state.slots] == [foreign]
    assert kernel.xdp_program_on("eth0", NS) == state.dispatcher_id


def test_at_most_ten_programs_foreign_ones_included(kernel: FakeKernel) -> None:
    kernel.add_foreign_program(HOOK, "other")
    slots = [slot(f"p{i}", i) for i in range(MAX_DISPATCHER_SLOTS)]
    with pytest.raises(KernelError, match="at most 10"):
        kernel.dispatch(HOOK, slots)
    kernel.dispatch(HOOK, slots[:-1])
    assert len(kernel.hook_state(HOOK).slots) == MAX_DISPATCHER_SLOTS


def test_a_foreign_direct_program_is_a_conflict(kernel: FakeKernel) -> None:
    prog = kernel.attach_foreign_xdp("eth0", NS)
    assert kernel.hook_state(HOOK).direct_prog_id == prog
    with pytest.raises(AttachConflict, match="not a dispatcher"):
        kernel.dispatch(HOOK, [slot("a", 1)])
    assert kernel.observe() == []


def test_errors_a_user_can_cause(kernel: FakeKernel) -> None:
    with pytest.raises(KernelError, match="does not exist"):
        kernel.dispatch(XdpHook("nope", NS), [slot("a", 1)])
    with pytest.raises(KernelError, match="unknown proceed-on"):
        kernel.dispatch(HOOK, [slot("a", 1, proceed_on=("bogus",))])
    with pytest.raises(KernelError, match="listed twice"):
        kernel.dispatch(HOOK, [slot("a", 1), slot("a", 2)])
    kernel.add_interface("eth1", NS, native_xdp=False)
    with pytest.raises(KernelError, match="native"):
        kernel.dispatch(XdpHook("eth1", NS, mode="native"), [slot("a", 1)])
    kernel.dispatch(XdpHook("eth1", NS), [slot("a", 1)])
    view = next(iter(kernel.observe())).attach
    assert isinstance(view, XdpDispatcherView) and view.mode == "generic"


def test_tc_hooks_work_the_same_way(kernel: FakeKernel) -> None:
    hook = TcHook("eth0", "ingress", NS)

    def tc(pin_dir: str, priority: int) -> DispatchSlot:
        return DispatchSlot(pin_dir, spec(pin_dir, ProgType.TC), priority, ("ok",))

    kernel.dispatch(hook, [tc("a", 2), tc("b", 1)])
    foreign = kernel.add_foreign_program(hook, "tc_other", priority=0, proceed_on=("ok",))
    kernel.dispatch(hook, [tc("a", 1), tc("b", 2)])
    assert order(kernel, hook) == ["tc_other", "a", "b"]
    assert kernel.hook_state(hook).slots[0].prog_id == foreign
    assert kernel.hook_state(HOOK).dispatcher_id is None  # the XDP hook is another hook
    assert kernel.hook_swaps(hook) == 2  # ours; xdp-loader's own swap is not counted
