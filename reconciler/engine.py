"""Wires the layers together: source -> desired state, kernel -> observed state, diff -> plan."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reconciler import hostpaths
from reconciler.hostpaths import pin_path_errors
from reconciler.kernel.types import Installed, Kernel, KernelError
from reconciler.plan import Plan, diff, drift, preflight
from reconciler.plan.hookgroups import hook_from_json, hook_label, hook_of_point
from reconciler.plan.hostcheck import check_host
from reconciler.plan.target import Narrowing, narrow
from reconciler.plan.value import Action, Orphan, ResourceChange, Unselected
from reconciler.plan.verdicts import VerdictCache
from reconciler.spec.model import DesiredAttachment, DesiredState
from reconciler.state import Record, StateStore


@dataclass
class Context:
    kernel: Kernel
    store: StateStore


def make_context(bpffs_root: str | Path, state_dir: str | Path) -> Context:
    """The context of every command that touches the host. The paths are checked first
    (:mod:`reconciler.hostpaths`: HostPathError says what is wrong and the fix); give them as
    the user wrote them, so that an empty one is told from ".")."""
    # Lazy, for start-up time: the real kernel loads libbpf (~30 ms), which
    # `bpfman validate` does without.
    from reconciler.kernel import RealKernel

    root = hostpaths.check_bpffs_root(bpffs_root)
    store = StateStore(hostpaths.check_state_dir(state_dir))
    return Context(kernel=RealKernel(root), store=store)


def observe(
    ctx: Context, desired: DesiredState | None = None
) -> tuple[list[Installed], dict[str, Record]]:
    records = ctx.store.load()
    # What attaches in a namespace no name leads to (a container's /proc/PID/ns/net) is found
    # only where the kernel is told to look: the namespaces recorded and asked for.
    wanted = [getattr(d.point, "netns", None) for d in desired.attachments] if desired else []
    recorded = [
        (r.extra.get("attach") or {}).get("netns") or r.attributes.get("netns")
        for r in records.values()
    ]
    ctx.kernel.observe_namespaces([*wanted, *recorded])
    return ctx.kernel.observe(), records


DESTROY_REASON = "bpfman destroy unloads everything it manages"


def plan_for(
    ctx: Context, desired: DesiredState | None, narrowing: Narrowing | None = None
) -> Plan:
    """The plan to reach ``desired``; None means "nothing desired" (destroy).

    Everything that can be known without changing the kernel is checked: host facts
    (hostcheck) and the verifier's verdict on every program the plan would load (preflight),
    kept with the feature probes' answers in the state dir so that repeating a plan loads
    nothing. ``narrowing`` (--target/--exclude, --refresh-only, drift left alone) is applied
    last. Everything is gathered first and the plan, a value, is made once from it."""
    narrowing = narrowing or Narrowing()
    installed, records = observe(ctx, desired)
    verdicts = VerdictCache.load(ctx.store.dir, ctx.kernel.identity())
    ctx.kernel.remember_probes(verdicts.probes())
    try:
        if desired is None:
            dispatching = any(r.extra.get("hook") for r in records.values())
            changes = diff.compute(
                [], installed, records, dispatching=dispatching, unload_reason=DESTROY_REASON
            )
            found = drift.detect(installed, records, _interfaces(ctx.kernel, records))
            kept = narrow(changes, (), found, narrowing)
            return Plan(
                changes=kept.changes,
                errors=kept.errors,
                warnings=kept.warnings,
                bpffs_root=str(ctx.kernel.root),
                destroy=True,
                dispatching=dispatching,
                targeted=kept.targeted,
                drift=tuple(found),
            )
        dispatching = dispatchers_supported(ctx.kernel, desired.attachments, records)
        errors, flagged = check_host(desired.attachments, ctx.kernel, installed, dispatching)
        errors += pin_path_errors(desired.attachments, ctx.kernel.root)
        rest, orphans = diff.split_orphans(desired.attachments, installed, records)
        changes = diff.compute(desired.attachments, rest, records, dispatching=dispatching)
        errors += _orphans_on_changed_hooks(changes, orphans, records)
        found = drift.detect(installed, records, _interfaces(ctx.kernel, records))
        verified = preflight.check(
            preflight.loads_of_changes(changes, flagged), ctx.kernel, verdicts
        )
        errors += verified.errors
        kept = narrow(changes, errors, found, narrowing, warnings=verified.warnings())
        return Plan(
            changes=kept.changes,
            errors=kept.errors,
            warnings=kept.warnings,
            source=desired.source,
            revision=desired.revision,
            bpffs_root=str(ctx.kernel.root),
            dispatching=dispatching,
            targeted=kept.targeted,
            drift=tuple(found),
            unselected=tuple(
                Unselected(f"{m.kind}/{m.name}", str(m.origin), why)
                for m, why in desired.unselected
            ),
            orphans=orphans,
            skipped=tuple(sorted(desired.skipped.items())),
        )
    finally:
        if ctx.kernel.load_permission() is None:  # answers of a process that could probe
            verdicts.put_probes(ctx.kernel.probe_answers())
        verdicts.save()


def _orphans_on_changed_hooks(
    changes: tuple[ResourceChange, ...], orphans: tuple[Orphan, ...], records: dict[str, Record]
) -> list[str]:
    """A dispatcher hook is rebuilt from the manifests' programs on it: an orphan there (kept by
    bpfman.io/prune: disabled, but in no manifest) would be dropped by the rebuild. Refuse to
    change such a hook rather than unload the orphan behind the user's back."""
    changed = {c.hook for c in changes if c.action is not Action.NOOP and c.hook is not None}
    out = []
    for address, origin in orphans:
        rec = records.get(address)
        hook = hook_from_json(rec.extra.get("hook")) if rec else None
        if hook is not None and hook in changed:
            out.append(
                f"{address}: orphaned (its manifest {origin} is gone; bpfman.io/prune: "
                f"disabled keeps it) and runs on {hook_label(hook)}, which this plan changes; "
                f"restore its manifest, or unload it first with "
                f"`bpfman destroy --target {address}`"
            )
    return out


def _interfaces(kernel: Kernel, records: dict[str, Record]) -> set[tuple[str | None, str]]:
    """Interfaces that exist now, in the namespaces of the records that name one (drift tells a
    deleted interface from a detached program with them). Records of other kinds need no netlink
    dump: a plan of tracepoints never opens a netlink socket."""
    out: set[tuple[str | None, str]] = set()
    namespaces = set()
    for r in records.values():
        recorded = r.extra.get("attach") or {}
        if recorded.get("ifname") or r.attributes.get("interface"):
            namespaces.add(recorded.get("netns") or r.attributes.get("netns"))
    for ns in namespaces:
        try:
            out |= {(ns, name) for name in kernel.interfaces(ns)}
        except (KernelError, OSError):
            continue  # a namespace that is gone: its interfaces are gone too
    return out


def dispatchers_supported(
    kernel: Kernel, attachments: list[DesiredAttachment], records: dict[str, Record]
) -> bool:
    """Dispatchers need freplace; probe only when some XDP or TC program is wanted, or was
    applied through a dispatcher (and so must be removed through it)."""
    wanted = any(hook_of_point(d.point) for d in attachments)
    if not wanted and not any(r.extra.get("hook") for r in records.values()):
        return False
    return bool(kernel.probe("freplace"))
