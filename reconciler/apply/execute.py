"""Carry out a plan: exactly its changes, in its order, recording each success as it lands.

Every step leaves the kernel and the state file consistent with each other, so a failure (or a
later crash) stops with the changes so far in place and the next plan shows what remains.

A step writes its intent (``begin``) to the journal before it touches the kernel and its record
(``put``/``del``) after the change is verified; a kill anywhere in between leaves an intent
without a record, and the next load drops that address's record so the plan re-derives it from
the pins (see ``reconciler.state``). Staging left in ``%next`` by a kill is finished (if its
program already runs) or discarded at the start of the next apply, under the lock
(``Kernel.discard_staging``). SIGINT/SIGTERM stop between steps (``interrupt.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from reconciler.address import Address
from reconciler.apply import hooks
from reconciler.apply.interrupt import Interrupt
from reconciler.apply.tcx import TcxOrder
from reconciler.kernel.types import (
    Hook,
    Installed,
    Kernel,
    KernelError,
    TcxPoint,
)
from reconciler.plan import preflight
from reconciler.plan.value import Action, Plan, ResourceChange
from reconciler.plan.verdicts import VerdictCache
from reconciler.spec.model import DesiredAttachment
from reconciler.state import Record, StateStore

_VERBS = {
    Action.CREATE: ("Loading...", "Loading complete"),
    Action.REPLACE: ("Replacing...", "Replacement complete"),
    Action.UPDATE: ("Updating...", "Modifications complete"),
    Action.DELETE: ("Unloading...", "Unloading complete"),
}


@dataclass
class Outcome:
    address: Address
    action: Action
    elapsed: float
    prog_id: int | None = None
    link_id: int | None = None
    error: str | None = None


class ApplyFailed(Exception):
    def __init__(self, message: str, outcomes: list[Outcome]) -> None:
        super().__init__(message)
        self.outcomes = outcomes


class ApplyInterrupted(ApplyFailed):
    """SIGINT/SIGTERM: the apply stopped between two steps; everything done is recorded."""


def _record(
    d: DesiredAttachment, inst: Installed | None, prev: Record | None, rev: str | None
) -> Record:
    return Record(
        address=str(d.address),
        attributes=dict(d.attributes),
        origin=str(d.origin),
        revision=rev,
        prog_id=inst.prog_id if inst else (prev.prog_id if prev else None),
        link_id=inst.link_id if inst else (prev.link_id if prev else None),
        applied_at=datetime.now(UTC).isoformat(timespec="seconds"),
        # What the kernel cannot tell us later: whose maps it uses (to unload users first).
        extra={
            "depends_on": [str(a) for a in d.depends_on],
            "maps_dir": d.program.maps_dir,
            # Where the kernel said it runs, to tell later a detach from a deleted interface.
            "attach": inst.attach_json() if inst else (prev.extra.get("attach") if prev else None),
        },
    )


def _verify(c: ResourceChange, inst: Installed) -> None:
    if not inst.attached:
        raise KernelError(
            f"{c.address}: program {inst.prog_id} was loaded but the kernel does not report it "
            f"attached; it will be retried by the next apply"
        )


def _preflight(plan: Plan, kernel: Kernel, store: StateStore) -> None:
    """Run every program that the plan loads past the verifier before changing anything, so a
    rejection anywhere in the plan leaves the whole host as it was (verdicts kept by an earlier
    plan count: see reconciler/plan/preflight.py, the same code path as ``plan``)."""
    verdicts = VerdictCache.load(store.dir, kernel.identity())
    try:
        found = preflight.check(preflight.loads_of(plan), kernel, verdicts, may_skip=False)
    finally:
        verdicts.save()
    if found.errors:
        raise ApplyFailed("\n".join(found.errors), [])


@dataclass
class _Run:
    """One apply in progress: what its steps share."""

    plan: Plan
    kernel: Kernel
    store: StateStore
    records: dict[str, Record]
    emit: Callable[[str], None]
    stop: Interrupt
    order: TcxOrder
    outcomes: list[Outcome] = field(default_factory=list)
    step: int = 0

    def pause_points(self, address: str) -> Callable[[str], None]:
        """The pause points of the current step (test only, see interrupt.py)."""
        return lambda point: self.stop.checkpoint(self.step, point, address)


def apply_plan(
    plan: Plan,
    kernel: Kernel,
    store: StateStore,
    emit: Callable[[str], None] = lambda _line: None,
    interrupt: Interrupt | None = None,
    on_step: Callable[[int, int, str], None] = lambda _done, _total, _label: None,
) -> list[Outcome]:
    """Carry out ``plan``; the caller holds the state lock. ``interrupt``: the stop flag that
    SIGINT/SIGTERM set, polled between steps (and the test-only pause points). ``on_step(done,
    total, label)``: before each step (its address, or its dispatcher hook) and once all are
    done (label ""), for a progress display (reconciler/progress.py)."""
    stop = interrupt or Interrupt()
    # Namespaces no scan finds (a container's /proc/PID/ns/net) are where attaches are verified.
    kernel.observe_namespaces(
        a.get("netns") for c in plan.changes for a in (c.before, c.after) if a is not None
    )
    records, stale = _prepare(plan, kernel, store, emit)
    _preflight(plan, kernel, store)
    run = _Run(plan, kernel, store, records, emit, stop, TcxOrder(plan))
    total = _step_count(plan)
    for step in _steps(plan):
        if stop.requested:
            store.compact(records)
            raise ApplyInterrupted(
                f"interrupted by {stop.name}: stopped after {run.step} of {total} steps; every "
                "change made is applied and recorded. Run `bpfman apply` again to finish.",
                run.outcomes,
            )
        on_step(
            run.step,
            total,
            str(step.address) if isinstance(step, ResourceChange) else hooks.hook_label(step),
        )
        run.step += 1
        if isinstance(step, ResourceChange):
            run.outcomes.append(_apply_change(run, step))
        else:
            run.outcomes += _apply_hook(run, step)
    on_step(run.step, total, "")
    if stale or plan.actionable:
        store.compact(records, saved=lambda: stop.checkpoint(run.step, "compacted", "state"))
        _release_unused_maps(plan, kernel)
    return run.outcomes


def _prepare(
    plan: Plan, kernel: Kernel, store: StateStore, emit: Callable[[str], None]
) -> tuple[dict[str, Record], list[str]]:
    """The records to start from (journal folded in, corrupt files repaired) once the root is
    ready and what a killed apply left is finished or undone; drops the stale records (returned)."""
    records = store.load(repair=True)
    kernel.ensure_root()
    for what in kernel.discard_staging():  # what a killed apply left; we hold the lock
        emit(what)
    # Records whose pins are gone and that no manifest wants any more carry no information.
    planned = {str(c.address) for c in plan.changes}
    # A targeted plan leaves out changes on purpose: their records are not stale.
    # Orphans (bpfman.io/prune: disabled) are in no change on purpose: their records stay.
    kept = planned | {address for address, _origin in plan.orphans}
    stale = [] if plan.targeted else [k for k in records if k not in kept]
    for key in stale:
        del records[key]
    return records, stale


def _steps(plan: Plan) -> Iterator[ResourceChange | Hook]:
    """The steps in the plan's order: each change on its own, except that all the changes of one
    dispatcher hook are one step (one atomic swap), at the place of the hook's first change."""
    swapped: set[Hook] = set()
    for c in plan.actionable:
        if c.hook is None:
            yield c
        elif c.hook not in swapped:
            swapped.add(c.hook)
            yield c.hook


