"""Diff the desired attachments against what the kernel holds and what the state file recorded."""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Iterable

from reconciler import kinds
from reconciler.address import Address
from reconciler.kernel.types import Hook, Installed
from reconciler.plan.drift import Drift
from reconciler.plan.hookgroups import hook_of_change
from reconciler.plan.value import Action, Orphan, Plan, ResourceChange, Unselected
from reconciler.spec.model import PRUNE_ATTRIBUTE, DesiredAttachment
from reconciler.state import Record

# Attributes every kind has whose change cannot be carried out on the running program. The rest
# of the rule is each kind's (reconciler.kinds): which of its attributes force a replacement, and
# which change in place (e.g. a single XDP program's priority only matters once a dispatcher
# orders several; a TCX link cannot move, so a new TCX priority means a new link). A moved
# bytecode file with the same digest is the same program. An image whose tag now resolves to
# another digest is another image, even if its object did not change: the plan says so.
_FORCES_REPLACEMENT = frozenset(
    {"bytecode_digest", "image_digest", "function", "global_data", "map_owner"}
)
_RANK = {Action.DELETE: 0, Action.REPLACE: 0, Action.UPDATE: 1, Action.CREATE: 2, Action.NOOP: 3}


def forcing(d: DesiredAttachment) -> frozenset[str]:
    """The attributes of ``d`` whose change needs a new program (or link): the one rule every
    kind goes through, program kinds and applications alike. Decided by the program type, never
    by the manifest kind that spelled it: a TCX program of a BpfApplication is the same kernel
    object as a TcxProgram's."""
    return _FORCES_REPLACEMENT | kinds.forcing(d.program.prog_type)


def _changed(before: dict, after: dict) -> list[str]:
    keys = sorted(set(before) | set(after))
    return [k for k in keys if before.get(k) != after.get(k)]


def _classify(
    d: DesiredAttachment, inst: Installed | None, rec: Record | None, hook: Hook | None
) -> ResourceChange:
    addr, origin = d.address, str(d.origin)
    uses = tuple(str(owner) for owner in d.depends_on)
    if inst is None:
        reason = "its pins are missing from the kernel (changed outside bpfman)" if rec else None
        return ResourceChange(
            addr,
            Action.CREATE,
            None,
            d.attributes,
            d,
            reason=reason,
            origin=origin,
            uses_maps_of=uses,
            hook=hook,
        )
    if rec is None:
        return ResourceChange(
            addr,
            Action.REPLACE,
            {},
            d.attributes,
            d,
            reason="it is pinned but has no record in the state file",
            origin=origin,
            installed=inst,
            uses_maps_of=uses,
            hook=hook,
        )
    changed = _changed(rec.attributes, d.attributes)
    forced = [k for k in changed if k in forcing(d)]
    action, reason = Action.NOOP, None
    if not inst.attached:
        action = Action.REPLACE
        reason = "it is no longer attached in the kernel (changed outside bpfman)"
    elif forced:
        action = Action.REPLACE
    elif changed:
        action = Action.UPDATE
    return ResourceChange(
        addr,
        action,
        rec.attributes,
        d.attributes,
        d,
        replace_paths=tuple(forced),
        reason=reason,
        origin=origin,
        installed=inst,
        uses_maps_of=uses,
        hook=hook,
    )


def _cascade(changes: dict[Address, ResourceChange]) -> dict[Address, ResourceChange]:
    """A program that uses another's maps must be reloaded when that owner is (re)loaded:
    its map fds would still point at the old owner's maps."""
    out = dict(changes)
    settled = False
    while not settled:
        settled = True
        for a, c in out.items():
            if c.desired is None or c.action not in (Action.NOOP, Action.UPDATE):
                continue
            for dep in c.desired.depends_on:
                owner = out.get(dep)
                if owner is not None and owner.action in (Action.CREATE, Action.REPLACE):
                    out[a] = dataclasses.replace(
                        c,
                        action=Action.REPLACE,
                        reason=f"its map owner {dep} is being loaded again, with new maps",
                    )
                    settled = False
                    break
    return out


def _ordered(
    changes: list[ResourceChange], deps: dict[Address, set[Address]]
) -> list[ResourceChange]:
    """Owners before the programs that use their maps; otherwise replacements, updates, loads."""
    by_addr = {c.address: c for c in changes}
    waiting = {a: {d for d in deps.get(a, ()) if d in by_addr} for a in by_addr}
    users: dict[Address, list[Address]] = {}
    for a, ds in waiting.items():
        for d in ds:
            users.setdefault(d, []).append(a)
    ready = [(_RANK[c.action], c.address) for c in changes if not waiting[c.address]]
    heapq.heapify(ready)
    out: list[ResourceChange] = []
    while ready:
        _, a = heapq.heappop(ready)
        out.append(by_addr[a])
        for u in users.get(a, ()):
            waiting[u].discard(a)
            if not waiting[u]:
                heapq.heappush(ready, (_RANK[by_addr[u].action], u))
    # A cycle cannot come from validated manifests; keep whatever is left in a stable order.
    done = {c.address for c in out}
    return out + sorted((c for c in changes if c.address not in done), key=lambda c: c.address)


