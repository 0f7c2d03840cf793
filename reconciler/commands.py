"""The commands behind ``bpfman``: each returns an exit code; user errors raise UserError."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import hostpaths
from reconciler.engine import Context, observe, plan_for
from reconciler.errors import Diagnostic, UserError
from reconciler.invocation import (
    context,
    host,
    host_error,
    locked,
    manifest_error,
    recover,
    state_dir,
)
from reconciler.plan import drift
from reconciler.plan.jsonout import plan_document
from reconciler.plan.markdown import render_markdown
from reconciler.plan.render import Style, render_plan, render_unselected
from reconciler.plan.target import Narrowing
from reconciler.plan.value import Plan
from reconciler.plancache import PlanCache, RecordingHost
from reconciler.sources import Kind, Snapshot, SourceError, classify, open_source
from reconciler.spec import LoadReport, load_desired, load_manifests
from reconciler.spec.host import HostError, HostFacts
from reconciler.spec.model import DesiredState, ManifestError
from reconciler.state import refresh
from reconciler.terminal import print_json

if TYPE_CHECKING:
    from reconciler.apply import Outcome

# Imported where used, for start-up time (a plan imports neither): apply, listing, plan files
# and the watcher's suspend file.


def run(args: argparse.Namespace, color: bool) -> int:
    handler = {
        "validate": cmd_validate,
        "plan": cmd_plan,
        "show": cmd_show,
        "apply": cmd_apply,
        "destroy": cmd_destroy,
        "watch": cmd_watch,
        "suspend": cmd_suspend,
        "status": cmd_status,
        "reconcile": cmd_reconcile,
        "resume": cmd_resume,
        "list": cmd_list,
        "get": cmd_get,
        "image": cmd_image,
        "graph": cmd_graph,
    }[args.command]
    return handler(args, color)


@contextmanager
def _snapshot(args: argparse.Namespace) -> Iterator[Snapshot]:
    """The source; the snapshot (a git clone, say) lives until the block ends, because apply
    reads bytecode from it."""
    try:
        snap = open_source(args.source, args.ref, args.path, args.git_timeout)
    except SourceError as e:
        raise UserError(str(e)) from None
    with snap:
        yield snap


def _load(
    snap: Snapshot, facts: HostFacts, digests: dict[str, bytes] | None = None
) -> DesiredState:
    try:
        state = load_desired(snap.root, facts, source_root=snap.base, digests=digests)
    except ManifestError as e:
        raise manifest_error(e) from None
    except HostError as e:  # the host config or labels file itself is wrong
        raise host_error(e) from None
    state.source = snap.description
    state.revision = snap.revision
    return state


@contextmanager
def _desired(args: argparse.Namespace) -> Iterator[DesiredState]:
    """Load the desired state, inside the source's snapshot."""
    with _snapshot(args) as snap:
        yield _load(snap, host(args))


def _plan_cache(args: argparse.Namespace, ctx: Context, narrowing: Narrowing) -> PlanCache | None:
    """The remembered no-op plan (reconciler/plancache.py), for a plan of the whole source; None
    with --out, --target, --exclude or --refresh-only."""
    if getattr(args, "out", None) or narrowing.active:
        return None
    return PlanCache(
        ctx.store.dir,
        {
            "bpffs_root": str(ctx.kernel.root),
            "cwd": os.getcwd(),
            "source": args.source,
            "ref": args.ref,
            "path": args.path,
            "labels": list(args.label),
            "labels_file": args.labels_file,
            "config": args.config,
        },
    )


def _planned(
    args: argparse.Namespace, ctx: Context, snap: Snapshot, narrowing: Narrowing
) -> tuple[Plan | None, dict[str, Any] | None]:
    """(the plan, None), or (None, the remembered outputs) when the last no-op plan of these
    same inputs still holds."""
    cache = _plan_cache(args, ctx, narrowing)
    facts = host(args)
    if cache is not None:
        hit = cache.lookup(snap.root, snap.base or snap.root, facts, ctx.kernel)
        if hit is not None:
            return None, hit
    recording = RecordingHost(facts)
    # The digests of the bytes the plan is made from: a file rewritten after the load must not
    # be remembered as planned (and a file read once costs less than twice).
    digests: dict[str, bytes] = {}
    desired = _load(snap, recording, digests)
    measured = None
    if cache is not None:  # measured before the kernel is observed: see plancache
        base = snap.base or snap.root
        records = ctx.store.load().values()
        measured = cache.measure(
            snap.root, base, recording, desired, ctx.kernel, records, digests=digests.get
        )
    plan = plan_for(ctx, desired, narrowing)
    if cache is not None:
        cache.remember(measured, plan, lambda: _outputs(plan))
    return plan, None


