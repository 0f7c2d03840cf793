"""``--target`` / ``--exclude``: narrow a plan to some addresses, as Terraform does.

A pattern is a full address (``XdpProgram/fw[eth0]``) or a manifest (``XdpProgram/fw``, all its
attachments). What a chosen change needs comes along: the map owners it uses, and every program
of a dispatcher hook it is on (a hook is swapped as a whole). The result may be incomplete, so
the plan carries a warning.
"""

from __future__ import annotations

from reconciler.address import Address
from reconciler.plan.value import Action, Plan

WARNING = (
    "Resource targeting is in effect: this plan covers only the chosen addresses (and what they "
    "need), so it may not carry out every change the manifests ask for. Use it for exceptional "
    "repairs, then run a full plan."
)


def restrict(plan: Plan, targets: list[str], excludes: list[str]) -> list[str]:
    """Drop the changes not chosen; returns the warnings to show."""
    if not targets and not excludes:
        return []
    for pattern in [*targets, *excludes]:
        _check(pattern)

    def chosen(a: Address) -> bool:
        wanted = not targets or any(a.matches(t) for t in targets)
        return wanted and not any(a.matches(e) for e in excludes)

    by = {c.address: c for c in plan.changes}
    keep = {a for a in by if chosen(a)}
    grown = True
    while grown:  # map owners, then whole hooks, until nothing more comes along
        before = len(keep)
        for a in list(keep):
            d = by[a].desired
            keep |= {o for o in (d.depends_on if d else ()) if o in by}
        hooks = {by[a].hook for a in keep if by[a].hook is not None}
        keep |= {c.address for c in plan.changes if c.hook in hooks}
        grown = len(keep) > before
    plan.changes = [c for c in plan.changes if c.address in keep or c.action is Action.NOOP]
    plan.targeted = True
    warnings = [WARNING]
    for t in targets:
        if not any(a.matches(t) for a in by):
            warnings.append(f"--target {t} matches nothing in this plan")
    return warnings


def _check(pattern: str) -> None:
    if "[" in pattern:
        Address.parse(pattern)  # raises ValueError with the expected shape
    elif pattern.count("/") != 1:
        raise ValueError(
            f"invalid target {pattern!r}: expected KIND/NAME or KIND/NAME[INDEX], e.g. "
            "XdpProgram/xdp-counter or 'XdpProgram/xdp-counter[eth0]'"
        )
