"""Kernel-layer pieces that need no root: pin naming, walking, log summaries, fake knobs."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from reconciler.kernel import (
    FakeKernel,
    FentryPoint,
    FexitPoint,
    KernelError,
    ProgramSpec,
    ProgType,
    TcxPoint,
    TracepointPoint,
    UprobePoint,
    XdpPoint,
    maps,
    probes,
)
from reconciler.kernel.real import RealKernel
from reconciler.kernel.sys import bpffs
from reconciler.kernel.sys.bpfobject import _pin_name
from reconciler.kernel.sys.libbpf import verifier_summary
from reconciler.kernel.types import (
    TcDirectView,
    TcHook,
    TcxLinkView,
    TracingLinkView,
    UprobeLinkView,
    XdpView,
)


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


def test_pin_dir_paths_as_strings(tmp_path: Path) -> None:
    assert bpffs.dir_of(Path("/r"), "K/a.b/eth0.100") == "/r/K/a%2Eb/eth0%2E100"
    assert bpffs.rel_of(Path("/r"), "/r/K/a%2Eb/eth0%2E100") == "K/a.b/eth0.100"
    with pytest.raises(ValueError):
        bpffs.rel_of("/r", "/elsewhere/K")
    bpffs.makedirs(tmp_path, f"{tmp_path}/K/n/i/%next/maps", mode=0o700)
    bpffs.makedirs(tmp_path, f"{tmp_path}/K/n/i/%next/maps", mode=0o700)  # there already
    assert (tmp_path / "K/n/i/%next/maps").stat().st_mode & 0o777 == 0o700
    with pytest.raises(ValueError):
        bpffs.makedirs(tmp_path / "K", f"{tmp_path}/other")


def test_remove_tree_of_a_file_an_empty_and_a_full_directory(tmp_path: Path) -> None:
    (tmp_path / "pin").touch()
    (tmp_path / "empty").mkdir()
    (tmp_path / "full/maps").mkdir(parents=True)
    (tmp_path / "full/maps/m").touch()
    (tmp_path / "full/link").touch()
    for name in ("pin", "empty", "full", "missing"):
        bpffs.remove_tree(tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text() if p.is_file() else "/"
        for p in sorted(root.rglob("*"))
    }


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if text == "/":
            (root / name).mkdir(exist_ok=True)
        else:
            (root / name).write_text(text)


@pytest.mark.parametrize(
    ("before", "keep_link", "after"),
    [
        (  # an install: everything moves out of the stage, which goes
            {"%next/prog": "new", "%next/link": "new", "%next/maps/m": "new"},
            False,
            {"link": "new", "maps": "/", "maps/m": "new", "prog": "new"},
        ),
        (  # a replace with a new link: the old pins are replaced, the old maps dropped
            {"prog": "old", "link": "old", "maps/m": "old", "maps/o": "old"}
            | {"%next/prog": "new", "%next/link": "new", "%next/maps/m": "new"},
            False,
            {"link": "new", "maps": "/", "maps/m": "new", "prog": "new"},
        ),
        (  # a link updated in place keeps its pin
            {"prog": "old", "link": "old", "%next/prog": "new"},
            True,
            {"link": "old", "prog": "new"},
        ),
        (  # no link any more (XDP after a tcx program): the old link pin goes
            {"prog": "old", "link": "old", "%next/prog": "new"},
            False,
            {"prog": "new"},
        ),
        (  # a commit killed after moving the maps is finished by the next one
            {"prog": "old", "maps/m": "new", "%next/prog": "new", "%next/old-maps/m": "old"},
            True,
            {"maps": "/", "maps/m": "new", "prog": "new"},
        ),
    ],
)
def test_commit_moves_the_staged_pins_in_place(
    tmp_path: Path, before: dict[str, str], keep_link: bool, after: dict[str, str]
) -> None:
    from reconciler.kernel.pins import PinStore

    d = tmp_path / "K" / "n" / "i"
    _write(d, before)
    points: list[str] = []
    store = PinStore(tmp_path)
    store.checkpoint = points.append
    store.commit(d, keep_link)
    assert _tree(d) == after
    assert points == ["committing"]


def test_object_digests_follow_the_file(tmp_path: Path) -> None:
    from reconciler.kernel import dryrun

    obj = tmp_path / "o.bin"
    obj.write_bytes(b"one")
    first = dryrun._digest(str(obj))
    assert dryrun._digest(str(obj)) == first
    obj.write_bytes(b"two")
    assert dryrun._digest(str(obj)) != first
    obj.unlink()
    assert dryrun._digest(str(obj)).startswith("unreadable")


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
TC = ProgramSpec("/tests/x.o", "tc_count", ProgType.TC)


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
    assert isinstance(xdp.attach, XdpView)
    assert xdp.attach.mode == "generic"  # auto falls back without native support
    tcx = k.install("T/a/eth0", TCX, TcxPoint("eth0", "egress"))
    assert k.tcx_order("eth0", "egress") == [tcx.link_id]
    tc = k.install("U/a/eth0", TC, TcHook("eth0", "ingress"))
    assert isinstance(tc.attach, TcDirectView)
    k.remove_interface("eth0")
    assert [i.attached for i in k.observe()] == [False, False, False]
    # As RealKernel reads them: a defunct tcx link (ifindex 0), nothing else.
    assert [i.attach for i in k.observe()] == [TcxLinkView(0, "tcx_egress"), None, None]
    k.add_interface("eth0")
    k.install("U/b/eth0", TC, TcHook("eth0", "ingress"))  # the old filter went with the device


# --- fake knobs, maps directories, BTF helpers -------------------------------------------

KPROBES = "/tests/kernel_probes.o"


def test_fake_features_can_be_turned_off() -> None:
    k = FakeKernel(check_files=False)
    k.features["fentry"] = False
    assert not k.probe("fentry") and k.probe("fexit") and k.probe("kprobe")
    spec = ProgramSpec(KPROBES, "fentry_count", ProgType.FENTRY)
    with pytest.raises(KernelError, match=r"6.18.0-fake\) cannot run fentry programs") as err:
        k.install("FentryProgram/a/x", spec, FentryPoint("vfs_read"))
    assert "turned off" in str(err.value)
    with pytest.raises(KernelError, match="cannot run fentry programs"):
        k.verify(spec, FentryPoint("vfs_read"))
    assert k.observe() == []


def test_fake_kernel_functions_and_containers() -> None:
    k = FakeKernel(check_files=False)
    fexit = ProgramSpec(KPROBES, "fexit_count", ProgType.FEXIT)
    with pytest.raises(KernelError, match="kernel function my_func has no BTF"):
        k.install("FexitProgram/a/x", fexit, FexitPoint("my_func"))
    k.kernel_functions.add("my_func")
    inst = k.install("FexitProgram/a/x", fexit, FexitPoint("my_func"))
    assert isinstance(inst.attach, TracingLinkView) and inst.prog_type == "tracing"
    assert inst.attach.attach_type == "trace_fexit"

    uprobe = ProgramSpec("/tests/u.o", "uprobe_count", ProgType.UPROBE)
    k.containers[77] = {"/app/bin"}
    inst = k.install("UprobeProgram/a/x", uprobe, UprobePoint("/app/bin", "f", container_pid=77))
    assert isinstance(inst.attach, UprobeLinkView) and inst.attach.file == "/proc/77/root/app/bin"


def test_fake_shared_maps() -> None:
    k = FakeKernel("/r", check_files=False)
    k.object_maps["/a.o"] = [("bss", "array"), ("events", "ringbuf")]
    k.object_maps["/b.o"] = [("bss", "array"), ("events", "hash")]
    a = k.install("T/a/x", ProgramSpec("/a.o", "f", ProgType.TRACEPOINT, maps_dir="m"),
                  TracepointPoint("sched", "sched_switch"))  # fmt: skip
    assert [m.pin for m in a.maps] == ["/r/T/a/x/maps/bss", "/r/m/events"]
    with pytest.raises(KernelError, match="shared map events pinned at /r/m/events does not fit"):
        k.install("T/b/x", ProgramSpec("/b.o", "f", ProgType.TRACEPOINT, maps_dir="m"),
                  TracepointPoint("sched", "sched_switch"))  # fmt: skip
    k.uninstall("T/a/x")
    assert k.map_dirs() == ["m"]
    k.remove_maps("m")
    assert k.map_dirs() == []


def test_fake_global_data_is_checked_only_when_known() -> None:
    k = FakeKernel(check_files=False)
    spec = ProgramSpec("/g.o", "f", ProgType.TRACEPOINT, global_data=(("anything", b"\0"),))
    k.verify(spec)  # the fake knows nothing about /g.o: anything goes
    k.globals["/g.o"] = {"limit": 4}
    with pytest.raises(KernelError, match="global variable anything not found in /g.o"):
        k.verify(spec)


def test_map_dirs_are_the_directories_of_pins_outside_attachments(tmp_path: Path) -> None:
    for f in [
        "shared/app/events",  # a maps directory
        "shared/empty/.keep",  # hidden: not a pin
        "XdpProgram/a/eth0/prog",
        "XdpProgram/a/eth0/maps/counters",  # an attachment's own maps
        "TcxProgram/b/eth0/link",  # an install interrupted before its prog was committed
        "TcxProgram/b/eth0/maps/counters",
        "TcxProgram/c/eth0/%next/maps/counters",  # staging
        "odd%2Ename/events",
    ]:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).touch()
    (tmp_path / "XdpProgram/a/eth0/maps/shared").symlink_to("../../../../shared/app/events")
    assert maps.map_dirs(tmp_path) == ["odd.name", "shared/app"]
    assert maps.pin_of(tmp_path / "XdpProgram/a/eth0/maps/shared") == tmp_path / "shared/app/events"
    maps.remove(tmp_path, "shared/app")
    maps.remove(tmp_path, "shared/app")
    assert not (tmp_path / "shared" / "app").exists() and (tmp_path / "shared" / "empty").exists()
    with pytest.raises(KernelError, match="inside the pin directory of attachment XdpProgram/a"):
        maps.remove(tmp_path, "XdpProgram/a/eth0/maps")


def test_btf_blob_of_the_freplace_probe() -> None:
    blob = probes._btf_blob()
    magic, version, _, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
        "=HBBIIIII", blob
    )
    assert (magic, version, hdr_len, type_off) == (0xEB9F, 1, 24, 0)
    assert len(blob) == hdr_len + type_len + str_len and str_off == type_len
    assert blob.endswith(b"\0int\0bpfman_probe\0")


def test_data_section_of_an_internal_map() -> None:
    from reconciler.kernel.sys.btfinfo import _section_of

    assert _section_of("global_d.rodata") == ".rodata"
    assert _section_of("x.bss") == ".bss"
    assert _section_of(".data.custom_long_name") == ".data.custom_long_name"
