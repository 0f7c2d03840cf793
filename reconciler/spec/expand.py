"""Expand validated manifests into one DesiredAttachment per attach point.

This is the only host-dependent step of the spec layer, and only for
``interfaceselector.primarynodeinterface``, which asks which interface carries the default route.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.address import Address
from reconciler.kernel.types import (
    AttachPoint,
    ProgramSpec,
    ProgType,
    TcxPoint,
    TracepointPoint,
    UprobePoint,
    XdpPoint,
)
from reconciler.spec.loader import source_base
from reconciler.spec.model import DesiredAttachment, Manifest, ManifestError, Problem
from reconciler.spec.semantic import resolve_bytecode

PrimaryInterface = Callable[[], str | None]

_PROG_TYPES = {
    "XdpProgram": ProgType.XDP,
    "TcxProgram": ProgType.TCX,
    "TracepointProgram": ProgType.TRACEPOINT,
    "UprobeProgram": ProgType.UPROBE,
}
_RTF_UP = 0x0001
_RTF_REJECT = 0x0200


def default_primary_interface(
    route: Path = Path("/proc/net/route"), ipv6_route: Path = Path("/proc/net/ipv6_route")
) -> str | None:
    """The interface of the default route with the lowest metric (IPv4, else IPv6), or None."""
    best: tuple[int, str] | None = None
    try:
        for line in route.read_text().splitlines()[1:]:
            # Iface Destination Gateway Flags RefCnt Use Metric Mask ...  (hex, host byte order)
            f = line.split()
            if len(f) >= 8 and f[1] == "00000000" and f[7] == "00000000":
                flags, metric = int(f[3], 16), int(f[6])
                if (
                    flags & _RTF_UP
                    and not flags & _RTF_REJECT
                    and (best is None or metric < best[0])
                ):
                    best = (metric, f[0])
    except (OSError, ValueError):
        pass
    if best is not None:
        return best[1]
    try:
        for line in ipv6_route.read_text().splitlines():
            # dest dest_len src src_len next_hop metric refcnt use flags iface
            f = line.split()
            if len(f) >= 10 and int(f[1], 16) == 0 and f[9] != "lo":
                flags, metric = int(f[8], 16), int(f[5], 16)
                if (
                    flags & _RTF_UP
                    and not flags & _RTF_REJECT
                    and (best is None or metric < best[0])
                ):
                    best = (metric, f[9])
    except (OSError, ValueError):
        pass
    return best[1] if best is not None else None


@dataclass(frozen=True)
class _Point:
    index: str  # the address index: interface, group/name, or uprobe location
    point: AttachPoint
    attributes: dict[str, Any]


class _Expander:
    def __init__(self, root: Path, primary_interface: PrimaryInterface) -> None:
        self.base = source_base(root)
        self.primary_interface = primary_interface
        self._primary: list[str | None] = []  # asked once, lazily
        self._digests: dict[Path, str] = {}
        self.problems: list[Problem] = []

    def primary(self) -> str | None:
        if not self._primary:
            self._primary.append(self.primary_interface())
        return self._primary[0]

    def digest(self, path: Path) -> str:
        if path not in self._digests:
            h = hashlib.sha256()
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            self._digests[path] = f"sha256:{h.hexdigest()}"
        return self._digests[path]

    def interfaces(self, m: Manifest) -> list[str]:
        selector = m.spec["interfaceselector"]
        if "interfaces" in selector:
            return list(selector["interfaces"])
        ifname = self.primary()
        if ifname is None:
            self.problems.append(
                Problem(
                    m.origin_of("spec.interfaceselector.primarynodeinterface"),
                    "spec.interfaceselector.primarynodeinterface",
                    "no default route on this host, so there is no primary interface to attach "
                    "to; name the interfaces instead: interfaceselector: {interfaces: [eth0]}",
                )
            )
            return []
        return [ifname]

    def expand(self, m: Manifest) -> list[DesiredAttachment]:
        spec = m.spec
        written: str = spec["bytecode"]["path"]
        located = resolve_bytecode(self.base / m.origin.file, written)
        try:
            resolved = located.resolve(strict=True)
            digest = self.digest(resolved)
        except OSError as e:  # removed or made unreadable since load_manifests() checked it
            self.problems.append(
                Problem(
                    m.origin_of("spec.bytecode.path"),
                    "spec.bytecode.path",
                    f"cannot read bytecode file {located}: {e.strerror or e}",
                )
            )
            return []
        shown = written if Path(written).is_absolute() else _relative(located, self.base)
        program = ProgramSpec(str(resolved), spec["bpffunctionname"], _PROG_TYPES[m.kind])
        common = {"bytecode": shown, "bytecode_digest": digest, "function": spec["bpffunctionname"]}
        return [
            DesiredAttachment(
                address=Address(m.kind, m.name, point.index),
                origin=m.origin,
                program=program,
                point=point.point,
                bytecode_digest=digest,
                priority=spec.get("priority"),
                proceedon=tuple(spec.get("proceedon", ())),
                attributes={**common, **point.attributes},
            )
            for point in self.points(m)
        ]

    def points(self, m: Manifest) -> list[_Point]:
        spec = m.spec
        if m.kind == "XdpProgram":
            return [
                _Point(
                    ifname,
                    XdpPoint(ifname),
                    {
                        "interface": ifname,
                        "priority": spec["priority"],
                        "proceedon": list(spec["proceedon"]),
                    },
                )
                for ifname in self.interfaces(m)
            ]
        if m.kind == "TcxProgram":
            direction = spec["direction"]
            return [
                _Point(
                    ifname,
                    TcxPoint(ifname, direction),
                    {"interface": ifname, "direction": direction, "priority": spec["priority"]},
                )
                for ifname in self.interfaces(m)
            ]
        if m.kind == "TracepointProgram":
            return [
                _Point(name, TracepointPoint(*name.split("/", 1)), {"tracepoint": name})
                for name in spec["names"]
            ]
        if m.kind == "UprobeProgram":
            target: str = spec["target"]
            func_name: str | None = spec.get("func_name")
            offset: int = spec["offset"]
            pid: int | None = spec.get("pid") or None  # 0, like omitted, means every process
            attributes = {
                "target": target,
                "func_name": func_name,
                "offset": offset,
                "retprobe": spec["retprobe"],
                "pid": pid,
            }
            probe = UprobePoint(target, func_name, offset, spec["retprobe"], pid)
            return [_Point(uprobe_index(target, func_name, offset), probe, attributes)]
        raise ValueError(f"unexpected kind {m.kind!r}")  # load_manifests only returns KINDS


def uprobe_index(target: str, func_name: str | None, offset: int) -> str:
    """``/usr/bin/bash:readline``, ``...:readline+16`` or, without a function, ``...+0x1a2b``."""
    if func_name:
        return f"{target}:{func_name}" + (f"+{offset}" if offset else "")
    return f"{target}+{offset:#x}"


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to the source root, lexically (symlinks kept as the user wrote them)."""
    return os.path.relpath(os.path.normpath(os.path.abspath(path)), os.path.abspath(base))


def expand_manifests(
    manifests: list[Manifest], root: Path, primary_interface: PrimaryInterface
) -> list[DesiredAttachment]:
    expander = _Expander(root, primary_interface)
    attachments = [a for m in manifests for a in expander.expand(m)]
    if expander.problems:
        raise ManifestError([str(p) for p in expander.problems])
    return attachments
