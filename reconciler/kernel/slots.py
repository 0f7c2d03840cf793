"""Rules of a multi-program hook that both kernels share (the real dispatchers in xdp/ and tc/,
and the fake's): which hook a dispatch is for, and the checks made before anything is touched."""

from __future__ import annotations

from reconciler.kernel.sys import bpffs
from reconciler.kernel.types import (
    MAX_DISPATCHER_SLOTS,
    DispatchSlot,
    Hook,
    KernelError,
    ProgType,
    XdpHook,
)
from reconciler.kernel.xdp.attach import check_mode

XDP_ACTIONS = ("aborted", "drop", "pass", "tx", "redirect", "dispatcher_return")
TC_ACTIONS = (
    "unspec",
    "ok",
    "reclassify",
    "shot",
    "pipe",
    "stolen",
    "queued",
    "repeat",
    "redirect",
    "trap",
    "dispatcher_return",
)
HookKey = tuple[str, str | None, str, str]  # (kind, netns, ifname, direction or "")


def hook_key(hook: Hook) -> HookKey:
    if isinstance(hook, XdpHook):
        return ("xdp", hook.netns, hook.ifname, "")
    return ("tc", hook.netns, hook.ifname, hook.direction)


def check_hook(hook: Hook, slots: list[DispatchSlot]) -> None:
    """The errors both kernels raise before touching anything."""
    actions: tuple[str, ...]
    if isinstance(hook, XdpHook):
        check_mode(hook.mode)
        actions, prog_type, what = XDP_ACTIONS, ProgType.XDP, f"XDP hook of {hook.ifname}"
    else:
        if hook.direction not in ("ingress", "egress"):
            raise KernelError(f"TC direction must be ingress or egress, not {hook.direction!r}")
        actions, prog_type = TC_ACTIONS, ProgType.TC
        what = f"TC {hook.direction} hook of {hook.ifname}"
    seen: set[str] = set()
    for slot in slots:
        bpffs.check_pin_dir(slot.pin_dir)
        if slot.pin_dir in seen:
            raise KernelError(f"{slot.pin_dir} is listed twice for the {what}")
        seen.add(slot.pin_dir)
        if slot.spec.prog_type is not prog_type:
            raise KernelError(
                f"{slot.pin_dir}: a {slot.spec.prog_type.value} program cannot run on the {what}"
            )
        bad = [a for a in slot.proceed_on if a not in actions]
        if bad:
            raise KernelError(
                f"{slot.pin_dir}: unknown proceed-on action(s) {', '.join(bad)} for the {what}; "
                f"known: {', '.join(actions)}"
            )
        if not 0 <= slot.priority <= 0xFFFFFFFF:
            raise KernelError(f"{slot.pin_dir}: priority {slot.priority} is out of range")


def too_many(hook: Hook, count: int) -> KernelError:
    what = "XDP" if isinstance(hook, XdpHook) else f"TC {getattr(hook, 'direction', '')}"
    return KernelError(
        f"{count} programs on the {what} hook of {hook.ifname}: a dispatcher runs at most "
        f"{MAX_DISPATCHER_SLOTS} (foreign programs on it count too); remove some"
    )
