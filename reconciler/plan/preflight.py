"""Run every program a plan would load past the verifier, without attaching or pinning anything.

One code path for ``plan`` (a rejection is a plan error naming the address, the manifest and the
verifier's reason) and for apply's pre-flight (a rejection anywhere stops the apply before its
first step). A plan loads the programs of its creations and replacements, and for a dispatcher
hook the ones its swap would load: new and changed programs, verified as what the dispatcher
runs (extensions of a slot). Verdicts are kept by ``verdict_key`` in the state dir
(``verdicts.py``): a plan that loads nothing new loads nothing at all.

Without the privilege to load programs (EPERM, no CAP_BPF/CAP_SYS_ADMIN) the verifier cannot
run: the plan says so in a warning naming the programs not checked (a verdict kept from an
earlier run still counts), and apply, which needs the privilege anyway, refuses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from reconciler.address import Address
from reconciler.kernel.tracing.elfsyms import printable
from reconciler.kernel.types import (
    AttachPoint,
    Kernel,
    KernelError,
    LoadNotPermitted,
    ProgramSpec,
    TcHook,
    VerifierError,
)
from reconciler.plan.value import Action, Plan, ResourceChange
from reconciler.plan.verdicts import Verdict, VerdictCache
from reconciler.values import frozen

# Where the object's path was in a kept reason: objects are the same bytes at other paths (a git
# source is cloned afresh every time), so the path shown is the one of this run.
_OBJECT = "\0"
_SHOWN = 5  # addresses named in a warning before "and N more"


@frozen
class Load:
    """One program the plan would load."""

    address: Address
    origin: str | None
    spec: ProgramSpec
    point: AttachPoint | TcHook | None
    dispatched: bool  # through a dispatcher: verified as an extension of its slot
    owners: tuple[tuple[Address, ProgramSpec], ...] = ()  # whose shared maps it uses

    @property
    def where(self) -> str:
        return f"{self.address} ({self.origin})" if self.origin else str(self.address)


@dataclass
class Outcome:
    errors: list[str] = field(default_factory=list)  # one per rejected (or unloadable) program
    not_run: list[Load] = field(default_factory=list)  # the verifier could not run for these
    why_not_run: str = ""
    loaded: int = 0  # programs loaded for the verifier in this run (the others were kept)

    def warnings(self) -> list[str]:
        if not self.not_run:
            return []
        names = [str(load.address) for load in self.not_run]
        shown = ", ".join(names[:_SHOWN])
        if len(names) > _SHOWN:
            shown += f" and {len(names) - _SHOWN} more"
        return [
            f"the verifier was not run for {len(names)} program(s) this plan loads ({shown}): "
            f"{self.why_not_run}; this plan cannot tell whether the kernel accepts them, and "
            "`bpfman apply` runs them past the verifier before it changes anything"
        ]


def loads_of(plan: Plan, skip: Iterable[Address] = ()) -> list[Load]:
    """The programs ``plan`` loads, in its order (``skip``: addresses already known to be
    unloadable here, e.g. a kernel that cannot run their type)."""
    return loads_of_changes(plan.changes, skip)


def loads_of_changes(changes: Sequence[ResourceChange], skip: Iterable[Address] = ()) -> list[Load]:
    """The programs ``changes`` load, in their order: what :func:`loads_of` reads of a plan,
    before the plan is made."""
    skipped = set(skip)
    wanted = {c.address: c.desired.program for c in changes if c.desired is not None}
    return [
        Load(
            c.address,
            c.origin,
            c.desired.program,
            c.desired.point,
            c.hook is not None,
            tuple((o, wanted[o]) for o in c.desired.depends_on if o in wanted),
        )
        for c in changes
        if c.desired is not None
        and c.action in (Action.CREATE, Action.REPLACE)
        and c.address not in skipped
    ]


def check(loads: list[Load], kernel: Kernel, cache: VerdictCache, may_skip: bool = True) -> Outcome:
    """Verify each distinct program of ``loads`` once (a kept verdict counts). ``may_skip``
    (plan): when this process may not load, say so instead of failing."""
    out = Outcome()
    permission = kernel.load_permission()
    by_key: dict[str, list[Load]] = {}
    for load in loads:
        point = load.point if not isinstance(load.point, TcHook) else None
        by_key.setdefault(kernel.verdict_key(load.spec, point, load.dispatched), []).append(load)
    for key, same in by_key.items():
        first = same[0]
        misfit = _misfit(first, kernel)
        if misfit is not None:
            out.errors.append(f"{_who(same)}: {misfit}")
            continue
        verdict = cache.get(key)
        if verdict is None and permission is not None:
            out.not_run += same
            continue
        if verdict is None:
            try:
                out.loaded += 1
                point = first.point if not isinstance(first.point, TcHook) else None
                kernel.verify(first.spec, point, first.dispatched)
                verdict = Verdict(True)
            except VerifierError as e:
                verdict = Verdict(False, _keepable(str(e), first.spec.object_path))
            except LoadNotPermitted as e:
                permission = f"the kernel refused to load it ({_clean(str(e))})"
                out.not_run += same
                continue
            except KernelError as e:  # found before the load: not a verdict to keep
                out.errors.append(f"{_who(same)}: {_clean(str(e))}")
                continue
            cache.put(key, verdict)
        if not verdict.accepted:
            reason = verdict.reason.replace(_OBJECT, printable(first.spec.object_path))
            out.errors.append(f"{_who(same)}: {reason}")
    if out.not_run:
        out.why_not_run = permission or "loading is not permitted"
        if not may_skip:
            load = out.not_run[0]
            out.errors.append(
                f"{load.where}: cannot run the program past the verifier: {out.why_not_run}"
            )
    return out


def _misfit(load: Load, kernel: Kernel) -> str | None:
    """Why the load's maps would not fit the shared maps its map owner creates (found without
    loading anything, before the verifier)."""
    for address, owner in load.owners:
        try:
            why = kernel.shared_map_conflict(load.spec, owner)
        except KernelError as e:
            why = str(e)
        if why is not None:
            return _clean(f"{why} (map owner {address})")
    return None


def _who(same: list[Load]) -> str:
    """The first attachment of a program, and how many more load the very same program."""
    if len(same) == 1:
        return same[0].where
    others = ", ".join(str(load.address) for load in same[1:])
    return f"{same[0].where} (and {others}: the same program)"


def _keepable(message: str, object_path: str) -> str:
    return _OBJECT.join(_clean(part) for part in message.split(object_path))


def _clean(text: str) -> str:
    """Lines of the kernel's or libbpf's words, safe for a terminal (a verifier log quotes
    source lines, which may hold tabs and anything else)."""
    return "\n".join(printable(line.replace("\t", "    ")) for line in text.split("\n"))
