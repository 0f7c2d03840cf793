"""RealKernel behaviour the fake cannot show: pins outliving the process, kernel quirks,
interrupted runs, feature probes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reconciler.kernel import (
    KernelError,
    ProgramSpec,
    ProgType,
    RealKernel,
    TracepointPoint,
    XdpPoint,
    probes,
)
from reconciler.kernel.sys import netlink
from reconciler.kernel.tc import netlink as tcnetlink
from reconciler.kernel.types import TcDirectView, TcHook, XdpView
from tests import support
from tests.kernel.harness import World, obj, wait_for

pytestmark = pytest.mark.kernel

TP = ProgramSpec(obj("tracepoint_counter"), "tp_count", ProgType.TRACEPOINT)
XDP = ProgramSpec(obj("xdp_counter"), "xdp_count", ProgType.XDP)
TCX = ProgramSpec(obj("tcx_counter"), "tcx_count", ProgType.TCX)
TC = ProgramSpec(obj("tcx_counter"), "tcx_count", ProgType.TC)
GETPID = TracepointPoint("syscalls", "sys_enter_getpid")


# The contract tests' world fixture, with the real kernel only.
on_real = pytest.mark.parametrize("world", ["real"], indirect=True)


@on_real
def test_attachments_outlive_the_installing_process(world: World) -> None:
    script = textwrap.dedent(f"""
        from reconciler.kernel import *
        k = RealKernel({str(world.root)!r})
        k.install("TracepointProgram/getpid/x", ProgramSpec({TP.object_path!r}, "tp_count",
                  ProgType.TRACEPOINT), TracepointPoint("syscalls", "sys_enter_getpid"))
        k.install("XdpProgram/count/eth0", ProgramSpec({XDP.object_path!r}, "xdp_count",
                  ProgType.XDP), XdpPoint("eth0", netns={world.netns!r}))
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=support.REPO)

    tp, xdp = world.kernel.observe()
    assert tp.attached and xdp.attached
    assert world.ip_xdp()[0] == xdp.prog_id
    world.getpid(5)
    world.send_frames(4)
    assert world.counters(tp)[0] >= 5 and world.counters(xdp) == [4, 0]
    world.kernel.uninstall("TracepointProgram/getpid/x")
    world.kernel.uninstall("XdpProgram/count/eth0")
    assert world.pins() == [] and world.ip_xdp() == (None, None)


@on_real
def test_auto_mode_falls_back_to_generic_and_native_failure_leaves_nothing(world: World) -> None:
    lo = XdpPoint("lo", mode="native", netns=world.netns)  # lo has no native XDP support
    with pytest.raises(KernelError, match="lo"):
        world.kernel.install("XdpProgram/count/lo", XDP, lo)
    assert world.kernel.observe() == [] and world.pins() == []

    inst = world.kernel.install("XdpProgram/count/lo", XDP, XdpPoint("lo", netns=world.netns))
    assert isinstance(inst.attach, XdpView) and inst.attach.mode == "generic"
    world.kernel.uninstall("XdpProgram/count/lo")


@on_real
def test_xdp_replace_across_modes(world: World) -> None:
    old = world.kernel.install("XdpProgram/count/eth0", XDP, world.xdp("generic"))
    new = world.kernel.replace("XdpProgram/count/eth0", XDP, world.xdp("native"))
    assert isinstance(old.attach, XdpView) and isinstance(new.attach, XdpView)
    assert (old.attach.mode, new.attach.mode) == ("generic", "native")
    assert world.ip_xdp() == (new.prog_id, "native")
    world.kernel.uninstall("XdpProgram/count/eth0")
    assert world.ip_xdp() == (None, None)


@on_real
def test_a_vanished_device_shows_as_detached(world: World) -> None:
    inst = world.kernel.install("TcxProgram/a/eth0", TCX, world.tcx())
    assert inst.attached
    assert world._veth is not None
    support.delete_veth_pair(world._veth)  # the device goes: its tcx link turns defunct
    world._veth = None
    # `ip netns del` returns before the kernel tears the namespace (and its devices) down.
    wait_for(lambda: not world.kernel.observe()[0].attached, "the link to turn defunct")
    (observed,) = world.kernel.observe()
    assert observed.link_id == inst.link_id and not observed.attached
    world.kernel.uninstall("TcxProgram/a/eth0")
    assert world.pins() == []


