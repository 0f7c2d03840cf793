"""Narrowing a plan's changes before the plan is made: ``--target`` / ``--exclude`` (to some
addresses, as Terraform does), ``--refresh-only`` (no change at all) and, for the watcher's
``--drift report``, leaving drifted attachments alone.

A pattern is a full address (``XdpProgram/fw[eth0]``) or a manifest (``XdpProgram/fw``, all its
attachments). What a chosen change needs comes along: the map owners it uses, and every program
of a dispatcher hook it is on (a hook is swapped as a whole). The result may be incomplete, so
the plan carries a warning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

from reconciler.address import Address
from reconciler.plan.drift import Drift
from reconciler.plan.value import Action, ResourceChange
from reconciler.values import frozen

WARNING = (
    "Resource targeting is in effect: this plan covers only the chosen addresses (and what they "
    "need), so it may not carry out every change the manifests ask for. Use it for exceptional "
    "repairs, then run a full plan."
)


@frozen
class Narrowing:
    """What of the computed changes a plan keeps. The patterns are checked when this is made
    (ValueError with the expected shape), before anything is planned."""

    targets: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    refresh_only: bool = False  # no change at all: only drift is shown (and recorded by apply)
    repair_drift: bool = True  # False: changes of drifted attachments are left out

    def __post_init__(self) -> None:
        for pattern in [*self.targets, *self.excludes]:
            _check(pattern)

    @property
    def active(self) -> bool:
        """Whether anything is left out: such a plan is not the whole source's."""
        return bool(self.targets or self.excludes or self.refresh_only or not self.repair_drift)


class Narrowed(NamedTuple):
    changes: tuple[ResourceChange, ...]
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    targeted: bool  # --target/--exclude left changes out on purpose


def narrow(
    changes: tuple[ResourceChange, ...],
    errors: Iterable[str],
    drift: Iterable[Drift],
    narrowing: Narrowing,
    warnings: Iterable[str] = (),
) -> Narrowed:
    """The changes, errors and warnings a plan keeps under ``narrowing``."""
    errors, warnings = tuple(errors), tuple(warnings)
    if narrowing.refresh_only:
        changes = tuple(c for c in changes if c.action is Action.NOOP)
        errors = ()  # nothing will be attached: host checks do not apply
    if not narrowing.repair_drift:
        drifted = {d.address for d in drift}
        changes = tuple(
            c for c in changes if c.action is Action.NOOP or str(c.address) not in drifted
        )
    targeted = bool(narrowing.targets or narrowing.excludes)
    if targeted:
        changes, more = restrict(changes, narrowing.targets, narrowing.excludes)
        warnings += tuple(more)
        # A host check about addresses left out does not stand in the way of the rest (an
        # --exclude of what this kernel cannot run); one naming no address still does.
        kept = {str(c.address) for c in changes if c.action is not Action.NOOP}
        errors = tuple(e for e in errors if _about(e, kept))
    return Narrowed(changes, errors, warnings, targeted)


_ADDRESS = re.compile(r"\b[A-Za-z]+/[a-z0-9][-a-z0-9.]*\[[^\]\s]+\]")


def _about(error: str, kept: set[str]) -> bool:
    named = _ADDRESS.findall(error)
    return not named or any(a in kept for a in named)


def restrict(
    changes: tuple[ResourceChange, ...], targets: Iterable[str], excludes: Iterable[str]
) -> tuple[tuple[ResourceChange, ...], list[str]]:
    """The changes chosen, and the warnings to show."""
    targets, excludes = list(targets), list(excludes)
    if not targets and not excludes:
        return changes, []
    for pattern in [*targets, *excludes]:
        _check(pattern)

    def chosen(a: Address) -> bool:
        wanted = not targets or any(a.matches(t) for t in targets)
        return wanted and not any(a.matches(e) for e in excludes)

    by = {c.address: c for c in changes}
    keep = {a for a in by if chosen(a)}
    grown = True
    while grown:  # map owners, then whole hooks, until nothing more comes along
        before = len(keep)
        for a in list(keep):
            d = by[a].desired
            keep |= {o for o in (d.depends_on if d else ()) if o in by}
        hooks = {by[a].hook for a in keep if by[a].hook is not None}
        keep |= {c.address for c in changes if c.hook in hooks}
        grown = len(keep) > before
    kept = tuple(c for c in changes if c.address in keep or c.action is Action.NOOP)
    warnings = [WARNING]
    for t in targets:
        if not any(a.matches(t) for a in by):
            warnings.append(f"--target {t} matches nothing in this plan")
    return kept, warnings


def _check(pattern: str) -> None:
    if "[" in pattern:
        Address.parse(pattern)  # raises ValueError with the expected shape
    elif pattern.count("/") != 1:
        raise ValueError(
            f"invalid target {pattern!r}: expected KIND/NAME or KIND/NAME[INDEX], e.g. "
            "XdpProgram/xdp-counter or 'XdpProgram/xdp-counter[eth0]'"
        )