def _outputs(plan: Plan) -> dict[str, Any]:
    """Everything `plan` and `apply` print of a plan with nothing to do, to be printed again."""
    return {
        "text": [render_plan(plan, Style(False)), render_plan(plan, Style(True))],
        "unselected": [
            render_unselected(plan, Style(False)),
            render_unselected(plan, Style(True)),
        ],
        "document": plan_document(plan),
        "markdown": render_markdown(plan),
    }


def cmd_validate(args: argparse.Namespace, color: bool) -> int:
    try:
        snap = open_source(args.source, args.ref, args.path, args.git_timeout)
    except SourceError as e:
        raise UserError(str(e)) from None
    with snap:
        try:
            # Bytecode is confined as plan would confine it here: to the source, and to the
            # host config's bytecode_dirs (none on a CI runner without one).
            allowed = host(args).bytecode_dirs()
        except HostError as e:
            raise host_error(e) from None
        report = LoadReport()
        try:
            manifests = load_manifests(snap.root, allowed, source_root=snap.base, report=report)
        except ManifestError as e:
            raise manifest_error(e) from None
    skipped = sum(report.skipped.values())
    if args.json:
        print_json(
            {
                "format_version": "1.0",
                "valid": True,
                "problems": [],
                "manifests": len(manifests),
                "skipped_resources": dict(report.skipped),
            }
        )
    else:
        more = f" (skipped {skipped} resource{'s' if skipped != 1 else ''} bpfman does not load)"
        print(
            f"Success! {len(manifests)} manifest{'s' if len(manifests) != 1 else ''} valid."
            + (more if skipped else "")
        )
    return 0


def _print_plan(plan: Plan, color: bool) -> None:
    sys.stdout.write(render_plan(plan, Style(color)))


def cmd_plan(args: argparse.Namespace, color: bool) -> int:
    ctx = context(args)
    narrowing = _narrowing(args)
    with _snapshot(args) as snap:
        plan, remembered = _planned(args, ctx, snap, narrowing)
        if plan is not None and args.out and not plan.errors:
            _save(ctx, plan, args.out)
    if remembered is not None:  # a no-op plan: nothing to save, no error, exit 0
        if args.json:
            print_json(remembered["document"])
        elif args.markdown:
            sys.stdout.write(remembered["markdown"])
        else:
            if args.show_unselected:
                sys.stdout.write(remembered["unselected"][color])
            sys.stdout.write(remembered["text"][color])
        return 0
    assert plan is not None
    if args.json:
        print_json(plan_document(plan))
    elif args.markdown:
        sys.stdout.write(render_markdown(plan))
    else:
        if args.show_unselected:
            sys.stdout.write(render_unselected(plan, Style(color)))
        _print_plan(plan, color)
    if plan.errors:
        raise UserError(
            f"the plan has {len(plan.errors)} error(s) shown above; nothing can be applied",
            json_printed=args.json or args.markdown,  # the document says so already
        )
    if args.out and not args.json and not args.markdown:
        print(f"\nSaved the plan to {args.out}. To carry out exactly these actions, run:")
        print(f"    bpfman apply {args.out}")
    if args.detailed_exitcode and plan.has_changes:
        return 2
    return 0


