"""A plan says everything that can be known without changing the kernel: the verifier's verdict
on every program it would load (kept in the state dir, so repeating a plan loads nothing), the
kernel functions kprobes and fentry/fexit name, and it says so when it cannot run the verifier.
On the FakeKernel (whose "verifier" rejects functions named *reject*); the real kernel's side is
tests/cli/test_cli_plan_truth.py."""

from __future__ import annotations

import dataclasses
import json
import os
import stat

import pytest

from reconciler.address import Address
from reconciler.apply import ApplyFailed, apply_plan
from reconciler.engine import Context, plan_for
from reconciler.kernel import FakeKernel
from reconciler.kernel.types import FentryPoint, KprobePoint, Probe, ProgramSpec, ProgType
from reconciler.plan.verdicts import FILE, MAX_VERDICTS, Verdict, VerdictCache
from reconciler.spec.model import DesiredAttachment, DesiredState, Origin
from reconciler.state import StateStore
from tests.unit.factories import tracepoint, xdp


def kernel_at(tmp_path) -> FakeKernel:
    k = FakeKernel(tmp_path / "bpffs", check_files=False)
    for name in ("eth0", "eth1"):
        k.add_interface(name)
    return k


@pytest.fixture
def ctx(tmp_path) -> Context:
    return Context(kernel_at(tmp_path), StateStore(tmp_path / "state"))


def rejected(name: str = "bad", iface: str = "eth0") -> DesiredAttachment:
    d = xdp(name, iface, function="xdp_reject")
    return dataclasses.replace(d, program=ProgramSpec("/x/r.o", "xdp_reject", ProgType.XDP))


def kernel_point(kind: ProgType, func: str, name: str = "k") -> DesiredAttachment:
    point = KprobePoint(func) if kind is ProgType.KPROBE else FentryPoint(func)
    resource = "KprobeProgram" if kind is ProgType.KPROBE else "FentryProgram"
    return DesiredAttachment(
        address=Address(resource, name, func),
        origin=Origin("k.yaml", 2),
        program=ProgramSpec("/x/k.o", "count", kind),
        point=point,
        bytecode_digest="sha256:dd",
        attributes={"func_name": func},
    )


def plan(ctx: Context, *desired: DesiredAttachment):
    return plan_for(ctx, DesiredState([], list(desired)))


def test_a_rejection_is_a_plan_error_naming_address_manifest_and_reason(ctx) -> None:
    p = plan(ctx, xdp("good", "eth1"), rejected())
    (error,) = p.errors
    assert error.startswith("XdpProgram/bad[eth0] (xdp.yaml:1): the verifier rejected xdp_reject")
    assert "invalid access to packet" in error


def test_a_repeated_plan_loads_nothing_even_in_a_new_process(ctx, tmp_path) -> None:
    first = plan(ctx, xdp("good", "eth1"), rejected())
    assert len(ctx.kernel.verified) == 2  # type: ignore[attr-defined]
    again = plan(ctx, xdp("good", "eth1"), rejected())
    assert len(ctx.kernel.verified) == 2 and again.errors == first.errors  # type: ignore[attr-defined]
    # Another process on the same kernel and boot: the verdicts and probe answers are kept.
    fresh = Context(kernel_at(tmp_path), StateStore(tmp_path / "state"))
    third = plan(fresh, xdp("good", "eth1"), rejected())
    assert fresh.kernel.verified == [] and third.errors == first.errors  # type: ignore[attr-defined]
    assert fresh.kernel.remembered["freplace"] == Probe(  # type: ignore[attr-defined]
        "freplace", True, "freplace is supported (fake kernel)"
    )


def test_a_plan_without_loads_verifies_nothing(ctx) -> None:
    apply_plan(plan(ctx, tracepoint("tp")), ctx.kernel, ctx.store)
    verified = len(ctx.kernel.verified)  # type: ignore[attr-defined]
    assert not plan(ctx, tracepoint("tp")).has_changes
    assert len(ctx.kernel.verified) == verified  # type: ignore[attr-defined]


def test_one_program_on_two_interfaces_is_verified_and_reported_once(ctx) -> None:
    p = plan(ctx, rejected("bad", "eth0"), rejected("bad", "eth1"))
    (error,) = p.errors
    assert error.startswith(
        "XdpProgram/bad[eth0] (xdp.yaml:1) (and XdpProgram/bad[eth1]: the same program): the "
        "verifier rejected"
    )
    assert len(ctx.kernel.verified) == 1  # type: ignore[attr-defined]


