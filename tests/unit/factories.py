"""Small builders of desired and observed values for planner tests."""

from __future__ import annotations

from typing import Any

from reconciler.address import Address
from reconciler.kernel.types import (
    Installed,
    ProgramSpec,
    ProgType,
    TcxPoint,
    TracepointPoint,
    XdpPoint,
)
from reconciler.spec.model import DesiredAttachment, Origin
from reconciler.state import Record


def xdp(name: str, iface: str = "eth0", priority: int = 50, digest: str = "sha256:aa", **over: Any):
    attrs = {
        "bytecode": "bytecode/xdp.o",
        "bytecode_digest": digest,
        "function": "xdp_stats",
        "interface": iface,
        "priority": priority,
        "proceedon": ["pass", "dispatcher_return"],
    }
    attrs.update(over)
    return DesiredAttachment(
        address=Address("XdpProgram", name, iface),
        origin=Origin("xdp.yaml", 1),
        program=ProgramSpec("/x/xdp.o", attrs["function"], ProgType.XDP),
        point=XdpPoint(iface),
        bytecode_digest=digest,
        priority=priority,
        proceedon=tuple(attrs["proceedon"]),
        attributes=attrs,
    )


def tcx(name: str, iface: str = "eth0", priority: int = 50, direction: str = "ingress"):
    attrs = {
        "bytecode": "bytecode/tcx.o",
        "bytecode_digest": "sha256:bb",
        "function": "tcx_stats",
        "interface": iface,
        "direction": direction,
        "priority": priority,
    }
    return DesiredAttachment(
        address=Address("TcxProgram", name, iface),
        origin=Origin("tcx.yaml", 3),
        program=ProgramSpec("/x/tcx.o", "tcx_stats", ProgType.TCX),
        point=TcxPoint(iface, direction),
        bytecode_digest="sha256:bb",
        priority=priority,
        attributes=attrs,
    )


def tracepoint(name: str, tp: str = "syscalls/sys_enter_getpid"):
    group, event = tp.split("/")
    attrs = {
        "bytecode": "bytecode/tp.o",
        "bytecode_digest": "sha256:cc",
        "function": "count",
        "tracepoint": tp,
    }
    return DesiredAttachment(
        address=Address("TracepointProgram", name, tp),
        origin=Origin("tp.yaml", 1),
        program=ProgramSpec("/x/tp.o", "count", ProgType.TRACEPOINT),
        point=TracepointPoint(group, event),
        bytecode_digest="sha256:cc",
        attributes=attrs,
    )


def installed(d: DesiredAttachment, prog_id: int = 10, attached: bool = True) -> Installed:
    return Installed(
        pin_dir=d.address.pin_dir(),
        prog_id=prog_id,
        prog_name=d.program.function[:15],
        prog_type="xdp",
        tag="00",
        jited_size=1,
        prog_pin="/p",
        attached=attached,
    )


def record(d: DesiredAttachment, **attrs: Any) -> Record:
    a = dict(d.attributes)
    a.update(attrs)
    return Record(address=str(d.address), attributes=a, origin=str(d.origin), prog_id=10)
