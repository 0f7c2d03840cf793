"""The fake kernel's multi-program hooks: one dispatcher per XDP or TC hook, in memory.

Semantics follow the real dispatchers (xdpdispatch.py, tcdispatch.py): programs run in
(priority, name) order (ours named by pin dir, foreign ones by program name), foreign
programs found on a hook's dispatcher are kept at their priority and chain actions, a slot
whose spec did not change keeps its program id, and every ``dispatch`` that changes anything
is exactly one swap to a new dispatcher (``dispatch_swaps`` counts them, per hook in
``swaps_by_hook``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from reconciler.kernel.slots import HookKey, hook_key, too_many
from reconciler.kernel.types import (
    MAX_DISPATCHER_SLOTS,
    AttachConflict,
    Hook,
    HookState,
    SlotState,
    XdpHook,
)


@dataclass
class FakeSlot:
    prog_id: int
    name: str
    priority: int
    proceed_on: tuple[str, ...]
    pin_dir: str | None  # None: foreign

    @property
    def order(self) -> tuple[int, str]:
        return (self.priority, self.pin_dir if self.pin_dir is not None else self.name)


@dataclass
class FakeHook:
    dispatcher_id: int
    slots: list[FakeSlot] = field(default_factory=list)
    mode: str | None = None  # XDP: native | generic


@dataclass
class FakeDispatchers:
    """Every dispatcher of a FakeKernel. ``new_prog`` hands out program ids (shared with the
    rest of the fake kernel); ``names`` maps program ids to names."""

    new_prog: Callable[[], int]
    names: dict[int, str]
    hooks: dict[HookKey, FakeHook] = field(default_factory=dict)
    swaps: int = 0
    swaps_by_hook: dict[HookKey, int] = field(default_factory=dict)

    def state(self, hook: Hook) -> HookState:
        found = self.hooks.get(hook_key(hook))
        if found is None:
            return HookState(hook, None)
        slots = tuple(
            SlotState(s.prog_id, s.name, s.priority, s.proceed_on, s.pin_dir) for s in found.slots
        )
        return HookState(hook, found.dispatcher_id, slots)

    def add_foreign(
        self,
        hook: Hook,
        name: str = "foreign",
        priority: int = 50,
        proceed_on: tuple[str, ...] = ("pass",),
    ) -> int:
        """A program another tool (xdp-loader) put on the hook's dispatcher: a new dispatcher
        revision holding it too (or a first dispatcher)."""
        key = hook_key(hook)
        old = self.hooks.get(key)
        slots = list(old.slots) if old is not None else []
        if len(slots) >= MAX_DISPATCHER_SLOTS:
            raise too_many(hook, len(slots) + 1)
        prog_id = self.new_prog()
        self.names[prog_id] = name[:15]
        slots.append(FakeSlot(prog_id, name[:15], priority, tuple(proceed_on), None))
        slots.sort(key=lambda s: s.order)
        self.hooks[key] = FakeHook(self.new_prog(), slots, old.mode if old else "generic")
        self.names[self.hooks[key].dispatcher_id] = "xdp_dispatcher"
        return prog_id

    def swap(self, hook: Hook, slots: list[FakeSlot], mode: str | None) -> FakeHook | None:
        """Replace the hook's dispatcher by a new one running ``slots`` (in the given order);
        none left: the dispatcher goes."""
        key = hook_key(hook)
        self.swaps += 1
        self.swaps_by_hook[key] = self.swaps_by_hook.get(key, 0) + 1
        old = self.hooks.pop(key, None)
        if old is not None:
            self.names.pop(old.dispatcher_id, None)
        if not slots:
            return None
        new = FakeHook(self.new_prog(), slots, mode)
        self.names[new.dispatcher_id] = (
            "xdp_dispatcher" if isinstance(hook, XdpHook) else "tc_dispatcher"
        )
        self.hooks[key] = new
        return new

    def find(self, prog_id: int) -> tuple[HookKey, FakeHook, int] | None:
        """(hook key, dispatcher, position) of a program running on a dispatcher."""
        for key, h in self.hooks.items():
            for i, s in enumerate(h.slots):
                if s.prog_id == prog_id:
                    return key, h, i
        return None

    def remove_interface(self, netns: str | None, ifname: str) -> list[int]:
        """A deleted device takes its dispatchers along; returns the programs they ran."""
        gone: list[int] = []
        for key in [k for k in self.hooks if k[1:3] == (netns, ifname)]:
            gone += [s.prog_id for s in self.hooks.pop(key).slots]
        return gone


def conflict(hook: Hook, prog_id: int, name: str) -> AttachConflict:
    return AttachConflict(
        f"interface {hook.ifname} already has XDP program id {prog_id} ({name}) attached, "
        "a program bpfman does not manage and not a dispatcher; detach it first"
    )
