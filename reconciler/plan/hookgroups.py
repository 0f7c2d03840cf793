"""Hook groups: which multi-program hook (XDP or TC dispatcher) each attachment belongs to,
and the attachments a plan puts on each hook.

XDP and TC hooks are shared through dispatchers when the kernel supports freplace
(BPF_PROG_TYPE_EXT); otherwise a hook takes one program, attached directly. (Carrying out a
hook's changes with one dispatcher swap is apply's part: ``reconciler.apply.hooks``.)
"""

from __future__ import annotations

from typing import Any

from reconciler.kernel.types import Hook, TcHook, XdpHook, XdpPoint
from reconciler.plan.value import Plan
from reconciler.spec.model import DesiredAttachment
from reconciler.state import Record


def hook_of_point(point: object) -> Hook | None:
    if isinstance(point, XdpPoint):
        return XdpHook(point.ifname, point.netns, point.mode)
    if isinstance(point, TcHook):
        return point
    return None


def hook_to_json(hook: Hook) -> dict[str, Any]:
    if isinstance(hook, XdpHook):
        return {"type": "xdp", "ifname": hook.ifname, "netns": hook.netns, "mode": hook.mode}
    return {"type": "tc", "ifname": hook.ifname, "netns": hook.netns, "direction": hook.direction}


def hook_from_json(doc: dict[str, Any] | None) -> Hook | None:
    if not doc:
        return None
    if doc.get("type") == "xdp":
        return XdpHook(doc["ifname"], doc.get("netns"), doc.get("mode", "auto"))
    if doc.get("type") == "tc":
        return TcHook(doc["ifname"], doc["direction"], doc.get("netns"))
    return None


def hook_label(hook: Hook) -> str:
    where = f"{hook.netns}:" if hook.netns else ""
    if isinstance(hook, XdpHook):
        return f"XDP on {where}{hook.ifname}"
    return f"TC {hook.direction} on {where}{hook.ifname}"


def hook_of_change(desired: DesiredAttachment | None, record: Record | None) -> Hook | None:
    """The dispatcher hook of a change when hooks are dispatched: from the manifest, or for an
    unload from what the state recorded when it was applied."""
    if desired is not None:
        return hook_of_point(desired.point)
    return hook_from_json(record.extra.get("hook")) if record else None


def desired_on_hooks(plan: Plan) -> dict[Hook, list[DesiredAttachment]]:
    out: dict[Hook, list[DesiredAttachment]] = {}
    for c in plan.changes:
        if c.hook is not None and c.desired is not None:
            out.setdefault(c.hook, []).append(c.desired)
    for ds in out.values():
        ds.sort(key=lambda d: (d.priority or 0, d.address.name, d.address.index))
    return out