def cmd_show(args: argparse.Namespace, color: bool) -> int:
    """Render a saved plan as `plan` would have printed it; reads nothing but the file (no
    kernel, no lock, no root needed)."""
    from reconciler.plan.planfile import PlanFileError, load

    try:  # by content, as apply decides (sources/kinds.py)
        kind = classify(args.planfile).kind
    except SourceError:
        kind = Kind.PLAN  # missing or unreadable: load says why, as apply would
    if kind is not Kind.PLAN:
        raise UserError(
            f"{args.planfile} is a {kind.value}, not a plan saved by `bpfman plan --out FILE`; "
            f"`bpfman plan {args.planfile}` shows what it would change"
        )
    with tempfile.TemporaryDirectory(prefix="bpfman-show-") as objects:
        try:  # the embedded bytecode is written out and checked against its digests
            plan, _fingerprint = load(Path(args.planfile), Path(objects))
        except PlanFileError as e:
            raise UserError(str(e)) from None
    if args.json:
        print_json(plan_document(plan))
    elif args.markdown:
        sys.stdout.write(render_markdown(plan))
    else:
        _print_plan(plan, color)
    return 0


def _narrowing(args: argparse.Namespace) -> Narrowing:
    """--refresh-only and --target/--exclude: what the plan keeps of the computed changes."""
    try:
        return Narrowing(
            targets=tuple(args.target),
            excludes=tuple(args.exclude),
            refresh_only=getattr(args, "refresh_only", False),
        )
    except ValueError as e:
        raise UserError(str(e)) from None


def cmd_list(args: argparse.Namespace, _color: bool) -> int:
    from reconciler import listing

    return listing.cmd_list(args, context(args))


def cmd_image(args: argparse.Namespace, color: bool) -> int:
    from reconciler import imagecmd

    return imagecmd.cmd_image(args, color)


def cmd_graph(args: argparse.Namespace, _color: bool) -> int:
    """The plan `bpfman plan` would show (or a saved plan, as it is) drawn as DOT or Mermaid;
    the graph is printed even when the plan has errors (they are drawn too), then exit 1."""
    from reconciler.plan.graph import to_dot, to_mermaid  # lazy: only graph draws

    plan = _graph_plan(args)
    sys.stdout.write(to_mermaid(plan) if args.format == "mermaid" else to_dot(plan))
    if plan.errors:
        raise UserError(
            f"the plan has {len(plan.errors)} error(s), drawn in the graph; nothing can be applied"
        )
    return 0


def _graph_plan(args: argparse.Namespace) -> Plan:
    """A saved plan, read as it is (no kernel, no root); otherwise the full plan of SOURCE,
    computed as `plan` computes it (not the remembered no-op plan: the graph needs the value)."""
    try:
        kind = classify(args.source).kind
    except SourceError as e:
        raise UserError(str(e)) from None
    if kind is Kind.PLAN:
        if args.target or args.exclude or args.ref or args.path:
            raise UserError(
                "a saved plan is drawn as it is: --target, --exclude, --ref and --path belong "
                "to `bpfman plan --out`"
            )
        from reconciler.plan.planfile import PlanFileError, load

        with tempfile.TemporaryDirectory(prefix="bpfman-graph-") as objects:
            try:
                return load(Path(args.source), Path(objects))[0]
            except PlanFileError as e:
                raise UserError(str(e)) from None
    ctx = context(args)
    narrowing = _narrowing(args)
    with _snapshot(args) as snap:
        return plan_for(ctx, _load(snap, host(args)), narrowing)


def cmd_get(args: argparse.Namespace, _color: bool) -> int:
    from reconciler import listing

    return listing.cmd_get(args, context(args))


def _save(ctx: Context, plan: Plan, out: str) -> None:
    from reconciler.plan.planfile import PlanFileError, fingerprint, save

    installed, records = observe(ctx)
    try:
        save(plan, Path(out), fingerprint(str(ctx.kernel.root), installed, records))
    except (PlanFileError, OSError) as e:
        raise UserError(f"cannot save the plan to {out}: {e}") from None


def _confirm(args: argparse.Namespace, what: str) -> bool:
    if args.auto_approve:
        return True
    if not sys.stdin.isatty():
        raise UserError(
            f"{what} needs approval, but there is no terminal to ask on; "
            "review `bpfman plan` and run again with --auto-approve"
        )
    print("Do you want to perform these actions?")
    print("  bpfman will perform the actions described above.")
    print("  Only 'yes' will be accepted to approve.")
    print()
    try:
        answer = input("  Enter a value: ")
    except EOFError:
        answer = ""
    print()
    return answer.strip() == "yes"


