from reconciler.kernel import FakeKernel
from reconciler.kinds.tracepoint import TRACE_MAX_PROGS
from reconciler.plan.hostcheck import check
from tests.unit.factories import tracepoint, xdp


def kernel(tmp_path):
    k = FakeKernel(tmp_path, check_files=False)
    k.add_interface("eth0")
    return k


def test_missing_interface_names_address_manifest_and_choices(tmp_path):
    (problem,) = check([xdp("a", "eth9")], kernel(tmp_path), [])
    assert problem.startswith("XdpProgram/a[eth9] (xdp.yaml:1): interface 'eth9' does not exist")


def test_unknown_tracepoint_suggests_near_matches(tmp_path):
    (problem,) = check([tracepoint("t", "syscalls/sys_enter_getpidd")], kernel(tmp_path), [])
    assert "does not exist" in problem and "did you mean syscalls/sys_enter_getpid" in problem


def test_foreign_xdp_program_is_a_conflict(tmp_path):
    k = kernel(tmp_path)
    foreign = k.attach_foreign_xdp("eth0")
    (problem,) = check([xdp("a")], k, [])
    assert f"already runs XDP program id {foreign}" in problem


def test_two_xdp_programs_on_one_interface_need_freplace_for_a_dispatcher(tmp_path):
    k = kernel(tmp_path)
    k.features["freplace"] = False
    (problem,) = check([xdp("a"), xdp("b")], k, [], dispatching=False)
    assert problem.startswith("XDP on eth0: 2 programs want it")
    assert "needs freplace (BPF_PROG_TYPE_EXT), and kernel" in problem
    assert check([xdp("a"), xdp("b")], kernel(tmp_path), [], dispatching=True) == []


def test_a_dispatcher_runs_at_most_ten_programs(tmp_path):
    ds = [xdp(f"p{i}") for i in range(11)]
    (problem,) = check(ds, kernel(tmp_path), [], dispatching=True)
    assert "11 programs want it" in problem and "at most 10" in problem


def test_more_programs_than_a_tracepoint_takes(tmp_path):
    ds = [tracepoint(f"t{i}") for i in range(TRACE_MAX_PROGS + 1)]
    (problem,) = check(ds, kernel(tmp_path), [])
    assert "BPF_TRACE_MAX_PROGS" in problem and f"{TRACE_MAX_PROGS + 1} programs" in problem
    assert check(ds[:TRACE_MAX_PROGS], kernel(tmp_path), []) == []


def test_missing_kernel_feature_names_feature_and_kernel(tmp_path):
    from reconciler.kernel.types import Probe

    k = kernel(tmp_path)
    k.probe = lambda feature: Probe(feature, feature != "tracepoint", "not configured")  # type: ignore[method-assign]
    (problem,) = check([tracepoint("t")], k, [])
    assert (
        "needs tracepoint programs, which kernel 6.18.0-fake does not support (not configured)"
        in problem
    )


def test_a_user_whose_map_owner_is_not_wanted(tmp_path):
    owner, user = tracepoint("owner"), tracepoint("user")
    user = type(user)(**{**user.__dict__, "depends_on": (owner.address,)})
    (problem,) = check([user], kernel(tmp_path), [])
    assert f"uses the maps of {owner.address}" in problem
    assert check([owner, user], kernel(tmp_path), []) == []


def test_programs_on_one_interface_must_agree_on_the_xdp_mode(tmp_path):
    import dataclasses

    a = xdp("a")
    b = xdp("b")
    b = dataclasses.replace(b, point=dataclasses.replace(b.point, mode="native"))
    problems = check([a, b], kernel(tmp_path), [], dispatching=True)
    assert len(problems) == 1
    assert (
        "want different modes (auto: XdpProgram/a[eth0]; native: XdpProgram/b[eth0])" in problems[0]
    )


def test_tc_program_on_a_missing_interface_lists_the_ones_there(tmp_path):
    import dataclasses

    from reconciler.kernel.types import TcHook

    d = xdp("t", "eth9")
    d = dataclasses.replace(d, point=TcHook("eth9", "ingress"))
    (problem,) = check([d], kernel(tmp_path), [])
    assert "interface 'eth9' does not exist on this host (interfaces: eth0, lo)" in problem
