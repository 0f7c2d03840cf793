"""The kernel's view of where a program runs: one frozen dataclass per attach mechanism, each
giving exactly the document `bpfman list/get --json` shows as ``attach_point`` (and the state
file records), and read back from it (saved plans)."""

from __future__ import annotations

import json
import typing

import pytest

from reconciler.kernel.types import (
    ATTACH_VIEWS,
    AttachView,
    CgroupLinkView,
    DispatcherSlot,
    Installed,
    KprobeLinkView,
    MapInfo,
    OtherLinkView,
    PerfEventLinkView,
    TcDirectView,
    TcDispatcherView,
    TcxLinkView,
    TracepointLinkView,
    TracingLinkView,
    UprobeLinkView,
    XdpDispatcherView,
    XdpView,
    view_from_json,
)
from reconciler.plan import planfile

NS = "/run/netns/blue"
SLOT = DispatcherSlot(dispatcher_id=41, position=1, priority=20, proceed_on=("pass",))

# Each view and the document the kernel layer gave for it before views were typed: the same
# keys, in the same order, with the same values.
DOCUMENTS: list[tuple[AttachView, dict[str, object]]] = [
    (
        CgroupLinkView(4121, "cgroup_inet_egress"),
        {"link_type": "cgroup", "cgroup_id": 4121, "attach_type": "cgroup_inet_egress"},
    ),
    (XdpView(3, "eth0", "native"), {"ifindex": 3, "ifname": "eth0", "mode": "native"}),
    (
        XdpView(3, "eth0", "generic", NS),
        {"ifindex": 3, "ifname": "eth0", "mode": "generic", "netns": NS},
    ),
    (
        XdpDispatcherView(SLOT, 3, "eth0", "native", NS),
        {
            "dispatcher_id": 41,
            "position": 1,
            "priority": 20,
            "proceed_on": ["pass"],
            "ifindex": 3,
            "ifname": "eth0",
            "mode": "native",
            "netns": NS,
        },
    ),
    (
        TcDirectView(3, "eth0", "egress", 50, 0xB7F),
        {"ifindex": 3, "ifname": "eth0", "direction": "egress", "filter": "pref 50 handle 0xb7f"},
    ),
    (
        TcDirectView(3, "eth0", "ingress", 50, 0xB7F, NS),
        {
            "ifindex": 3,
            "ifname": "eth0",
            "direction": "ingress",
            "filter": "pref 50 handle 0xb7f",
            "netns": NS,
        },
    ),
    (
        TcDispatcherView("eth0", "ingress", NS, 3, SLOT),
        {
            "dispatcher": "tc",
            "dispatcher_id": 41,
            "position": 1,
            "priority": 20,
            "proceed_on": ["pass"],
            "ifindex": 3,
            "ifname": "eth0",
            "direction": "ingress",
            "netns": NS,
        },
    ),
    # What the real kernel says right after a TC dispatch: the hook only.
    (
        TcDispatcherView("eth0", "egress", NS),
        {"ifname": "eth0", "direction": "egress", "netns": NS, "dispatcher": "tc"},
    ),
    (
        TcDispatcherView("eth0", "egress"),
        {"ifname": "eth0", "direction": "egress", "dispatcher": "tc"},
    ),
    (
        TcxLinkView(3, "tcx_ingress", "eth0", 0, NS),
        {
            "link_type": "tcx",
            "ifindex": 3,
            "attach_type": "tcx_ingress",
            "ifname": "eth0",
            "position": 0,
            "netns": NS,
        },
    ),
    (
        TcxLinkView(0, "tcx_egress"),  # defunct: its device is gone
        {"link_type": "tcx", "ifindex": 0, "attach_type": "tcx_egress"},
    ),
    (
        TracepointLinkView("sys_enter_getppid"),
        {
            "link_type": "perf_event",
            "perf_event_type": "tracepoint",
            "tracepoint": "sys_enter_getppid",
        },
    ),
    (
        UprobeLinkView("/lib/x86_64-linux-gnu/libc.so.6", 624944, retprobe=True),
        {
            "link_type": "perf_event",
            "perf_event_type": "uretprobe",
            "file": "/lib/x86_64-linux-gnu/libc.so.6",
            "offset": 624944,
        },
    ),
    (
        UprobeLinkView("/usr/bin/app", 16, retprobe=False),
        {
            "link_type": "perf_event",
            "perf_event_type": "uprobe",
            "file": "/usr/bin/app",
            "offset": 16,
        },
    ),
    (
        KprobeLinkView("__x64_sys_getpid", 0, retprobe=True, addr=0),
        {
            "link_type": "perf_event",
            "perf_event_type": "kretprobe",
            "func": "__x64_sys_getpid",
            "offset": 0,
            "retprobe": True,
            "addr": 0,
        },
    ),
    (PerfEventLinkView("unspec"), {"link_type": "perf_event", "perf_event_type": "unspec"}),
    (
        TracingLinkView("trace_fentry", 1, 52134),
        {
            "link_type": "tracing",
            "attach_type": "trace_fentry",
            "target_obj_id": 1,
            "target_btf_id": 52134,
        },
    ),
    (OtherLinkView("xdp", (("ifindex", 3),)), {"link_type": "xdp", "ifindex": 3}),
    (OtherLinkView("netfilter"), {"link_type": "netfilter"}),
]


@pytest.mark.parametrize(("view", "doc"), DOCUMENTS, ids=lambda v: type(v).__name__)
def test_a_view_gives_the_same_document_and_reads_it_back(
    view: AttachView, doc: dict[str, object]
) -> None:
    assert list(view.to_json().items()) == list(doc.items())  # the order too
    assert view_from_json(json.loads(json.dumps(doc))) == view


def test_every_view_is_read_back_and_tested() -> None:
    members = set(typing.get_args(AttachView))
    assert set(ATTACH_VIEWS) == members
    assert {type(view) for view, _ in DOCUMENTS} == members


def test_no_view_is_an_empty_document() -> None:
    assert view_from_json({}) is None and view_from_json(None) is None
    with pytest.raises(ValueError, match="not an attach point"):
        view_from_json({"what": "is this"})


def test_documents_are_fresh() -> None:
    view = XdpDispatcherView(SLOT, 3, "eth0", "native")
    doc = view.to_json()
    doc["proceed_on"].append("drop")  # type: ignore[attr-defined]
    assert view.to_json()["proceed_on"] == ["pass"]


def installed(attach: AttachView | None) -> Installed:
    return Installed(
        pin_dir="XdpProgram/a/eth0",
        prog_id=7,
        prog_name="a",
        prog_type="xdp",
        tag="00",
        jited_size=1,
        prog_pin="/p",
        maps=(MapInfo("m", 3, "array", "/p/m"),),
        attached=attach is not None,
        attach=attach,
    )


@pytest.mark.parametrize("attach", [None, *(view for view, _ in DOCUMENTS)])
def test_saved_plans_keep_the_view(attach: AttachView | None) -> None:
    inst = installed(attach)
    doc = planfile._installed_json(inst)
    assert doc["attach"] == inst.attach_json() == (attach.to_json() if attach else {})
    assert planfile._installed(json.loads(json.dumps(doc))) == inst