def _execute(args: argparse.Namespace, color: bool, ctx: Context, plan: Plan, verb: str) -> int:
    """Show, approve and carry out ``plan``; the caller holds the state lock (``locked``)."""
    if not args.json:
        _print_plan(plan, color)
    _refuse_errors(args, plan)
    if not plan.has_changes:
        _report_nothing_to_do(args, plan, verb)
        return 0
    if not args.json:
        print()
    if not _confirm(args, verb.lower()):
        print(f"{verb} cancelled.")
        return 1
    run = _carry_out(args, ctx, plan)
    if args.json:
        print_json(_outcome_document(plan, run))
    _raise_failure(args, run, verb)
    if not args.json:
        add, change, destroy = run.counts
        print()
        print(f"{verb} complete! Resources: {add} added, {change} changed, {destroy} destroyed.")
    return 0


@dataclass(frozen=True)
class _Run:
    """What carrying out a plan did: the outcomes so far, and why it stopped early (if so)."""

    outcomes: list[Outcome]
    failed: str | None
    interrupted: bool

    @property
    def counts(self) -> tuple[int, int, int]:
        from reconciler.apply import summary

        return summary(self.outcomes)


def _refuse_errors(args: argparse.Namespace, plan: Plan) -> None:
    if not plan.errors:
        return
    if args.json:
        print_json({**plan_document(plan), "applied": False})
    raise UserError(
        f"the plan has {len(plan.errors)} error(s); nothing was changed",
        json_printed=args.json,
    )


_NOTHING_DONE = {
    "applied": True,
    "outcomes": [],
    "result": {"added": 0, "changed": 0, "destroyed": 0},
}


def _report_nothing_to_do(args: argparse.Namespace, plan: Plan, verb: str) -> None:
    if args.json:
        print_json({**plan_document(plan), **_NOTHING_DONE})
    else:
        print(f"{verb} complete! Resources: 0 added, 0 changed, 0 destroyed.")


def _carry_out(args: argparse.Namespace, ctx: Context, plan: Plan) -> _Run:
    """Apply ``plan`` with progress on stdout (not with --json): a line per action and, on a
    terminal, the updating progress line of reconciler/progress.py, cleared before this returns;
    SIGINT/SIGTERM stop it between steps (apply/interrupt.py)."""
    from reconciler.apply import ApplyFailed, apply_plan
    from reconciler.apply.interrupt import Interrupt
    from reconciler.progress import ProgressLine

    emit = (lambda line: None) if args.json else _print_flush
    interrupt = Interrupt()
    line = ProgressLine.for_command(json=args.json)
    try:
        with interrupt.handling(), line:  # the line goes first, before the handlers
            outcomes = apply_plan(
                plan, ctx.kernel, ctx.store, emit=emit, interrupt=interrupt, on_step=line.step
            )
    except ApplyFailed as e:
        return _Run(e.outcomes, str(e), interrupt.requested)
    return _Run(outcomes, None, interrupt.requested)


def _outcome_document(plan: Plan, run: _Run) -> dict[str, object]:
    add, change, destroy = run.counts
    return {
        **plan_document(plan),
        "applied": run.failed is None,
        "error": run.failed,
        "outcomes": [
            {
                "address": str(o.address),
                "actions": o.action.terraform_actions,
                "prog_id": o.prog_id,
                "link_id": o.link_id,
                "elapsed_seconds": round(o.elapsed, 4),
                "error": o.error,
            }
            for o in run.outcomes
        ],
        "result": {"added": add, "changed": change, "destroyed": destroy},
        "diagnostics": [Diagnostic.parse(run.failed).to_json()] if run.failed else [],
    }


def _raise_failure(args: argparse.Namespace, run: _Run, verb: str) -> None:
    """A stopped apply is a user error that says what was done and what to do next."""
    if not run.failed:
        return
    add, change, destroy = run.counts
    if run.interrupted:
        raise UserError(
            f"{run.failed}\n{verb} stopped; {add} added, {change} changed, {destroy} "
            "destroyed before the signal. Run `bpfman plan` to see what remains.",
            json_printed=args.json,
        )
    if not run.outcomes:
        raise UserError(f"{run.failed}\nNothing was changed.", json_printed=args.json)
    raise UserError(
        f"{run.failed}\n{verb} stopped; {add} added, {change} changed, {destroy} destroyed before "
        "the error. Run `bpfman plan` to see what remains.",
        json_printed=args.json,
    )