def test_a_dispatcher_hook_verifies_its_programs_as_what_the_dispatcher_runs(ctx) -> None:
    b = xdp("b", priority=60)
    b = dataclasses.replace(b, program=dataclasses.replace(b.program, function="xdp_other"))
    p = plan(ctx, xdp("a"), b)
    assert p.dispatching and not p.errors
    verified = ctx.kernel.verified  # type: ignore[attr-defined]
    assert [(s.function, dispatched) for s, _p, dispatched in verified] == [
        ("xdp_stats", True),
        ("xdp_other", True),
    ]


def test_without_the_privilege_plan_warns_and_apply_refuses(ctx) -> None:
    ctx.kernel.permission = "bpfman runs as uid 1000 without CAP_BPF or CAP_SYS_ADMIN"  # type: ignore[attr-defined]
    p = plan(ctx, xdp("good", "eth1"), rejected())
    assert p.errors == () and ctx.kernel.verified == []  # type: ignore[attr-defined]
    (warning,) = p.warnings
    assert warning.startswith(
        "the verifier was not run for 2 program(s) this plan loads (XdpProgram/bad[eth0], "
        "XdpProgram/good[eth1]): bpfman runs as uid 1000 without CAP_BPF"
    )
    with pytest.raises(ApplyFailed, match="cannot run the program past the verifier"):
        apply_plan(p, ctx.kernel, ctx.store)
    assert ctx.kernel.observe() == []


def test_a_kept_verdict_counts_without_the_privilege(ctx) -> None:
    plan(ctx, rejected())
    ctx.kernel.permission = "no privilege"  # type: ignore[attr-defined]
    p = plan(ctx, rejected())
    assert len(p.errors) == 1 and "the verifier rejected" in p.errors[0] and not p.warnings


def test_a_kernel_function_that_does_not_exist(ctx) -> None:
    p = plan(ctx, kernel_point(ProgType.KPROBE, "vfs_reed"), kernel_point(ProgType.FENTRY, "nope"))
    assert p.errors == (
        "KprobeProgram/k[vfs_reed] (k.yaml:2): kernel function vfs_reed does not exist on this "
        "kernel (not in /proc/kallsyms); fix spec.func_name",
        "FentryProgram/k[nope] (k.yaml:2): kernel function nope has no BTF on this kernel (not "
        "a FUNC in /sys/kernel/btf/vmlinux); fix spec.func_name",
    )
    assert ctx.kernel.verified == []  # type: ignore[attr-defined]


def test_an_unsupported_program_type_is_the_one_problem_said(ctx) -> None:
    ctx.kernel.features["kprobe"] = False  # type: ignore[attr-defined]
    (error,) = plan(ctx, kernel_point(ProgType.KPROBE, "vfs_reed")).errors
    assert "needs kprobes, which kernel 6.18.0-fake does not support" in error
    assert ctx.kernel.verified == []  # type: ignore[attr-defined]


def test_a_missing_feature_names_every_attachment_and_exclude_leaves_them_out(ctx) -> None:
    """One error per manifest, naming each of its attachments that needs the feature, so that
    --exclude of them all lets the rest of the plan (here an XDP program) be applied."""
    from reconciler.plan.target import Narrowing

    ctx.kernel.features["kprobe"] = False  # type: ignore[attr-defined]
    first, second = (
        kernel_point(ProgType.KPROBE, "vfs_read"),
        kernel_point(ProgType.KPROBE, "vfs_write"),
    )
    (error,) = plan(ctx, first, second, xdp("x", "eth0")).errors
    assert str(first.address) in error and f"so does {second.address}" in error
    only_one = Narrowing(excludes=(str(first.address),))
    narrowed = plan_for(ctx, DesiredState([], [first, second, xdp("x", "eth0")]), only_one)
    assert narrowed.errors == (error,)  # the second still needs kprobes
    both = Narrowing(excludes=(str(first.address), str(second.address)))
    narrowed = plan_for(ctx, DesiredState([], [first, second, xdp("x", "eth0")]), both)
    assert narrowed.errors == ()
    assert [str(c.address) for c in narrowed.actionable] == ["XdpProgram/x[eth0]"]


# --- the verdict file ---------------------------------------------------------------------------

KEY = "a" * 64


