"""The ``list --by-hook`` document from what a scan read, our pins and our records: owners,
run order, drift and the text, without a kernel."""

from __future__ import annotations

from pathlib import Path

from reconciler import hooksview
from reconciler.kernel.hookscan import Dispatcher, Entry, EventLink, Hook, Scan
from reconciler.kernel.types import Installed, TcxLinkView, XdpView
from reconciler.state import Record

ROOT = Path("/sys/fs/bpf/bpfman")
NS = "/run/netns/blue"


def inst(pin_dir: str, prog_id: int, link_id: int | None = None, attach=None) -> Installed:
    return Installed(
        pin_dir=pin_dir,
        prog_id=prog_id,
        prog_name="p",
        prog_type="xdp",
        tag="00",
        jited_size=1,
        prog_pin=f"{ROOT}/{pin_dir}/prog",
        link_id=link_id,
        attached=attach is not None,
        attach=attach,
    )


def rec(address: str, origin: str = "fw.yaml:1", **attrs: object) -> Record:
    return Record(address, dict(attrs), origin=origin)


def test_xdp_dispatcher_slots_with_bpfman_libxdp_and_another_root() -> None:
    disp = Dispatcher(77, "xdp_dispatcher", "libxdp v2", ("/sys/fs/bpf/xdp/dispatch-3-77",))
    entries = (
        Entry(10, "xdp_stats", "ext", "xdp_dispatcher", priority=10, chain=("pass",), slot=0,
              dispatcher_id=77, pins=(f"{ROOT}/XdpProgram/fw/eth0/prog",)),
        Entry(11, "other", "ext", "xdp_dispatcher", priority=20, chain=(), slot=1,
              dispatcher_id=77,
              pins=("/sys/fs/bpf/team-b/XdpProgram/x/eth0/prog",)),
        Entry(12, "xdp_pass", "ext", "xdp_dispatcher", priority=50, chain=("pass",), slot=2,
              dispatcher_id=77, pins=("/sys/fs/bpf/xdp/dispatch-3-77/prog2-prog",)),
    )  # fmt: skip
    scan = Scan(hooks=[Hook("xdp", NS, 3, "eth0", None, "native", (disp,), entries)])
    doc = hooksview.document(
        scan,
        [inst("XdpProgram/fw/eth0", 10)],
        {"XdpProgram/fw[eth0]": rec("XdpProgram/fw[eth0]")},
        ROOT,
    )
    (h,) = doc["hooks"]
    assert [p["position"] for p in h["programs"]] == [1, 2, 3]
    owners = [p["owner"] for p in h["programs"]]
    assert owners[0] == {
        "kind": "bpfman",
        "address": "XdpProgram/fw[eth0]",
        "origin": "fw.yaml:1",
        "recorded": True,
    }
    assert owners[1] == {
        "kind": "bpfman_root",
        "root": "/sys/fs/bpf/team-b",
        "address": "XdpProgram/x[eth0]",
    }
    assert owners[2] == {"kind": "libxdp"}
    assert h["managed"] and [p["drift"] is not None for p in h["programs"]] == [False, True, True]
    assert h["dispatchers"][0]["owner"] == {"kind": "libxdp"}
    text = hooksview.render(doc)
    assert text.splitlines()[0].startswith(f"eth0 (netns {NS}) XDP, native, dispatcher id 77")
    assert "1.  prio 10  xdp_stats  id 10  pass" in text
    assert "libxdp (xdp-loader)" in text


def test_an_emptied_slot_is_shown_on_its_hook() -> None:
    view = XdpView(3, "eth0", "native", NS)
    records = {
        "XdpProgram/fw[eth0]": Record(
            "XdpProgram/fw[eth0]",
            {"interface": "eth0", "netns": NS},
            origin="fw.yaml:1",
            extra={"attach": view.to_json()},
        )
    }
    doc = hooksview.document(Scan(), [inst("XdpProgram/fw/eth0", 10)], records, ROOT)
    (h,) = doc["hooks"]
    assert (h["type"], h["netns"], h["ifname"], h["programs"]) == ("xdp", NS, "eth0", [])
    (m,) = h["missing"]
    assert m["address"] == "XdpProgram/fw[eth0]" and m["prog_id"] == 10
    assert "[drift: pinned, but not attached to the hook]" in hooksview.render(doc)