def _step_count(plan: Plan) -> int:
    return len({c.hook for c in plan.actionable if c.hook is not None}) + sum(
        c.hook is None for c in plan.actionable
    )


def _apply_change(run: _Run, c: ResourceChange) -> Outcome:
    """One change outside a dispatcher hook: intent, kernel change (verified), record."""
    start_msg, done_msg = _VERBS[c.action]
    run.emit(f"{c.address}: {start_msg}")
    t0 = time.monotonic()
    key = str(c.address)
    inst: Installed | None = None
    at = run.pause_points(key)
    try:
        if c.action is not Action.UPDATE:  # an update changes the record only
            run.store.begin(key, c.action.value)
        at("begun")
        with run.kernel.reporting_steps(at):
            inst = _kernel_change(run, c)
        at("kernel")
        _record_change(run, c, inst)
        at("recorded")
    except KernelError as e:
        elapsed = time.monotonic() - t0
        run.outcomes.append(Outcome(c.address, c.action, elapsed, error=str(e)))
        run.store.compact(run.records)
        raise ApplyFailed(f"{c.address}: {e}", run.outcomes) from e
    elapsed = time.monotonic() - t0
    ids = ""
    if inst is not None:
        ids = f" [prog_id={inst.prog_id}" + (
            f" link_id={inst.link_id}]" if inst.link_id is not None else "]"
        )
    run.emit(f"{c.address}: {done_msg} after {_duration(elapsed)}{ids}")
    return Outcome(
        c.address,
        c.action,
        elapsed,
        prog_id=inst.prog_id if inst else None,
        link_id=inst.link_id if inst else None,
    )


