"""The verifier's dry run (Kernel.verify, which plan and apply's pre-flight use) and the key of
its verdict: on both kernels, the key names what the verdict depends on; on the real one, the dry
run pins, mounts and creates nothing, not even a map that asks to be pinned by name."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from reconciler.kernel import (
    FentryPoint,
    KernelError,
    ProgType,
    RealKernel,
    TcxPoint,
    TracepointPoint,
)
from tests import support
from tests.kernel.harness import World
from tests.kernel.test_contract import TCX, TP, XDP_V1

PINNED_BY_NAME = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfman_dry_run_pinned SEC(".maps");
SEC("tracepoint/syscalls/sys_enter_getpid")
int dry_run(void *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&bpfman_dry_run_pinned, &key);
	if (v)
		*v += 1;
	return 0;
}
char LICENSE[] SEC("license") = "GPL";
"""


def test_a_verdict_key_names_what_the_verdict_depends_on(world: World) -> None:
    key = world.kernel.verdict_key
    assert key(TP) == key(TP)  # stable
    others = [
        dataclasses.replace(TP, function="tp_count_v2"),
        dataclasses.replace(TP, global_data=(("limit", b"\x01\0\0\0"),)),
    ]
    assert len({key(TP), *map(key, others)}) == 3
    assert key(XDP_V1) != key(XDP_V1, dispatched=True)  # a dispatcher's slot is another verdict
    fentry = dataclasses.replace(TP, prog_type=ProgType.FENTRY)
    assert key(fentry, FentryPoint("vfs_read")) != key(fentry, FentryPoint("vfs_write"))
    # What does not change the verdict does not change the key: a tracepoint's name, an interface.
    assert key(TP, TracepointPoint("syscalls", "sys_enter_getpid")) == key(
        TP, TracepointPoint("sched", "sched_switch")
    )
    assert key(TCX, TcxPoint("eth0", "ingress")) == key(TCX, TcxPoint("eth1", "ingress"))


@pytest.mark.kernel
def test_the_dry_run_pins_mounts_and_creates_nothing(no_leaks: None, tmp_path: Path) -> None:
    (tmp_path / "pinned.bpf.c").write_text(PINNED_BY_NAME)
    out = tmp_path / "pinned.o"
    subprocess.run(
        ["clang", "-g", "-O2", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c",
         str(tmp_path / "pinned.bpf.c"), "-o", str(out)],
        check=True,
    )  # fmt: skip
    root = Path("/sys/fs/bpf") / support.unique("bpfman-dry-")
    kernel = RealKernel(root)
    spec = dataclasses.replace(TP, object_path=str(out), function="dry_run")
    kernel.verify(spec, TracepointPoint("syscalls", "sys_enter_getpid"))
    assert not root.exists(), "the dry run created the bpffs root"
    assert not Path("/sys/fs/bpf/bpfman_dry_run_pinned").exists()
    with pytest.raises(FileNotFoundError):
        (root / "bpfman_dry_run_pinned").stat()


SHARED_WIDER = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} shared SEC(".maps");
SEC("tracepoint/syscalls/sys_enter_getppid")
int tp_wide(void *ctx)
{
	__u32 slot = 3;
	__u64 *value = bpf_map_lookup_elem(&shared, &slot);
	if (value)
		*value += 1;
	return 0;
}
char LICENSE[] SEC("license") = "GPL";
"""


@pytest.mark.kernel
def test_a_map_that_will_not_fit_its_owners_is_found_before_anything_loads(
    no_leaks: None, tmp_path: Path
) -> None:
    from tests.kernel.test_contract_functions_data_maps import GETPID, WRITER

    (tmp_path / "wide.bpf.c").write_text(SHARED_WIDER)
    wide = tmp_path / "wide.o"
    subprocess.run(
        ["clang", "-g", "-O2", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c",
         str(tmp_path / "wide.bpf.c"), "-o", str(wide)],
        check=True,
    )  # fmt: skip
    user = dataclasses.replace(WRITER, object_path=str(wide), function="tp_wide")
    kernel = RealKernel(Path("/sys/fs/bpf") / support.unique("bpfman-owner-"))
    try:
        # Nothing pinned yet: the owner (WRITER's object, max_entries 1) will create the map.
        assert kernel.shared_map_conflict(user, WRITER) == (
            f"its map shared does not fit the one its map owner creates from "
            f"{WRITER.object_path}: that has max_entries 1 (wanted 4); declare the map alike in "
            "both objects"
        )
        assert kernel.shared_map_conflict(WRITER, WRITER) is None
        # Once the owner's maps are pinned, the dry run checks against the pins themselves.
        kernel.install("TracepointProgram/owner/x", WRITER, GETPID)
        assert kernel.shared_map_conflict(user, WRITER) is None
        with pytest.raises(KernelError, match=r"max_entries 1 \(wanted 4\)"):
            kernel.verify(user)
    finally:
        kernel.uninstall("TracepointProgram/owner/x")
        kernel.remove_maps(WRITER.maps_dir or "")
        support.remove_tree(kernel.root)