def _deleted_right_after(
    monkeypatch: pytest.MonkeyPatch, module: object, name: str, ns: str
) -> None:
    """Make ``module.name`` (an attach request) delete eth0 in ``ns`` as soon as the kernel has
    said yes: the window in which an operator's `ip link del` races an apply."""
    attach = getattr(module, name)

    def then_delete(*args: object, **kwargs: object) -> object:
        out = attach(*args, **kwargs)
        support.sh("ip", "-n", Path(ns).name, "link", "del", "eth0")
        return out

    monkeypatch.setattr(module, name, then_delete)


@on_real
@pytest.mark.parametrize("kind", ["xdp", "tc"])
def test_an_attach_that_worked_is_reported_even_if_the_interface_goes_right_after(
    world: World, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The attach's own answer says where the program runs; a read after it would find no
    interface and call a successful install "not attached" (an apply error for nothing)."""
    ns = world.netns
    (link,) = json.loads(support.sh("ip", "-n", world.ns_name, "-j", "link", "show", "eth0").stdout)
    if kind == "xdp":
        _deleted_right_after(monkeypatch, netlink, "xdp_attach", ns)
        inst = world.kernel.install("XdpProgram/count/eth0", XDP, world.xdp())
        assert isinstance(inst.attach, XdpView)
    else:
        _deleted_right_after(monkeypatch, tcnetlink, "replace_bpf_filter", ns)
        inst = world.kernel.install("TcProgram/count/eth0", TC, TcHook("eth0", "ingress", ns))
        assert isinstance(inst.attach, TcDirectView)
    assert inst.attached and (inst.attach.ifindex, inst.attach.netns) == (link["ifindex"], ns)
    # The interface really went (ip says so) and a later observation says so too.
    assert support.sh("ip", "-n", world.ns_name, "link", "show", "eth0", check=False).returncode
    (observed,) = world.kernel.observe()
    assert observed.prog_id == inst.prog_id and not observed.attached
    world.kernel.uninstall(inst.pin_dir)
    assert world.pins() == []


@on_real
def test_an_interrupted_install_is_cleaned_up(world: World) -> None:
    # A crash between loading and committing leaves a staging dir with a pinned program.
    stage = world.root / "TracepointProgram" / "getpid" / "x" / "%next"
    stage.mkdir(parents=True)
    support.sh("bpftool", "prog", "load", TP.object_path, str(stage / "prog"))
    stale = support.bpftool_json("prog", "show", "pinned", str(stage / "prog"))
    assert world.kernel.observe() == []  # staging is never reported as managed

    inst = world.kernel.install("TracepointProgram/getpid/x", TP, GETPID)
    assert inst.attached and not stage.exists()
    wait_for(lambda: not world.prog_exists(stale["id"]), "the stale program to be freed")  # type: ignore[index]
    world.kernel.uninstall("TracepointProgram/getpid/x")


@on_real
def test_uninstall_never_touches_anything_outside_its_pin_dir(world: World) -> None:
    world.kernel.install("TracepointProgram/a/x", TP, GETPID)
    b = world.kernel.install("TracepointProgram/b/x", TP, GETPID)
    world.kernel.uninstall("TracepointProgram/a/x")
    assert world.kernel.observe() == [b]
    world.kernel.uninstall("TracepointProgram/b/x")


def test_probes() -> None:
    assert probes.tcx_supported()
    assert probes.perf_link_supported()
    ext = probes.prog_type_supported(28)  # BPF_PROG_TYPE_EXT: EPERM on the project's hosts
    assert ext.reason and ext.feature == "ext"


def test_root_must_be_on_bpffs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(KernelError, match="not on a bpf file system"):
        RealKernel(tmp_path / "root").ensure_root()
