"""Apply the changes of one multi-program hook (XDP or TC dispatcher) with a single swap.

However many of a hook's programs are added, removed, reordered or replaced, the kernel builds one
new dispatcher revision and swaps it in atomically; every change of the hook succeeds or fails
together.
"""

from __future__ import annotations

from reconciler.kernel.types import DispatchSlot, Hook, Installed, Kernel
from reconciler.plan.hookgroups import desired_on_hooks, hook_label, hook_to_json
from reconciler.plan.value import Action, Plan, ResourceChange
from reconciler.spec.model import DesiredAttachment


def slots_for(plan: Plan, hook: Hook) -> list[DesiredAttachment]:
    return desired_on_hooks(plan).get(hook, [])


def swap(kernel: Kernel, plan: Plan, hook: Hook) -> dict[str, Installed]:
    """Make ``hook`` run what the manifests want on it; returns Installed by pin dir."""
    wanted = slots_for(plan, hook)
    slots = [
        DispatchSlot(
            pin_dir=d.address.pin_dir(),
            spec=d.program,
            priority=d.priority or 0,
            proceed_on=d.proceedon,
        )
        for d in wanted
    ]
    return {i.pin_dir: i for i in kernel.dispatch(hook, slots)}


def changes_of(plan: Plan, hook: Hook) -> list[ResourceChange]:
    return [c for c in plan.actionable if c.hook == hook]


def hook_extra(hook: Hook) -> dict[str, object]:
    return {"hook": hook_to_json(hook)}


__all__ = ["changes_of", "hook_extra", "hook_label", "is_unload", "slots_for", "swap"]


def is_unload(c: ResourceChange) -> bool:
    return c.action is Action.DELETE
