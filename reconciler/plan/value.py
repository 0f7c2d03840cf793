"""A plan is a value: the ordered changes that would make the kernel match the manifests.

Computing a plan only reads; rendering never computes; applying executes exactly these changes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from reconciler.address import Address
from reconciler.kernel.types import Hook, Installed
from reconciler.spec.model import DesiredAttachment


class Action(enum.Enum):
    NOOP = "no-op"
    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"  # make-before-break: the new program runs before the old one goes
    DELETE = "delete"

    @property
    def terraform_actions(self) -> list[str]:
        if self is Action.REPLACE:
            return ["create", "delete"]
        return [self.value]


@dataclass
class ResourceChange:
    address: Address
    action: Action
    before: dict[str, Any] | None  # attributes as last applied (None when new)
    after: dict[str, Any] | None  # attributes the manifests ask for (None when unloading)
    desired: DesiredAttachment | None = None
    replace_paths: list[str] = field(default_factory=list)  # attributes forcing replacement
    reason: str | None = None  # why a delete or replace happens, for people
    origin: str | None = None  # manifest file:line
    installed: Installed | None = None  # what the kernel held when planned
    uses_maps_of: list[str] = field(default_factory=list)  # map owners: ordered around them
    # The multi-program hook (XDP or TC dispatcher) this attachment runs on, when it runs through
    # a dispatcher: apply then swaps each such hook once, for all its changes together.
    hook: Hook | None = None


@dataclass
class Plan:
    changes: list[ResourceChange]  # in execution order; no-ops included, as in Terraform's JSON
    errors: list[str] = field(default_factory=list)  # host problems that forbid applying
    source: str = ""
    revision: str | None = None
    bpffs_root: str = ""
    destroy: bool = False  # everything under the root goes, whatever the manifests say
    # Whether XDP and TC programs go through dispatchers (the kernel supports freplace).
    dispatching: bool = False
    # Narrowed by --target/--exclude: apply then keeps records it has no change for.
    targeted: bool = False
    warnings: list[str] = field(default_factory=list)
    # Changes made outside bpfman since the last apply (plan.drift.Drift), shown first.
    drift: list[Any] = field(default_factory=list)
    # Manifests whose nodeselector does not match this host: (KIND/NAME, file:line, reason).
    unselected: list[tuple[str, str, str]] = field(default_factory=list)
    # Attachments whose manifest is gone but that bpfman.io/prune: disabled keeps loaded:
    # (address, file:line it came from). Never unloaded by an apply; listed until removed.
    orphans: list[tuple[str, str]] = field(default_factory=list)

    @property
    def actionable(self) -> list[ResourceChange]:
        return [c for c in self.changes if c.action is not Action.NOOP]

    def counts(self) -> tuple[int, int, int]:
        add = change = destroy = 0
        for c in self.changes:
            if c.action is Action.CREATE:
                add += 1
            elif c.action is Action.UPDATE:
                change += 1
            elif c.action is Action.DELETE:
                destroy += 1
            elif c.action is Action.REPLACE:
                add += 1
                destroy += 1
        return add, change, destroy

    @property
    def has_changes(self) -> bool:
        return bool(self.actionable)