def _kernel_change(run: _Run, c: ResourceChange) -> Installed | None:
    """The kernel side of one change (none for an update: it changes the record only); what
    it installed, verified to run."""
    pin_dir = c.address.pin_dir()
    d = c.desired
    if c.action is Action.DELETE:
        run.kernel.uninstall(pin_dir)
        return None
    if c.action is Action.UPDATE:
        return None
    assert d is not None
    placement = run.order.placement(d) if isinstance(d.point, TcxPoint) else None
    if c.action is Action.CREATE:
        inst = run.kernel.install(pin_dir, d.program, d.point, placement)
    elif c.installed is None or not c.installed.attached:
        # Nothing of the old one runs: a clean reinstall is the honest repair.
        run.kernel.uninstall(pin_dir)
        inst = run.kernel.install(pin_dir, d.program, d.point, placement)
    else:
        # The diff forces a replacement for a TCX priority change (the TCX kind's
        # record, reconciler/kinds/tcx.py, by program type): the new link goes to its new place.
        moved = "priority" in c.replace_paths
        inst = run.kernel.replace(pin_dir, d.program, d.point, placement if moved else None)
    _verify(c, inst)
    return inst


def _record_change(run: _Run, c: ResourceChange, inst: Installed | None) -> None:
    """Journal what one change made true, and track the TCX links that now run."""
    key = str(c.address)
    if c.action is Action.DELETE:
        run.records.pop(key, None)
        run.store.delete(key)
        run.order.live.discard(c.address)
        return
    assert c.desired is not None
    run.records[key] = _record(c.desired, inst, run.records.get(key), run.plan.revision)
    run.store.put(run.records[key])
    if c.action is not Action.UPDATE:
        run.order.live.add(c.address)


def _apply_hook(run: _Run, hook: Hook) -> list[Outcome]:
    """All the changes of one dispatcher hook, carried out by one atomic swap."""
    plan, store, records = run.plan, run.store, run.records
    changes = hooks.changes_of(plan, hook)
    label = hooks.hook_label(hook)
    for c in changes:
        run.emit(f"{c.address}: {_VERBS[c.action][0]}")
    t0 = time.monotonic()
    at = run.pause_points(label)
    try:
        for c in changes:
            store.begin(str(c.address), c.action.value)
        at("begun")
        with run.kernel.reporting_steps(at):
            by_pin = hooks.swap(run.kernel, plan, hook)
        at("kernel")
    except KernelError as e:
        elapsed = time.monotonic() - t0
        failed = [Outcome(c.address, c.action, elapsed, error=str(e)) for c in changes]
        store.compact(records)
        raise ApplyFailed(f"{label}: {e}", failed) from e
    elapsed = time.monotonic() - t0
    outcomes = []
    for c in changes:
        key = str(c.address)
        inst = by_pin.get(c.address.pin_dir())
        if hooks.is_unload(c):
            records.pop(key, None)
            store.delete(key)
        else:
            assert c.desired is not None and inst is not None
            _verify(c, inst)
            records[key] = _record(c.desired, inst, records.get(key), plan.revision)
            records[key].extra.update(hooks.hook_extra(hook))
            store.put(records[key])
        ids = f" [prog_id={inst.prog_id}]" if inst is not None else ""
        run.emit(f"{c.address}: {_VERBS[c.action][1]} after {_duration(elapsed)}{ids}")
        outcomes.append(
            Outcome(c.address, c.action, elapsed, prog_id=inst.prog_id if inst else None)
        )
    at("recorded")
    return outcomes


def _release_unused_maps(plan: Plan, kernel: Kernel) -> None:
    """Shared maps live as long as some attachment uses them: unpin the directories that no
    wanted attachment names any more (the last user was just unloaded, or a crash left them)."""
    wanted = {c.desired.program.maps_dir for c in plan.changes if c.desired is not None}
    for maps_dir in kernel.map_dirs():
        if maps_dir not in wanted:
            kernel.remove_maps(maps_dir)


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"


def summary(outcomes: list[Outcome]) -> tuple[int, int, int]:
    add = sum(o.action in (Action.CREATE, Action.REPLACE) for o in outcomes if not o.error)
    change = sum(o.action is Action.UPDATE for o in outcomes if not o.error)
    destroy = sum(o.action in (Action.DELETE, Action.REPLACE) for o in outcomes if not o.error)
    return add, change, destroy
