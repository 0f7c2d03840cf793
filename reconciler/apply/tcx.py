"""TCX placement: where a new link goes among our own links on a hook."""

from __future__ import annotations

from reconciler.address import Address
from reconciler.kernel.types import Placement, TcxPoint
from reconciler.plan.value import Plan
from reconciler.spec.model import DesiredAttachment


def _hook(p: TcxPoint) -> tuple[str | None, str, str]:
    return (p.netns, p.ifname, p.direction)


class TcxOrder:
    """Places TCX links among our own links on a hook: lower priority first, ties by name, as
    the manifests want; foreign links keep whatever place their owners gave them."""

    def __init__(self, plan: Plan) -> None:
        self.live: set[Address] = set()
        self.wanted: dict[tuple[str | None, str, str], list[DesiredAttachment]] = {}
        for c in plan.changes:
            if c.installed is not None and c.installed.attached:
                self.live.add(c.address)
            d = c.desired
            if d is not None and isinstance(d.point, TcxPoint):
                self.wanted.setdefault(_hook(d.point), []).append(d)
        for ds in self.wanted.values():
            ds.sort(key=lambda d: (d.priority or 0, d.address.name, d.address.index))

    def placement(self, d: DesiredAttachment) -> Placement:
        assert isinstance(d.point, TcxPoint)
        order = [x for x in self.wanted[_hook(d.point)] if x.address != d.address]
        key = (d.priority or 0, d.address.name, d.address.index)
        after = [x for x in order if (x.priority or 0, x.address.name, x.address.index) > key]
        before = [x for x in order if (x.priority or 0, x.address.name, x.address.index) < key]
        for x in after:
            if x.address in self.live:
                return Placement(before=x.address.pin_dir())
        for x in reversed(before):
            if x.address in self.live:
                return Placement(after=x.address.pin_dir())
        return Placement()