def _print_flush(line: str) -> None:
    print(line, flush=True)  # progress must reach a pipe before a kill, not sit in a buffer


def cmd_apply(args: argparse.Namespace, color: bool) -> int:
    with locked(args):  # first: the lock also tells an unprivileged user to be root
        try:  # a saved plan, or manifests (sources/kinds.py decides, by content, not by name)
            kind = classify(args.source).kind
        except SourceError as e:
            raise UserError(str(e)) from None
        if kind is Kind.PLAN:
            return _apply_saved(args, color)
        ctx = context(args)  # state read (and repaired) under the lock
        if args.refresh_only:
            return _refresh(args, ctx)
        narrowing = _narrowing(args)
        with _snapshot(args) as snap:
            cache = _plan_cache(args, ctx, narrowing)
            facts = host(args)
            # A pending journal is part of what the cache compares: a hit needs no recovery.
            base = snap.base or snap.root
            hit = cache.lookup(snap.root, base, facts, ctx.kernel) if cache else None
            if hit is not None:
                if args.json:
                    print_json({**hit["document"], **_NOTHING_DONE})
                else:
                    sys.stdout.write(hit["text"][color])
                    print("Apply complete! Resources: 0 added, 0 changed, 0 destroyed.")
                return 0
            desired = _load(snap, facts)
            recover(ctx)  # once the manifests are known good: a user error changes nothing
            plan = plan_for(ctx, desired, narrowing)
            return _execute(args, color, ctx, plan, "Apply")


def _apply_saved(args: argparse.Namespace, color: bool) -> int:
    """Carry out a saved plan exactly, without asking: it was reviewed when it was made. The
    caller holds the state lock."""
    if args.target or args.exclude or args.refresh_only or args.ref or args.path:
        raise UserError(
            "a saved plan is applied as it is: --target, --exclude, --refresh-only, --ref and "
            "--path belong to `bpfman plan --out`"
        )
    from reconciler.plan.planfile import PlanFileError, fingerprint, load

    with tempfile.TemporaryDirectory(prefix="bpfman-plan-") as objects:
        try:
            plan, fp = load(Path(args.source), Path(objects))
        except PlanFileError as e:
            raise UserError(str(e)) from None
        # The caller holds the lock: the fingerprint is checked and the plan carried out under
        # one hold of it, so no other run can change the kernel in between.
        ctx = context(args)
        if plan.bpffs_root != str(ctx.kernel.root):
            raise UserError(
                f"Saved plan is stale: it was made for bpffs root {plan.bpffs_root}, not "
                f"{ctx.kernel.root}; run `bpfman plan --out` again with this root"
            )
        recover(ctx)
        installed, records = observe(ctx)
        if fingerprint(str(ctx.kernel.root), installed, records) != fp:
            raise UserError(
                "Saved plan is stale: the kernel state or the state file changed since "
                f"{args.source} was made; run `bpfman plan --out` again and review it"
            )
        args.auto_approve = True
        return _execute(args, color, ctx, plan, "Apply")


def _refresh(args: argparse.Namespace, ctx: Context) -> int:
    """Record in the state file what the kernel holds now; change no program. The caller holds
    the state lock."""
    installed, records = observe(ctx)
    found = drift.detect(installed, records)
    for d in found:
        print(f"  ~ {d.address} {d.what}")
    updated, removed = refresh(records, installed)
    if updated or removed:
        ctx.store.save(records)
    if args.json:
        print_json(
            {
                "format_version": "1.0",
                "resource_drift": [d.to_json() for d in found],
                "updated": updated,
                "removed": removed,
            }
        )
    else:
        print(f"Refresh complete! Records: {updated} updated, {removed} removed.")
    return 0


