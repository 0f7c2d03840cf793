"""From manifests to one DesiredAttachment per attach point."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from reconciler.address import Address
from reconciler.kernel.types import (
    ProgramSpec,
    ProgType,
    TcxPoint,
    TracepointPoint,
    UprobePoint,
    XdpPoint,
)
from reconciler.spec import (
    DesiredState,
    ManifestError,
    default_primary_interface,
    expand,
    load_desired,
    load_manifests,
)
from reconciler.spec.expand import uprobe_index
from tests.unit.spec_support import copy_valid_tree, write_tree, xdp


def _digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_valid_tree_expands_to_one_attachment_per_attach_point(tmp_path: Path) -> None:
    root = copy_valid_tree(tmp_path)
    state = load_desired(root, primary_interface=lambda: "ens3")
    obj = (tmp_path / "bytecode" / "spec_progs.o").resolve()
    digest = _digest(obj)

    assert isinstance(state, DesiredState)
    assert state.source == str(root)
    assert [str(a.address) for a in state.attachments] == [
        "TcxProgram/tcx-ingress[eth0]",
        "XdpProgram/xdp-counter[eth0]",
        "XdpProgram/xdp-counter[eth1]",
        "XdpProgram/xdp-primary[ens3]",
        "TracepointProgram/openat[syscalls/sys_enter_openat]",
        "TracepointProgram/openat[syscalls/sys_enter_open]",
        "UprobeProgram/malloc[/usr/lib/x86_64-linux-gnu/libc.so.6:malloc]",
        "UprobeProgram/readline-return[/usr/bin/bash+0x1a2b]",
    ]
    by = state.by_address()

    tcx = by[Address("TcxProgram", "tcx-ingress", "eth0")]
    assert tcx.program == ProgramSpec(str(obj), "tcx_ingress", ProgType.TCX)
    assert tcx.point == TcxPoint("eth0", "ingress")
    assert (tcx.priority, tcx.proceedon, tcx.bytecode_digest) == (1000, (), digest)
    assert str(tcx.origin) == "net/tcx.yml:1"
    assert tcx.attributes == {
        "bytecode": "../bytecode/spec_progs.o",  # relative to the root, not to net/
        "bytecode_digest": digest,
        "function": "tcx_ingress",
        "interface": "eth0",
        "direction": "ingress",
        "priority": 1000,
    }

    xdp1 = by[Address("XdpProgram", "xdp-counter", "eth1")]
    assert xdp1.program == ProgramSpec(str(obj), "xdp_stats", ProgType.XDP)
    assert xdp1.point == XdpPoint("eth1")
    assert (xdp1.priority, xdp1.proceedon) == (55, ("pass", "dispatcher_return"))
    assert xdp1.attributes == {
        "bytecode": "../bytecode/spec_progs.o",
        "bytecode_digest": digest,
        "function": "xdp_stats",
        "interface": "eth1",
        "priority": 55,
        "proceedon": ["pass", "dispatcher_return"],
    }
    assert by[Address("XdpProgram", "xdp-primary", "ens3")].proceedon == ("drop", "pass")

    tp = by[Address("TracepointProgram", "openat", "syscalls/sys_enter_open")]
    assert tp.program == ProgramSpec(str(obj), "tp_openat", ProgType.TRACEPOINT)
    assert tp.point == TracepointPoint("syscalls", "sys_enter_open")
    assert (tp.priority, tp.proceedon) == (None, ())
    assert tp.attributes == {
        "bytecode": "../bytecode/spec_progs.o",
        "bytecode_digest": digest,
        "function": "tp_openat",
        "tracepoint": "syscalls/sys_enter_open",
    }

    malloc = by[Address("UprobeProgram", "malloc", "/usr/lib/x86_64-linux-gnu/libc.so.6:malloc")]
    assert malloc.program == ProgramSpec(str(obj), "uprobe_malloc", ProgType.UPROBE)
    assert malloc.point == UprobePoint(
        "/usr/lib/x86_64-linux-gnu/libc.so.6", "malloc", 0, False, None
    )
    assert malloc.attributes == {
        "bytecode": "../bytecode/spec_progs.o",
        "bytecode_digest": digest,
        "function": "uprobe_malloc",
        "target": "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "func_name": "malloc",
        "offset": 0,
        "retprobe": False,
        "pid": None,
    }
    readline = by[Address("UprobeProgram", "readline-return", "/usr/bin/bash+0x1a2b")]
    assert readline.point == UprobePoint("/usr/bin/bash", None, 0x1A2B, True, 4242)
    assert (readline.attributes["func_name"], readline.attributes["pid"]) == (None, 4242)


def test_bytecode_attribute_is_relative_to_the_source_root(tmp_path: Path) -> None:
    files = {
        "x.yaml": xdp(),
        "team/deep/y.yaml": xdp(bytecode="{path: ../../../bytecode/spec_progs.o}").replace(
            "xdp-counter", "y"
        ),
        "inside/z.yaml": xdp(bytecode="{path: obj/z.o}").replace("xdp-counter", "z"),
    }
    root = write_tree(tmp_path, files)
    (root / "inside" / "obj").mkdir()
    (root / "inside" / "obj" / "z.o").write_bytes(
        (tmp_path / "bytecode" / "spec_progs.o").read_bytes()
    )
    attachments = expand(load_manifests(root), root, lambda: None)
    assert [a.attributes["bytecode"] for a in attachments] == [
        "inside/obj/z.o",
        "../bytecode/spec_progs.o",
        "../bytecode/spec_progs.o",
    ]
    assert attachments[0].program.object_path == str((root / "inside/obj/z.o").resolve())


def test_absolute_bytecode_path_is_shown_as_written(tmp_path: Path) -> None:
    absolute = (tmp_path / "bytecode" / "spec_progs.o").resolve()
    root = write_tree(tmp_path, {"x.yaml": xdp(bytecode=f"{{path: {absolute}}}")})
    [attachment] = expand(load_manifests(root), root, lambda: None)
    assert attachment.attributes["bytecode"] == str(absolute)


def test_symlinked_bytecode_loads_the_resolved_file(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"x.yaml": xdp(bytecode="{path: ../bytecode/current.o}")})
    (tmp_path / "bytecode" / "current.o").symlink_to("spec_progs.o")
    [attachment] = expand(load_manifests(root), root, lambda: None)
    assert attachment.attributes["bytecode"] == "../bytecode/current.o"  # as the user wrote it
    assert attachment.program.object_path == str((tmp_path / "bytecode" / "spec_progs.o").resolve())


def test_no_default_route_is_an_error_at_the_selector(tmp_path: Path) -> None:
    root = copy_valid_tree(tmp_path)
    with pytest.raises(ManifestError) as info:
        load_desired(root, primary_interface=lambda: None)
    assert info.value.problems == [
        "net/xdp.yaml:24: spec.interfaceselector.primarynodeinterface: no default route on this "
        "host, so there is no primary interface to attach to; name the interfaces instead: "
        "interfaceselector: {interfaces: [eth0]}"
    ]


def test_primary_interface_is_asked_once_and_only_when_needed(tmp_path: Path) -> None:
    calls: list[int] = []

    def primary() -> str:
        calls.append(1)
        return "ens3"

    two = "---\n".join(
        xdp(interfaceselector="{primarynodeinterface: true}").replace("xdp-counter", n)
        for n in "ab"
    )
    root = write_tree(tmp_path, {"p.yaml": two})
    assert [str(a.address) for a in load_desired(root, primary).attachments] == [
        "XdpProgram/a[ens3]",
        "XdpProgram/b[ens3]",
    ]
    assert calls == [1]

    (tmp_path / "other").mkdir()
    load_desired(write_tree(tmp_path / "other", {"x.yaml": xdp()}), primary)
    assert calls == [1]


def test_bytecode_removed_after_loading(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"x.yaml": xdp()})
    manifests = load_manifests(root)
    (tmp_path / "bytecode" / "spec_progs.o").unlink()
    with pytest.raises(
        ManifestError,
        match=r"^x.yaml:8: spec.bytecode.path: cannot read bytecode file .*: No such file",
    ):
        expand(manifests, root, lambda: None)


def test_relative_root_gives_absolute_object_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tree(tmp_path, {"x.yaml": xdp()})
    monkeypatch.chdir(tmp_path)
    [attachment] = load_desired(Path("manifests"), lambda: None).attachments
    assert attachment.program.object_path == str((tmp_path / "bytecode" / "spec_progs.o").resolve())
    assert attachment.attributes["bytecode"] == "../bytecode/spec_progs.o"


@pytest.mark.parametrize(
    ("target", "func_name", "offset", "index"),
    [
        ("/usr/bin/bash", "readline", 0, "/usr/bin/bash:readline"),
        ("/usr/bin/bash", "readline", 16, "/usr/bin/bash:readline+16"),
        ("/usr/bin/bash", None, 0x1A2B, "/usr/bin/bash+0x1a2b"),
    ],
)
def test_uprobe_index(target: str, func_name: str | None, offset: int, index: str) -> None:
    assert uprobe_index(target, func_name, offset) == index
    address = Address("UprobeProgram", "p", index)
    assert Address.parse(str(address)) == address
    assert Address.from_pin_dir(address.pin_dir()) == address


ROUTE_HEADER = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
)


def test_default_primary_interface_picks_the_lowest_metric_default_route(tmp_path: Path) -> None:
    route = tmp_path / "route"
    route.write_text(
        ROUTE_HEADER
        + "wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
        + "eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        + "eth1\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n"
        + "down0\t00000000\t0100000A\t0002\t0\t0\t0\t00000000\t0\t0\t0\n"
    )
    assert default_primary_interface(route, tmp_path / "none") == "eth0"


def test_default_primary_interface_falls_back_to_ipv6(tmp_path: Path) -> None:
    route = tmp_path / "route"
    route.write_text(ROUTE_HEADER)
    ipv6 = tmp_path / "ipv6_route"
    z = "0" * 32
    gateway = "fe80" + "0" * 27 + "1"
    ipv6.write_text(
        # dest dest_len src src_len next_hop metric refcnt use flags iface
        f"{z} 00 {z} 00 {gateway} 00000400 00000001 00000000 00450003 ens5\n"
        f"{z} 00 {z} 00 {z} ffffffff 00000001 00000000 00200200       lo\n"
        f"fd00{z[4:]} 40 {z} 00 {z} 00000100 00000001 00000000 00000001 ens6\n"
    )
    assert default_primary_interface(route, ipv6) == "ens5"


def test_default_primary_interface_without_default_route(tmp_path: Path) -> None:
    assert default_primary_interface(tmp_path / "missing", tmp_path / "missing6") is None
    garbage = tmp_path / "garbage"
    garbage.write_text("header\nnot a route table at all zz zz zz zz zz\n")
    assert default_primary_interface(garbage, garbage) is None
