"""From manifests to one DesiredAttachment per attach point."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from reconciler.address import Address
from reconciler.kernel.types import (
    FentryPoint,
    FexitPoint,
    KprobePoint,
    ProgramSpec,
    ProgType,
    TcxPoint,
    TracepointPoint,
    UprobePoint,
    XdpPoint,
)
from reconciler.kinds.kprobe import kprobe_index
from reconciler.kinds.network import netns_index
from reconciler.kinds.uprobe import uprobe_index
from reconciler.spec import (
    DesiredState,
    ManifestError,
    expand,
    load_desired,
    load_manifests,
)
from tests.unit.spec_support import StubHost, copy_valid_tree, write_tree, xdp


def _digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_valid_tree_expands_to_one_attachment_per_attach_point(tmp_path: Path) -> None:
    root = copy_valid_tree(tmp_path)
    state = load_desired(root, StubHost(primary="ens3"))
    obj = (tmp_path / "bytecode" / "spec_progs.o").resolve()
    digest = _digest(obj)

    assert isinstance(state, DesiredState)
    assert state.source == str(root)
    assert state.unselected == []
    assert [str(a.address) for a in state.attachments] == [
        "ClusterBpfApplication/observer[xdp_stats:eth0]",
        "ClusterBpfApplication/observer[tp_openat:syscalls/sys_enter_openat]",
        "ClusterBpfApplication/observer[uretprobe_malloc:libc:malloc]",
        "ClusterBpfApplication/observer[fentry_unlink:do_unlinkat]",
        "BpfApplication/web-probe[tcx_ingress:ens3/ingress]",
        "KprobeProgram/openat2[do_sys_openat2+16]",
        "KprobeProgram/openat2-return[do_sys_openat2]",
        "FentryProgram/unlink-entry[do_unlinkat]",
        "FexitProgram/unlink-exit[do_unlinkat]",
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
        "netns": None,
        "direction": "ingress",
        "priority": 1000,
        "global_data": None,
        "map_owner": None,
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
        "netns": None,
        "priority": 55,
        "proceedon": ["pass", "dispatcher_return"],
        "xdpmode": "auto",
        "global_data": None,
        "map_owner": None,
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
        "global_data": None,
        "map_owner": None,
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
        "target_path": "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "func_name": "malloc",
        "offset": 0,
        "retprobe": False,
        "pid": None,
        "container_pid": None,
        "global_data": None,
        "map_owner": None,
    }
    readline = by[Address("UprobeProgram", "readline-return", "/usr/bin/bash+0x1a2b")]
    assert readline.point == UprobePoint("/usr/bin/bash", None, 0x1A2B, True, 4242)
    assert (readline.attributes["func_name"], readline.attributes["pid"]) == (None, 4242)

    kprobe = by[Address("KprobeProgram", "openat2", "do_sys_openat2+16")]
    assert kprobe.program == ProgramSpec(str(obj), "kprobe_open", ProgType.KPROBE)
    assert kprobe.point == KprobePoint("do_sys_openat2", 16, False)
    assert kprobe.attributes == {
        "bytecode": "../bytecode/spec_progs.o",
        "bytecode_digest": digest,
        "function": "kprobe_open",
        "func_name": "do_sys_openat2",
        "offset": 16,
        "retprobe": False,
        "global_data": None,
        "map_owner": None,
    }
    kretprobe = by[Address("KprobeProgram", "openat2-return", "do_sys_openat2")]
    assert kretprobe.point == KprobePoint("do_sys_openat2", 0, True)
    fentry = by[Address("FentryProgram", "unlink-entry", "do_unlinkat")]
    assert fentry.program == ProgramSpec(str(obj), "fentry_unlink", ProgType.FENTRY)
    assert fentry.point == FentryPoint("do_unlinkat")
    assert fentry.attributes == {
        "bytecode": "../bytecode/spec_progs.o",
        "bytecode_digest": digest,
        "function": "fentry_unlink",
        "func_name": "do_unlinkat",
        "global_data": None,
        "map_owner": None,
    }
    fexit = by[Address("FexitProgram", "unlink-exit", "do_unlinkat")]
    assert (fexit.program.prog_type, fexit.point) == (ProgType.FEXIT, FexitPoint("do_unlinkat"))
    # Program kinds have no maps to share unless they are a map owner.
    assert {
        a.program.maps_dir for a in state.attachments if "Application" not in a.address.kind
    } == {None}


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
    attachments = expand(load_manifests(root), root, StubHost()).attachments
    assert [a.attributes["bytecode"] for a in attachments] == [
        "inside/obj/z.o",
        "../bytecode/spec_progs.o",
        "../bytecode/spec_progs.o",
    ]
    assert attachments[0].program.object_path == str((root / "inside/obj/z.o").resolve())


def test_absolute_bytecode_path_is_shown_as_written(tmp_path: Path) -> None:
    absolute = (tmp_path / "bytecode" / "spec_progs.o").resolve()
    root = write_tree(tmp_path, {"x.yaml": xdp(bytecode=f"{{path: {absolute}}}")})
    [attachment] = expand(load_manifests(root), root, StubHost()).attachments
    assert attachment.attributes["bytecode"] == str(absolute)


def test_symlinked_bytecode_loads_the_resolved_file(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"x.yaml": xdp(bytecode="{path: ../bytecode/current.o}")})
    (tmp_path / "bytecode" / "current.o").symlink_to("spec_progs.o")
    [attachment] = expand(load_manifests(root), root, StubHost()).attachments
    assert attachment.attributes["bytecode"] == "../bytecode/current.o"  # as the user wrote it
    assert attachment.program.object_path == str((tmp_path / "bytecode" / "spec_progs.o").resolve())


def test_no_default_route_is_an_error_at_the_selector(tmp_path: Path) -> None:
    root = copy_valid_tree(tmp_path)
    with pytest.raises(ManifestError) as info:
        load_desired(root, StubHost(primary=None))
    assert info.value.problems == [
        "apps/apps.yaml:58: spec.programs[0].tcx.links[0].interfaceSelector.primaryNodeInterface: "
        "no default route on this host, so there is no primary interface to attach to; name the "
        "interfaces instead: interfaceSelector: {interfaces: [eth0]}",
        "net/xdp.yaml:24: spec.interfaceselector.primarynodeinterface: no default route on this "
        "host, so there is no primary interface to attach to; name the interfaces instead: "
        "interfaceselector: {interfaces: [eth0]}",
    ]


def test_host_facts_are_asked_once_and_only_when_needed(tmp_path: Path) -> None:
    host = StubHost()
    two = "---\n".join(
        xdp(interfaceselector="{primarynodeinterface: true}").replace("xdp-counter", n)
        for n in "ab"
    )
    root = write_tree(tmp_path, {"p.yaml": two})
    assert [str(a.address) for a in load_desired(root, host).attachments] == [
        "XdpProgram/a[ens3]",
        "XdpProgram/b[ens3]",
    ]
    assert host.asked == [("primary_interface",)]

    (tmp_path / "other").mkdir()
    host.asked.clear()
    load_desired(write_tree(tmp_path / "other", {"x.yaml": xdp()}), host)
    assert host.asked == []  # no selector, no primary interface, no discovery, no library


def test_bytecode_removed_after_loading(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"x.yaml": xdp()})
    manifests = load_manifests(root)
    (tmp_path / "bytecode" / "spec_progs.o").unlink()
    with pytest.raises(
        ManifestError,
        match=r"^x.yaml:8: spec.bytecode.path: cannot read bytecode file .*: No such file",
    ):
        expand(manifests, root, StubHost())


def test_relative_root_gives_absolute_object_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tree(tmp_path, {"x.yaml": xdp()})
    monkeypatch.chdir(tmp_path)
    [attachment] = load_desired(Path("manifests"), StubHost()).attachments
    assert attachment.program.object_path == str((tmp_path / "bytecode" / "spec_progs.o").resolve())
    assert attachment.attributes["bytecode"] == "../bytecode/spec_progs.o"


@pytest.mark.parametrize(
    ("target", "func_name", "offset", "container_pid", "index"),
    [
        ("/usr/bin/bash", "readline", 0, None, "/usr/bin/bash:readline"),
        ("/usr/bin/bash", "readline", 16, None, "/usr/bin/bash:readline+16"),
        ("/usr/bin/bash", None, 0x1A2B, None, "/usr/bin/bash+0x1a2b"),
        ("libc", "malloc", 0, None, "libc:malloc"),
        ("libc", "malloc", 0, 4242, "libc:malloc@4242"),
        ("/usr/bin/bash", None, 0x10, 7, "/usr/bin/bash+0x10@7"),
    ],
)
def test_uprobe_index(
    target: str, func_name: str | None, offset: int, container_pid: int | None, index: str
) -> None:
    assert uprobe_index(target, func_name, offset, container_pid) == index
    _round_trips(Address("UprobeProgram", "p", index))


@pytest.mark.parametrize(
    ("netns", "ifname", "index"),
    [
        (None, "eth0", "eth0"),
        ("/run/netns/blue", "eth0", "blue:eth0"),
        ("/var/run/netns/blue", "eth0", "/var/run/netns/blue:eth0"),
        ("/proc/42/ns/net", "veth0", "/proc/42/ns/net:veth0"),
    ],
)
def test_netns_index(netns: str | None, ifname: str, index: str) -> None:
    assert netns_index(netns, ifname) == index
    _round_trips(Address("XdpProgram", "p", index))
    _round_trips(Address("ClusterBpfApplication", "p", f"xdp_stats:{index}"))


def test_kprobe_index() -> None:
    assert kprobe_index("do_unlinkat", 0) == "do_unlinkat"
    assert kprobe_index("do_unlinkat", 8) == "do_unlinkat+8"
    _round_trips(Address("KprobeProgram", "p", "do_unlinkat.isra.0+8"))


def _round_trips(address: Address) -> None:
    assert Address.parse(str(address)) == address
    assert Address.from_pin_dir(address.pin_dir()) == address