def cmd_destroy(args: argparse.Namespace, color: bool) -> int:
    with locked(args):
        ctx = context(args)
        recover(ctx)
        return _execute(args, color, ctx, plan_for(ctx, None, _narrowing(args)), "Destroy")


def cmd_watch(args: argparse.Namespace, _color: bool) -> int:
    # Lazy, for start-up time: the watcher's servers and prometheus_client (~50 ms) serve only it.
    from reconciler.watch.loop import WATCH_LOCK_TIMEOUT, JsonLines, Options, Watcher

    if args.log_format == "json":
        sys.stderr = JsonLines(sys.stderr)

    args.lock_timeout = WATCH_LOCK_TIMEOUT
    options = Options(
        interval=args.interval,
        retry_interval=args.retry_interval,
        drift=args.drift,
        allow_empty=args.allow_empty,
        log_format=args.log_format,
        metrics_listen=args.metrics_listen,
        webhook_listen=args.webhook_listen,
        webhook_secret_file=args.webhook_secret_file,
        ssh_key_file=args.ssh_key_file,
        git_credentials_file=args.git_credentials_file,
    )
    if options.webhook_listen and not options.webhook_secret_file:
        raise UserError(
            "--webhook-listen needs --webhook-secret-file: an unauthenticated webhook would let "
            "anyone who can reach it make this host fetch and reconcile"
        )
    return Watcher(args, options).run()


def cmd_suspend(args: argparse.Namespace, _color: bool) -> int:
    try:
        state_dir = hostpaths.check_state_dir(args.state_dir)
    except hostpaths.HostPathError as e:
        raise UserError(str(e)) from None
    from reconciler.watch.suspend import suspend

    s = suspend(state_dir, args.reason)
    print(f"Suspended: `bpfman watch` plans but applies nothing until `bpfman resume` ({s}).")
    return 0


def cmd_resume(args: argparse.Namespace, _color: bool) -> int:
    try:
        state_dir = hostpaths.check_state_dir(args.state_dir)
    except hostpaths.HostPathError as e:
        raise UserError(str(e)) from None
    from reconciler.watch.suspend import resume

    if resume(state_dir):
        print("Resumed: `bpfman watch` applies changes again.")
    else:
        print("Not suspended; nothing to resume.")
    return 0


def cmd_status(args: argparse.Namespace, _color: bool) -> int:
    # Lazy, for start-up time: the status file's model (~4 ms) serves only status and reconcile.
    from reconciler.watch import status

    loaded = status.read_status(state_dir(args))
    running = status.is_running(loaded.status)
    if args.json:
        print_json(status.status_document(loaded, running=running))
    else:
        sys.stdout.write(status.render_text(loaded, running=running))
    return 0


def cmd_reconcile(args: argparse.Namespace, _color: bool) -> int:
    """SIGHUP to the watcher named by the status file (checked to be that very process), then
    wait until the status shows a reconcile that started after the request and has ended."""
    from reconciler.watch import status  # lazy, as in cmd_status

    checked = state_dir(args)
    loaded = status.read_status(checked)
    st = loaded.status
    if not status.is_running(st) or st.watcher_pid is None:
        raise UserError(
            f"no `bpfman watch` is running for the state dir {checked}; start it, or run "
            "`bpfman apply`"
        )
    asked = status.stamp()
    before = st.last_attempted_at
    os.kill(st.watcher_pid, signal.SIGHUP)
    deadline = time.monotonic() + args.timeout
    while True:
        time.sleep(0.1)
        now = status.read_status(checked).status
        fresh = now.last_attempted_at is not None and (
            now.last_attempted_at != before or now.last_attempted_at >= asked
        )
        if fresh and now.last_result is not None:
            break
        if not status.is_running(now):
            raise UserError("the watcher stopped before it reconciled")
        if time.monotonic() > deadline:
            raise UserError(f"no result within {args.timeout:g}s; see `bpfman status`")
    counts = now.last_counts
    line = (
        f"Reconciled: {now.last_result} (revision {now.last_attempted_revision or '-'}): "
        f"{counts.added} added, {counts.changed} changed, {counts.destroyed} destroyed."
    )
    if now.last_error:
        raise UserError(f"reconcile {now.last_result}: {now.last_error}")
    print(line)
    return 0
