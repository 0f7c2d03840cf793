"""Host extensions: network namespaces by path, containers by process id, library names."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.kernel.types import TcxPoint, UprobePoint, XdpPoint
from reconciler.spec import HostError, ManifestError, load_desired
from tests.unit.spec_support import StubHost, problems_of, write_tree, xdp

UPROBE = """
apiVersion: bpfman.io/v1alpha1
kind: UprobeProgram
metadata: {name: up}
spec:
  bpffunctionname: uprobe_malloc
  bytecode: {path: ../bytecode/spec_progs.o}
  func_name: malloc
"""


def test_xdp_and_tcx_in_a_network_namespace(tmp_path: Path) -> None:
    tcx = (
        xdp(bpffunctionname="tc_count", direction="ingress", netns="/proc/42/ns/net")
        .replace("XdpProgram", "TcxProgram")
        .replace("xdp-counter", "tcx")
    )
    files = {"x.yaml": xdp(netns="/run/netns/blue"), "t.yaml": tcx}
    host = StubHost()
    state = load_desired(write_tree(tmp_path, files), host)
    got = [(str(a.address), a.point, a.attributes["netns"]) for a in state.attachments]
    assert got == [
        (
            "TcxProgram/tcx[/proc/42/ns/net:eth0]",
            TcxPoint("eth0", "ingress", "/proc/42/ns/net"),
            "/proc/42/ns/net",
        ),
        (
            "XdpProgram/xdp-counter[blue:eth0]",
            XdpPoint("eth0", netns="/run/netns/blue"),
            "/run/netns/blue",
        ),
    ]
    assert host.asked == []  # named interfaces are checked at plan time, in the namespace


def test_netns_paths_are_normalised(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"x.yaml": xdp(netns="/run//netns/./blue")})
    [a] = load_desired(root, StubHost()).attachments
    assert (a.address.index, a.point) == ("blue:eth0", XdpPoint("eth0", netns="/run/netns/blue"))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("blue", "must be the absolute path of a network namespace"),
        ("/run/netns/", "must be the absolute path of a network namespace"),
        ("42", "must be a string (got integer 42)"),
    ],
)
def test_netns_must_be_a_path(tmp_path: Path, value: str, message: str) -> None:
    [problem] = problems_of(tmp_path, {"x.yaml": xdp(netns=value)})
    assert problem.startswith(f"x.yaml:12: spec.netns: {message}")


def test_primary_interface_has_no_network_namespace(tmp_path: Path) -> None:
    text = xdp(interfaceselector="{primarynodeinterface: true}", netns="/run/netns/blue")
    assert problems_of(tmp_path, {"x.yaml": text}) == [
        "x.yaml:9: spec.interfaceselector.primarynodeinterface: the primary interface is the "
        "host's default route interface, which is not in the network namespace /run/netns/blue; "
        "with netns, name the interfaces"
    ]


# --- uprobes: library names and containers ----------------------------------------------------


def test_a_library_name_is_resolved_on_the_host(tmp_path: Path) -> None:
    host = StubHost()
    root = write_tree(tmp_path, {"u.yaml": UPROBE + "  target: libc\n"})
    [a] = load_desired(root, host).attachments
    libc = "/usr/lib/x86_64-linux-gnu/libc.so.6"
    assert (str(a.address), a.point) == (
        "UprobeProgram/up[libc:malloc]",
        UprobePoint(libc, "malloc"),
    )
    assert (a.attributes["target"], a.attributes["target_path"]) == ("libc", libc)
    assert host.asked == [("resolve_library", "libc", None)]


def test_an_absolute_target_is_not_resolved(tmp_path: Path) -> None:
    host = StubHost()
    root = write_tree(tmp_path, {"u.yaml": UPROBE + "  target: /usr/bin/bash\n"})
    [a] = load_desired(root, host).attachments
    assert (a.attributes["target_path"], host.asked) == ("/usr/bin/bash", [])


def test_a_probe_inside_a_container(tmp_path: Path) -> None:
    host = StubHost()
    text = UPROBE + "  target: libc\n  pid: 7\n  containers: {pid: 4242}\n"
    [a] = load_desired(write_tree(tmp_path, {"u.yaml": text}), host).attachments
    musl = "/lib/ld-musl-x86_64.so.1"
    assert (str(a.address), a.point) == (
        "UprobeProgram/up[libc:malloc@4242]",
        UprobePoint(musl, "malloc", 0, False, 7, 4242),
    )
    assert a.attributes == {
        "bytecode": "../bytecode/spec_progs.o",
        "bytecode_digest": a.bytecode_digest,
        "function": "uprobe_malloc",
        "target": "libc",
        "target_path": musl,
        "func_name": "malloc",
        "offset": 0,
        "retprobe": False,
        "pid": 7,
        "container_pid": 4242,
        "global_data": None,
        "map_owner": None,
    }
    assert host.asked == [("resolve_library", "libc", 4242)]


def test_a_library_that_is_nowhere(tmp_path: Path) -> None:
    files = {
        "a.yaml": UPROBE + "  target: libnope\n",
        "b.yaml": UPROBE.replace("up}", "up2}") + "  target: libssl\n  containers: {pid: 9}\n",
    }
    with pytest.raises(ManifestError) as info:
        load_desired(write_tree(tmp_path, files), StubHost())
    assert info.value.problems == [
        "a.yaml:8: spec.target: library 'libnope' is not found on this host: the dynamic loader's "
        "cache (ld.so.cache) and library directories have no such library; install it, or give "
        "target as an absolute path",
        "b.yaml:8: spec.target: library 'libssl' is not found in the mount namespace of process "
        "9: the dynamic loader's cache (ld.so.cache) and library directories have no such "
        "library; install it, or give target as an absolute path",
    ]


def test_a_container_that_is_gone(tmp_path: Path) -> None:
    host = StubHost(libraries={("libc", 9): HostError("process 9 does not exist, so ...")})
    text = UPROBE + "  target: libc\n  containers: {pid: 9}\n"
    with pytest.raises(ManifestError) as info:
        load_desired(write_tree(tmp_path, {"u.yaml": text}), host)
    assert info.value.problems == ["u.yaml:8: spec.target: process 9 does not exist, so ..."]


def test_each_library_is_resolved_once(tmp_path: Path) -> None:
    text = "---\n".join(UPROBE.replace("up}", f"up{i}}}") + "  target: libc\n" for i in range(3))
    host = StubHost()
    load_desired(write_tree(tmp_path, {"u.yaml": text}), host)
    assert host.asked == [("resolve_library", "libc", None)]


def test_primary_interface_errors_from_the_host(tmp_path: Path) -> None:
    host = StubHost(primary=HostError("cannot read /proc/net/route"))
    root = write_tree(tmp_path, {"x.yaml": xdp(interfaceselector="{primarynodeinterface: true}")})
    with pytest.raises(ManifestError) as info:
        load_desired(root, host)
    assert info.value.problems == [
        "x.yaml:9: spec.interfaceselector.primarynodeinterface: cannot read /proc/net/route"
    ]