def test_a_recorded_program_without_pins_is_missing_and_foreign_tcx_is_drift() -> None:
    entry = Entry(20, "tcx_stats", "sched_cls", "tcx", link_id=5)
    scan = Scan(hooks=[Hook("tcx", None, 2, "eth0", "ingress", entries=(entry,))])
    records = {
        "TcxProgram/a[eth0]": Record(
            "TcxProgram/a[eth0]", {"interface": "eth0", "direction": "ingress"}, origin="a:1"
        )
    }
    doc = hooksview.document(scan, [], records, ROOT)
    (h,) = doc["hooks"]
    (p,) = h["programs"]
    assert p["owner"] == {"kind": "other", "what": "a tcx link of someone else"}
    assert p["drift"] and h["managed"]
    assert h["missing"] == [
        {"address": "TcxProgram/a[eth0]", "origin": "a:1", "prog_id": None,
         "reason": "pins are missing"}
    ]  # fmt: skip


def test_ours_is_matched_by_link_and_hooks_are_ordered_tcx_before_tc() -> None:
    tcx = Hook(
        "tcx", None, 2, "eth0", "ingress", entries=(Entry(20, "a", "sched_cls", "tcx", link_id=5),)
    )
    tc = Hook("tc", None, 2, "eth0", "ingress", entries=(
        Entry(30, "f", "sched_cls", "tc_filter", tc_pref=10, tc_handle=1, direct_action=True),
    ))  # fmt: skip
    view = TcxLinkView(2, "tcx_ingress", "eth0", 0)
    doc = hooksview.document(
        Scan(hooks=[tc, tcx]), [inst("TcxProgram/a/eth0", 99, link_id=5, attach=view)], {}, ROOT
    )
    assert [h["type"] for h in doc["hooks"]] == ["tcx", "tc"]
    (p,) = doc["hooks"][0]["programs"]
    assert p["owner"]["address"] == "TcxProgram/a[eth0]" and not p["owner"]["recorded"]
    text = hooksview.render(doc)
    assert "a  id 20 link 5  bpfman TcxProgram/a[eth0] (no record)" in text
    assert "pref 10 handle 0x1  f  id 30  direct-action  a tc filter of someone else" in text


def test_events_grouped_and_a_recorded_tracepoint_without_link() -> None:
    links = [
        EventLink(7, "perf_event", 40, "tp_hits", "tracepoint sys_enter_openat"),
        EventLink(8, "perf_event", 41, "other", "tracepoint sys_enter_openat"),
    ]
    ours = [inst("TracepointProgram/tp/syscalls%2Fsys_enter_openat", 40, link_id=7)]
    records = {
        "TracepointProgram/gone[syscalls/sys_enter_read]": rec(
            "TracepointProgram/gone[syscalls/sys_enter_read]"
        )
    }
    doc = hooksview.document(Scan(events=links), ours, records, ROOT)
    first, second = doc["events"]
    assert first["event"] == "tracepoint sys_enter_openat"
    assert [p["owner"]["kind"] for p in first["programs"]] == ["bpfman", "other"]
    assert first["programs"][0]["owner"]["address"] == (
        "TracepointProgram/tp[syscalls/sys_enter_openat]"
    )
    assert second["missing"][0]["address"] == "TracepointProgram/gone[syscalls/sys_enter_read]"


def test_nothing_to_show() -> None:
    doc = hooksview.document(Scan(), [], {}, ROOT)
    assert doc == {
        "format_version": "1.0",
        "bpffs_root": str(ROOT),
        "hooks": [],
        "events": [],
        "problems": [],
    }
    assert "No XDP, TC or TCX hook" in hooksview.render(doc)