def test_verdicts_are_kept_atomically_and_owner_only(tmp_path) -> None:
    cache = VerdictCache.load(tmp_path, "kernel-1")
    cache.put(KEY, Verdict(False, "rejected"))
    cache.save()
    assert sorted(os.listdir(tmp_path)) == [FILE]  # no temp file left
    assert stat.S_IMODE(os.stat(tmp_path / FILE).st_mode) == 0o600
    assert VerdictCache.load(tmp_path, "kernel-1").get(KEY) == Verdict(False, "rejected")


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b'{"format": "bpfman-verdicts/1"}', b"\xff\xfe", b'["a list"]',
     b'{"format": "bpfman-verdicts/1", "identity": "kernel-1", "verdicts": '
     b'{"' + KEY.encode() + b'": {"accepted": "yes", "reason": "", "used": 1}}}'],
)  # fmt: skip
def test_a_corrupt_verdict_file_is_ignored_and_rebuilt(tmp_path, content: bytes) -> None:
    (tmp_path / FILE).write_bytes(content)
    cache = VerdictCache.load(tmp_path, "kernel-1")
    assert cache.get(KEY) is None
    cache.put("b" * 64, Verdict(True))
    cache.save()
    doc = json.loads((tmp_path / FILE).read_text())
    assert list(doc["verdicts"]) == ["b" * 64] and doc["identity"] == "kernel-1"


def test_a_verdict_file_of_another_kernel_or_boot_is_ignored(tmp_path) -> None:
    cache = VerdictCache.load(tmp_path, "kernel-1")
    cache.put(KEY, Verdict(True))
    cache.put_probes({"tcx": Probe("tcx", True, "yes")})
    cache.save()
    other = VerdictCache.load(tmp_path, "kernel-2")
    assert other.get(KEY) is None and other.probes() == {}


def test_a_verdict_file_that_is_not_a_regular_file_never_hangs(tmp_path) -> None:
    os.mkfifo(tmp_path / FILE)  # open() of a FIFO blocks until a writer comes
    cache = VerdictCache.load(tmp_path, "kernel-1")
    assert len(cache) == 0


def test_the_verdict_file_is_bounded(tmp_path) -> None:
    cache = VerdictCache.load(tmp_path, "kernel-1")
    for i in range(MAX_VERDICTS + 50):
        cache.put(f"{i:064x}", Verdict(True))
    cache.save()
    assert len(VerdictCache.load(tmp_path, "kernel-1")) == MAX_VERDICTS


def test_a_state_dir_that_cannot_be_written_costs_only_the_cache(tmp_path) -> None:
    (tmp_path / "file").write_text("")
    cache = VerdictCache.load(tmp_path / "file", "kernel-1")  # a "directory" that is a file
    cache.put(KEY, Verdict(True))
    cache.save()  # logged, not raised
    assert cache.get(KEY) == Verdict(True)


def test_a_uprobe_target_in_a_container_is_read_through_its_root(tmp_path) -> None:
    from reconciler.kernel.types import UprobePoint
    from reconciler.kinds.uprobe import uprobe_problems

    here = os.getpid()  # our own mount namespace stands in for a container's: /proc/PID/root
    assert uprobe_problems(UprobePoint("/bin/true", offset=16, container_pid=here)) == []
    os.mkfifo(tmp_path / "fifo")
    (problem,) = uprobe_problems(UprobePoint(str(tmp_path / "fifo"), "f", container_pid=here))
    assert problem == (
        f"uprobe target {tmp_path}/fifo inside the mount namespace of pid {here} is a FIFO (named "
        "pipe), not a regular file; fix spec.target"
    )
    (problem,) = uprobe_problems(UprobePoint("/bin/true", "main", container_pid=here))
    assert problem.startswith(
        f"uprobe target /bin/true inside the mount namespace of pid {here} has no function main"
    )


def test_maps_that_will_not_fit_the_owners_are_a_plan_error_before_the_verifier(ctx) -> None:
    owner, user = tracepoint("owner"), tracepoint("user", "syscalls/sys_enter_getppid")
    owner = dataclasses.replace(
        owner, program=dataclasses.replace(owner.program, object_path="/x/o.o", maps_dir="m")
    )
    user = dataclasses.replace(
        user,
        program=dataclasses.replace(user.program, object_path="/x/u.o", maps_dir="m"),
        depends_on=(owner.address,),
    )
    ctx.kernel.object_maps["/x/o.o"] = [("events", "ringbuf")]  # type: ignore[attr-defined]
    ctx.kernel.object_maps["/x/u.o"] = [("events", "hash")]  # type: ignore[attr-defined]
    (error,) = plan(ctx, owner, user).errors
    assert error == (
        "TracepointProgram/user[syscalls/sys_enter_getppid] (tp.yaml:1): its map events does not "
        "fit the one its map owner creates from /x/o.o: that has type ringbuf (wanted hash); "
        "declare the map alike in both objects (map owner "
        "TracepointProgram/owner[syscalls/sys_enter_getpid])"
    )
    assert [s.object_path for s, _p, _d in ctx.kernel.verified] == ["/x/o.o"]  # type: ignore[attr-defined]