def compute(
    desired: Iterable[DesiredAttachment],
    installed: Iterable[Installed],
    records: dict[str, Record],
    *,
    dispatching: bool = False,
    unload_reason: str = "it is no longer in the manifests",
) -> tuple[ResourceChange, ...]:
    """The changes, in execution order: unloads first (they free attach points other manifests
    may take over; users of a map owner before the owner), then the rest with owners first.

    ``dispatching``: XDP and TC programs go through dispatchers, so each change names its
    hook (:func:`reconciler.plan.hookgroups.hook_of_change`)."""

    def hook(d: DesiredAttachment | None, rec: Record | None) -> Hook | None:
        return hook_of_change(d, rec) if dispatching else None

    want = {d.address: d for d in desired}
    have: dict[Address, Installed] = {}
    for inst in installed:
        try:
            have[Address.from_pin_dir(inst.pin_dir)] = inst
        except ValueError:
            continue  # not a layout we wrote: never ours to touch

    deletes: list[ResourceChange] = []
    for addr in sorted(have.keys() - want.keys()):
        rec = records.get(str(addr))
        deletes.append(
            ResourceChange(
                addr,
                Action.DELETE,
                before=rec.attributes if rec else {},
                after=None,
                reason=unload_reason,
                origin=rec.origin if rec else None,
                installed=have[addr],
                uses_maps_of=tuple(rec.extra.get("depends_on", [])) if rec else (),
                hook=hook(None, rec),
            )
        )
    rest = _cascade(
        {
            a: _classify(d, have.get(a), records.get(str(a)), hook(d, records.get(str(a))))
            for a, d in sorted(want.items())
        }
    )

    # Deletes run users first: an owner waits for every recorded user of its maps.
    users_of: dict[Address, set[Address]] = {}
    for key, rec in records.items():
        for owner in rec.extra.get("depends_on", []):
            users_of.setdefault(Address.parse(owner), set()).add(Address.parse(key))
    delete_order = _ordered(deletes, users_of)
    deps = {a: set(d.depends_on) for a, d in want.items()}
    return tuple(delete_order + _ordered(list(rest.values()), deps))


def split_orphans(
    desired: Iterable[DesiredAttachment], installed: Iterable[Installed], records: dict[str, Record]
) -> tuple[list[Installed], tuple[Orphan, ...]]:
    """Split off what is installed, no longer desired, and recorded with ``prune: disabled``:
    such attachments are kept (not planned at all) and listed."""
    want = {str(d.address) for d in desired}
    kept: list[Installed] = []
    orphans: list[Orphan] = []
    for inst in installed:
        try:
            key = str(Address.from_pin_dir(inst.pin_dir))
        except ValueError:
            kept.append(inst)
            continue
        rec = records.get(key)
        if key not in want and rec and rec.attributes.get(PRUNE_ATTRIBUTE) == "disabled":
            orphans.append(Orphan(key, rec.origin))
        else:
            kept.append(inst)
    return kept, tuple(sorted(orphans))


def build_plan(
    desired: Iterable[DesiredAttachment],
    installed: Iterable[Installed],
    records: dict[str, Record],
    *,
    keep_orphans: bool = True,
    dispatching: bool = False,
    errors: Iterable[str] = (),
    warnings: Iterable[str] = (),
    drift: Iterable[Drift] = (),
    source: str = "",
    revision: str | None = None,
    bpffs_root: str = "",
    unselected: Iterable[Unselected] = (),
) -> Plan:
    """The plan of the diff alone, with what else is known given: the engine gathers more
    (host checks and verdicts that need the changes first) and builds its Plan itself."""
    desired, installed = list(desired), list(installed)
    orphans: tuple[Orphan, ...] = ()
    if keep_orphans:
        installed, orphans = split_orphans(desired, installed, records)
    return Plan(
        changes=compute(desired, installed, records, dispatching=dispatching),
        orphans=orphans,
        errors=tuple(errors),
        warnings=tuple(warnings),
        drift=tuple(drift),
        source=source,
        revision=revision,
        bpffs_root=bpffs_root,
        dispatching=dispatching,
        unselected=tuple(unselected),
    )
