"""Diff the desired attachments against what the kernel holds and what the state file recorded."""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.address import Address
from reconciler.kernel.types import Installed
from reconciler.plan.model import Action, Plan, ResourceChange
from reconciler.spec.model import DesiredAttachment
from reconciler.state import Record

# Attributes whose change cannot be carried out on the running program. Everything else is
# in-place: e.g. a single XDP program's priority only matters once a dispatcher orders several,
# and a moved bytecode file with the same digest is the same program.
_FORCES_REPLACEMENT = {
    "bytecode_digest",
    "function",
    "interface",
    "direction",
    "tracepoint",
    "target",
    "func_name",
    "offset",
    "retprobe",
    "pid",
}
# TCX links cannot move: a new priority means a new link at the new position.
_FORCES_REPLACEMENT_BY_KIND = {"TcxProgram": {"priority"}}


def forcing(kind: str) -> set[str]:
    return _FORCES_REPLACEMENT | _FORCES_REPLACEMENT_BY_KIND.get(kind, set())


def _changed(before: dict, after: dict) -> list[str]:
    keys = sorted(set(before) | set(after))
    return [k for k in keys if before.get(k) != after.get(k)]


def compute(
    desired: Iterable[DesiredAttachment],
    installed: Iterable[Installed],
    records: dict[str, Record],
) -> list[ResourceChange]:
    """The changes, in execution order: unloads first (they free attach points other manifests
    may take over), then replacements and updates, then loads."""
    want = {d.address: d for d in desired}
    have: dict[Address, Installed] = {}
    for inst in installed:
        try:
            have[Address.from_pin_dir(inst.pin_dir)] = inst
        except ValueError:
            continue  # not a layout we wrote: never ours to touch
    deletes: list[ResourceChange] = []
    replaces: list[ResourceChange] = []
    updates: list[ResourceChange] = []
    creates: list[ResourceChange] = []
    noops: list[ResourceChange] = []

    for addr in sorted(have.keys() - want.keys()):
        rec = records.get(str(addr))
        deletes.append(
            ResourceChange(
                addr,
                Action.DELETE,
                before=rec.attributes if rec else {},
                after=None,
                reason="it is no longer in the manifests",
                origin=rec.origin if rec else None,
                installed=have[addr],
            )
        )

    for addr in sorted(want):
        d = want[addr]
        found = have.get(addr)
        rec = records.get(str(addr))
        origin = str(d.origin)
        if found is None:
            reason = (
                "its pins are missing from the kernel (changed outside bpfman)" if rec else None
            )
            creates.append(
                ResourceChange(
                    addr, Action.CREATE, None, d.attributes, d, reason=reason, origin=origin
                )
            )
            continue
        inst = found
        if rec is None:
            replaces.append(
                ResourceChange(
                    addr,
                    Action.REPLACE,
                    {},
                    d.attributes,
                    d,
                    reason="it is pinned but has no record in the state file",
                    origin=origin,
                    installed=inst,
                )
            )
            continue
        changed = _changed(rec.attributes, d.attributes)
        forced = [k for k in changed if k in forcing(addr.kind)]
        if not inst.attached:
            replaces.append(
                ResourceChange(
                    addr,
                    Action.REPLACE,
                    rec.attributes,
                    d.attributes,
                    d,
                    replace_paths=forced,
                    reason="it is no longer attached in the kernel (changed outside bpfman)",
                    origin=origin,
                    installed=inst,
                )
            )
        elif forced:
            replaces.append(
                ResourceChange(
                    addr,
                    Action.REPLACE,
                    rec.attributes,
                    d.attributes,
                    d,
                    replace_paths=forced,
                    origin=origin,
                    installed=inst,
                )
            )
        elif changed:
            updates.append(
                ResourceChange(
                    addr,
                    Action.UPDATE,
                    rec.attributes,
                    d.attributes,
                    d,
                    origin=origin,
                    installed=inst,
                )
            )
        else:
            noops.append(
                ResourceChange(
                    addr,
                    Action.NOOP,
                    rec.attributes,
                    d.attributes,
                    d,
                    origin=origin,
                    installed=inst,
                )
            )
    return deletes + replaces + updates + creates + noops


def build_plan(
    desired: Iterable[DesiredAttachment],
    installed: Iterable[Installed],
    records: dict[str, Record],
    *,
    errors: list[str] | None = None,
    source: str = "",
    revision: str | None = None,
    bpffs_root: str = "",
) -> Plan:
    return Plan(
        changes=compute(desired, installed, records),
        errors=list(errors or []),
        source=source,
        revision=revision,
        bpffs_root=bpffs_root,
    )
