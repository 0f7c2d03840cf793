"""A plan is a value: the ordered changes that would make the kernel match the manifests.

Computing a plan only reads; rendering never computes; applying executes exactly these changes.

Every type here is frozen and holds tuples: a plan is built once, by ``diff.build_plan`` or by
the engine from everything it has gathered (the diff, the host checks, the verifier's verdicts,
drift, narrowing), or read back from a plan file by ``planfile.load``. After that, it is only
read: by the text and JSON renderers (``render``, ``jsonout``), the plan-file writer
(``planfile``) and apply.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, NamedTuple

from reconciler.address import Address
from reconciler.kernel.types import Hook, Installed
from reconciler.plan.drift import Drift
from reconciler.spec.model import DesiredAttachment
from reconciler.values import frozen


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


@frozen
class ResourceChange:
    address: Address
    action: Action
    before: Mapping[str, Any] | None  # attributes as last applied (None when new)
    after: Mapping[str, Any] | None  # attributes the manifests ask for (None when unloading)
    desired: DesiredAttachment | None = None
    replace_paths: tuple[str, ...] = ()  # attributes forcing replacement
    reason: str | None = None  # why a delete or replace happens, for people
    origin: str | None = None  # manifest file:line
    installed: Installed | None = None  # what the kernel held when planned
    uses_maps_of: tuple[str, ...] = ()  # map owners: ordered around them
    # The multi-program hook (XDP or TC dispatcher) this attachment runs on, when it runs through
    # a dispatcher: apply then swaps each such hook once, for all its changes together.
    hook: Hook | None = None


class Orphan(NamedTuple):
    """An attachment whose manifest is gone but that ``bpfman.io/prune: disabled`` keeps
    loaded. Never unloaded by an apply; listed until removed."""

    address: str
    origin: str  # the manifest file:line it came from


class Unselected(NamedTuple):
    """A manifest whose nodeselector does not match this host."""

    resource: str  # KIND/NAME
    origin: str  # file:line
    reason: str


@frozen
class Plan:
    changes: tuple[ResourceChange, ...]  # in execution order; no-ops included, as in Terraform
    errors: tuple[str, ...] = ()  # host problems that forbid applying
    source: str = ""
    revision: str | None = None
    bpffs_root: str = ""
    destroy: bool = False  # everything under the root goes, whatever the manifests say
    # Whether XDP and TC programs go through dispatchers (the kernel supports freplace).
    dispatching: bool = False
    # Narrowed by --target/--exclude: apply then keeps records it has no change for.
    targeted: bool = False
    warnings: tuple[str, ...] = ()
    # Changes made outside bpfman since the last apply, shown first.
    drift: tuple[Drift, ...] = ()
    unselected: tuple[Unselected, ...] = ()
    orphans: tuple[Orphan, ...] = ()
    # Resources a kustomization listed that bpfman does not load, by "apiVersion Kind".
    skipped: tuple[tuple[str, int], ...] = ()

    @property
    def actionable(self) -> tuple[ResourceChange, ...]:
        return tuple(c for c in self.changes if c.action is not Action.NOOP)

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
        return any(c.action is not Action.NOOP for c in self.changes)
