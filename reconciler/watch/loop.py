"""``bpfman watch``: keep the host converged with SOURCE until stopped.

One reconcile is the transaction of ``bpfman apply`` (the same lock, state, planner and
executor, via the functions of :mod:`reconciler.invocation`), approved by policy instead of a
prompt. It runs on a trigger — a settled burst of file changes, interface or container events
(:mod:`.linkevents`, :mod:`.containerevents`), the interval timer (which also re-reads the
kernel for drift), SIGHUP — one at a time; triggers that arrive meanwhile are
coalesced into the next one. A failure keeps the last good state and retries with exponential
backoff. Exiting never unloads anything.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler import __version__, hostpaths, invocation
from reconciler.apply import ApplyFailed, apply_plan, summary
from reconciler.apply.execute import ApplyInterrupted
from reconciler.apply.interrupt import Interrupt
from reconciler.engine import plan_for
from reconciler.errors import UserError
from reconciler.invocation import paths
from reconciler.kernel.types import TcHook, TcxPoint, XdpPoint
from reconciler.plan.target import Narrowing
from reconciler.plan.value import Action
from reconciler.plancache import Measured, PlanCache, RecordingHost
from reconciler.sources import Kind, SourceError, classify, open_source
from reconciler.spec import (
    HostError,
    LoadReport,
    ManifestError,
    ParseMemo,
    expand,
    load_manifests,
)
from reconciler.spec.paths import is_within, real
from reconciler.state import ensure_dir
from reconciler.watch import metrics as metrics_mod
from reconciler.watch import status
from reconciler.watch.containerevents import ContainerWatch, selector_namespaces
from reconciler.watch.dirwatch import DirWatch
from reconciler.watch.gitmirror import GitMirror, mirror_dir
from reconciler.watch.linkevents import LinkWatch
from reconciler.watch.sdnotify import Notifier
from reconciler.watch.suspend import SUSPEND_FILE, suspended
from reconciler.watch.webhook import WebhookError, WebhookServer

JITTER = 0.1  # the interval varies by ±10%, so that a fleet does not reconcile in lockstep
WATCH_LOCK_TIMEOUT = 300.0
MAX_PROBLEMS_LOGGED = 5  # a CLI apply holding the lock is waited for, then retried


@dataclass
class Options:
    interval: float = 60.0
    retry_interval: float = 5.0
    drift: str = "repair"  # or "report"
    allow_empty: bool = False
    log_format: str = "text"
    metrics_listen: str | None = None
    webhook_listen: str | None = None
    webhook_secret_file: str | None = None
    ssh_key_file: str | None = None
    git_credentials_file: str | None = None


@dataclass
class Result:
    """What one reconcile did."""

    result: str  # applied | no-changes | planned (suspended) | failed | refused | interrupted
    reason: str  # what triggered it
    revision: str | None = None
    added: int = 0
    changed: int = 0
    destroyed: int = 0
    drift: list[str] = field(default_factory=list)
    drift_repaired: int = 0
    error: str | None = None
    duration: float = 0.0
    # Where a failure came from: source (fetching), validation, or plan/apply; for the status.
    stage: str = "source"
    diagnostics: list[Any] = field(default_factory=list)
    programs_by_kind: dict[str, int] | None = None
    # Attachments on interfaces or network namespaces that do not exist (yet): not planned now;
    # a link event brings them in when the interface appears.
    waiting: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result in ("applied", "no-changes", "planned")


class Log:
    """One line per event on stderr, as text or JSON (``--log-format``)."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt

    def __call__(self, message: str, **fields: Any) -> None:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if self.fmt == "json":
            line = json.dumps({"time": now, "msg": message, **fields}, default=str)
        else:
            extra = " ".join(f"{k}={_text(v)}" for k, v in fields.items() if v is not None)
            line = f"{now} {message}" + (f" {extra}" if extra else "")
        # One write per line: the container and link watches log from their own threads.
        print(line + "\n", end="", file=sys.stderr, flush=True)


class JsonLines:
    """Under ``--log-format json``, stderr for the whole watcher: what other layers print there
    (the lock's "Waiting for…", recovery sentences, state warnings) becomes a JSON line too, so
    that a log shipper never meets a line it cannot parse."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            if line.startswith("{") or not line.strip():
                self.stream.write(line + "\n")
            else:
                now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                self.stream.write(json.dumps({"time": now, "msg": line.strip()}) + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c in text for c in ' "=')) else text


class Watcher:
    def __init__(self, args: argparse.Namespace, options: Options) -> None:
        self.args = args
        self.options = options
        self.log = Log(options.log_format)
        self.triggers: queue.Queue[str] = queue.Queue()
        self.stopping = False
        self.failures = 0
        self.metrics = metrics_mod.WatchMetrics()
        self.state_dir = Path(args.state_dir)
        self.status = status.not_watching()
        self.notifier = Notifier()
        self.namespaces: set[str] = set()
        self.links: LinkWatch | None = None
        self.container_events: ContainerWatch | None = None
        # The namespaces the manifests' container selectors name (None in it: every one), as
        # the last reconcile that read them found; None until one did.
        self.selectors: frozenset[str | None] | None = None
        self.source_watch: Any = None
        self.mirror: Any = None  # a git source's persistent mirror (gitmirror.GitMirror)
        self.attempted: str | None = None  # the commit the reconcile in progress read
        # The manifests of the last commit read from the mirror: (commit, root, manifests, what
        # else the load saw).
        self.manifests: tuple[str, Path, Any, LoadReport] | None = None
        # A directory or file source's manifests, with the fingerprint of the tree they were
        # read from: reused while nothing in it changed (an interval's drift check, a link
        # event), so that such a reconcile costs a stat walk, not a parse.
        # The last item: the digests of the files as that read saw them (for the plan cache).
        self.tree: tuple[tuple[Path, str], Any, LoadReport, dict[str, bytes]] | None = None
        # When the tree did change (an edit), the files whose bytes did not are not parsed again.
        self.parsed = ParseMemo()
        self.cache: PlanCache | None = None
        self._recording: RecordingHost | None = None
        self._snap_root: tuple[Path, Path] | None = None
        self.outside: list[str] = []
        self.source_ino: tuple[int, int] | None = None

    # --- triggers -----------------------------------------------------------------------------

    def trigger(self, reason: str) -> None:
        self.triggers.put(reason)

    def _next_delay(self, last: Result | None) -> float:
        if last is not None and not last.ok and last.result != "refused":
            # 5 s, 10 s, 20 s, … but never longer than the interval itself.
            backoff = self.options.retry_interval * (2 ** min(self.failures - 1, 16))
            return min(backoff, max(self.options.interval, self.options.retry_interval))
        spread = self.options.interval * JITTER
        return max(0.0, self.options.interval + random.uniform(-spread, spread))

    def _wait(self, delay: float) -> str:
        """The next trigger's reason (the timer's after ``delay``), with every trigger queued
        meanwhile folded into it."""
        deadline = time.monotonic() + delay
        beat = self.notifier.watchdog_interval
        while True:
            self.notifier.kick()  # the loop is alive: systemd's watchdog may go on
            left = deadline - time.monotonic()
            try:
                reason = self.triggers.get(timeout=max(0.0, min(left, beat or left)))
                break
            except queue.Empty:
                if time.monotonic() >= deadline:
                    reason = "retry" if self.failures else "interval"
                    break
        while True:
            try:
                self.triggers.get_nowait()
            except queue.Empty:
                return reason

    # --- one reconcile --------------------------------------------------------------------------

    def reconcile(self, reason: str) -> Result:
        started = time.monotonic()
        result = Result(result="failed", reason=reason)
        self.attempted = None
        try:
            with invocation.locked(self.args):
                ctx = invocation.context(self.args)
                if self._remembered(ctx, result):
                    return result
                with self._desired() as desired:
                    result.stage = "plan"
                    result.revision = desired.revision
                    from_source = len(desired.attachments)
                    desired.attachments, waiting = _split_waiting(desired.attachments, ctx.kernel)
                    result.waiting = [why for _d, why in waiting]
                    waiting_ns = [getattr(d.point, "netns", None) for d, _why in waiting]
                    measured = self._measure(ctx, desired, waiting_ns)
                    invocation.recover(ctx)
                    # --drift report: drifted attachments are shown, not repaired.
                    plan = plan_for(
                        ctx, desired, Narrowing(repair_drift=self.options.drift != "report")
                    )
                    result.drift = [f"{d.address} {d.what}" for d in plan.drift]
                    if plan.errors:
                        raise UserError(
                            f"the plan has {len(plan.errors)} error(s): " + "; ".join(plan.errors)
                        )
                    drifted = {d.address for d in plan.drift}
                    records = ctx.store.load()
                    self.namespaces = _namespaces_of(
                        records, desired.attachments, [d for d, _why in waiting]
                    )
                    if not self.options.allow_empty and from_source == 0:
                        self._refuse_empty(plan, set(records))
                    if not plan.has_changes:
                        result.result = "no-changes"
                        result.programs_by_kind = _by_kind(ctx.store.load())
                        if self.cache is not None:
                            self.cache.remember(measured, plan, lambda: self._outputs(result))
                        return result
                    held = suspended(ctx.store.dir)
                    if held is not None:
                        # Plan only: what would be done is recorded, nothing is changed.
                        result.result = "planned"
                        result.added, result.changed, result.destroyed = plan.counts()
                        result.error = f"not applied: {held}; `bpfman resume` to apply"
                        return result
                    interrupt = Interrupt()
                    try:
                        with interrupt.handling():
                            outcomes = apply_plan(
                                plan,
                                ctx.kernel,
                                ctx.store,
                                emit=lambda line: self.log(line.strip()),
                                interrupt=interrupt,
                            )
                        failed = None
                    except ApplyInterrupted as e:
                        outcomes, failed = e.outcomes, str(e)
                        self.stopping = True
                    except ApplyFailed as e:
                        outcomes, failed = e.outcomes, str(e)
                    result.added, result.changed, result.destroyed = summary(outcomes)
                    done = {str(o.address) for o in outcomes if not o.error}
                    result.drift_repaired = len(drifted & done)
                    if interrupt.requested:
                        self.stopping = True
                    if failed:
                        result.result = "interrupted" if self.stopping else "failed"
                        result.error = failed
                    else:
                        result.result = "applied"
                    result.programs_by_kind = _by_kind(ctx.store.load())
        except _Refused as e:
            result.result, result.error = "refused", str(e)
        except UserError as e:
            result.error = str(e)
            result.diagnostics = list(e.diagnostics)
            result.revision = result.revision or self.attempted
            if result.stage == "source" and e.diagnostics:
                result.stage = "validation"  # read, but the manifests are invalid
        finally:
            result.duration = time.monotonic() - started
        return result

    # --- the remembered no-op reconcile (reconciler/plancache.py) ------------------------------

    def _remembered(self, ctx: Any, result: Result) -> bool:
        """Whether the last no-op reconcile still holds (then ``result`` says so): an idle
        watcher's reconcile costs a fingerprint, not a plan. Directory and file sources only;
        a git source is answered from its mirror's commit as before."""
        self.cache = None
        if self.mirror is not None:
            return False
        self.cache = PlanCache(
            ctx.store.dir,
            {
                "watch": True,
                "bpffs_root": str(ctx.kernel.root),
                "cwd": os.getcwd(),
                "source": self.args.source,
                "path": self.args.path,
                "labels": list(self.args.label),
                "labels_file": self.args.labels_file,
                "config": self.args.config,
                "drift": self.options.drift,
                "allow_empty": self.options.allow_empty,
            },
            name="watch.json",
        )
        try:
            snap = open_source(
                self.args.source, self.args.ref, self.args.path, self.args.git_timeout
            )
        except SourceError:
            return False  # the full reconcile says why
        asked = RecordingHost(invocation.host(self.args))
        with snap:
            hit = self.cache.lookup(snap.root, snap.base or snap.root, asked, ctx.kernel)
        if hit is None or suspended(ctx.store.dir) is not None:
            return False
        self.selectors = selector_namespaces(asked.calls)  # a hit asked every question again
        result.result = "no-changes"
        result.stage = "plan"
        result.revision = hit["revision"]
        result.waiting = list(hit["waiting"])
        self.namespaces = set(hit["namespaces"])
        result.programs_by_kind = _by_kind(ctx.store.load())
        return True

    def _measure(self, ctx: Any, desired: Any, waiting_ns: list[str | None]) -> Measured | None:
        if (
            self.cache is None
            or self._recording is None
            or self._snap_root is None
            or self.tree is None
        ):
            return None
        root, base = self._snap_root
        records = ctx.store.load().values()
        return self.cache.measure(
            root,
            base,
            self._recording,
            desired,
            ctx.kernel,
            records,
            waiting_ns,
            # Of the bytes the manifests in use were parsed from, not of a later failed read.
            digests=self.tree[3].get,
        )

    def _outputs(self, result: Result) -> dict[str, Any]:
        return {
            "revision": result.revision,
            "waiting": list(result.waiting),
            "namespaces": sorted(self.namespaces),
        }

    @contextmanager
    def _desired(self) -> Iterator[Any]:
        """The desired state of the source now. A git source is read from the persistent
        mirror: one fetch per reconcile (nothing re-downloaded when the remote did not move),
        and the manifests of an unchanged commit are not read again, only expanded against the
        host's current facts (interfaces may have come or gone). Other sources: as `apply`."""
        if self.mirror is None:
            try:
                snap = open_source(
                    self.args.source, self.args.ref, self.args.path, self.args.git_timeout
                )
            except SourceError as e:
                raise UserError(str(e)) from None
            with snap:
                base = snap.base or snap.root
                try:
                    recording = self._recording = RecordingHost(invocation.host(self.args))
                    self._snap_root = (snap.root, base)
                    host: Any = recording
                    host.bytecode_dirs()  # asked by a load; recorded even when it is reused
                    seen = _tree_fingerprint(base, self.outside)
                    if self.tree is None or self.tree[0] != (snap.root, seen):
                        # Read before use: a change while reading gives another file event.
                        report = LoadReport()
                        digests: dict[str, bytes] = {}
                        manifests = load_manifests(
                            snap.root,
                            host.bytecode_dirs(),
                            source_root=snap.base,
                            report=report,
                            memo=self.parsed,
                            digests=digests,
                        )
                        self.tree = ((snap.root, seen), manifests, report, digests)
                    desired = self._expand(self.tree[1], snap.root, recording)
                    self.tree[2].apply_to(desired)
                except ManifestError as e:
                    raise invocation.manifest_error(e) from None
                except HostError as e:
                    raise invocation.host_error(e) from None
                # Bytecode outside the source (the host's bytecode_dirs) is part of what must
                # not have changed for the manifests to be reused.
                self.outside = sorted(
                    {
                        d.program.object_path
                        for d in desired.attachments
                        if not Path(d.program.object_path).is_relative_to(base)
                    }
                )
                desired.source = snap.description
                desired.revision = snap.revision
                yield desired
            return

        try:
            synced = self.mirror.sync()
            self.attempted = synced.commit  # known even if its manifests turn out invalid
            if self.manifests is None or synced.commit != self.manifests[0]:
                root = self.mirror.checkout(synced.commit)
                if self.args.path:
                    root = _inside_checkout(root, self.args.path)
                host = invocation.host(self.args)
                report = LoadReport()
                manifests = load_manifests(
                    root, host.bytecode_dirs(), source_root=root, report=report, memo=self.parsed
                )
                self.manifests = (synced.commit, root, manifests, report)
            _commit, root, manifests, report = self.manifests
            desired = self._expand(manifests, root, RecordingHost(invocation.host(self.args)))
            report.apply_to(desired)
        except SourceError as e:
            raise UserError(str(e)) from None
        except ManifestError as e:
            raise invocation.manifest_error(e) from None
        except HostError as e:
            raise invocation.host_error(e) from None
        desired.source = self._shown_source() + (f"@{self.args.ref}" if self.args.ref else "")
        desired.revision = synced.commit
        yield desired

    def _expand(self, manifests: Any, root: Path, host: RecordingHost) -> Any:
        """``expand``, noting which container selectors the manifests have: when every manifest
        was read, even if one of them has a problem (a runtime that does not answer is one)."""
        try:
            desired = expand(manifests, root, host)
        except ManifestError:
            self.selectors = selector_namespaces(host.calls)
            raise
        self.selectors = selector_namespaces(host.calls)
        return desired

    def _refuse_empty(self, plan: Any, managed: set[str]) -> None:
        deleted = {str(c.address) for c in plan.changes if c.action is Action.DELETE}
        managed -= {address for address, _origin in plan.orphans}
        if managed and managed <= deleted:
            raise _Refused(
                f"this revision would unload every program bpfman manages here ({len(managed)}); "
                "an empty source is usually a mistake (a wrong --path, an emptied branch). "
                "Nothing was changed; run with --allow-empty if that is what you want"
            )

    # --- the loop ---------------------------------------------------------------------------------

    def run(self) -> int:
        try:  # a wrong path is a start-up error, not a reconcile failing forever
            root = hostpaths.check_bpffs_root(self.args.bpffs_root)
            state_dir = hostpaths.check_state_dir(self.args.state_dir)
        except hostpaths.HostPathError as e:
            raise UserError(str(e)) from None
        self.log(
            "bpfman watch starting",
            version=__version__,
            source=self._shown_source(),
            bpffs_root=str(root),
            state_dir=str(state_dir),
            interval=self.options.interval,
            drift=self.options.drift,
        )
        self.state_dir = state_dir
        self.mirror = self._git_mirror(state_dir)
        loaded = status.read_status(state_dir)
        if loaded.problem:
            self.log("the status file was unreadable; starting a new one", problem=loaded.problem)
        self.status = loaded.status
        self.status.record_start(self._shown_source())
        self.status.set_suspended(suspended(state_dir) is not None)
        self._save_status()
        server = self._start_metrics()
        hooks = self._start_webhook()
        self.notifier.start()
        signal.signal(signal.SIGHUP, lambda *_: self.trigger("SIGHUP"))
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        stop_triggers = self._start_triggers()
        ready = False
        try:
            reason = "start"
            while not self.stopping:
                self.status.record_attempt(None)
                self._save_status()
                result = self.reconcile(reason)
                self.failures = 0 if result.ok or result.result == "refused" else self.failures + 1
                delay = self._next_delay(result)
                self._record(result, time.time() + delay)
                self._report(result)
                summary = f"{result.result}: {result.added} added, {result.changed} changed, "
                summary += f"{result.destroyed} destroyed"
                if not ready:
                    # After the first reconcile, whatever its result: a bad revision at boot
                    # must not hold the unit in "activating" until systemd gives up.
                    self.notifier.ready(summary)
                    ready = True
                else:
                    self.notifier.status(summary)
                if self.links is not None:
                    self.links.refresh_namespaces()
                self._follow_containers()
                self._watch_source()
                if self.stopping:
                    break
                reason = self._wait(delay)
        finally:
            self.notifier.stopping("stopping; nothing is unloaded")
            stop_triggers()
            if server is not None:
                server.stop()
            if hooks is not None:
                hooks.stop()
            self.notifier.stop()
            self.status.record_stop()
            self._save_status()
        self.log("bpfman watch stopped; nothing was unloaded")
        return 0

    def _git_mirror(self, state_dir: Path) -> Any:
        """The persistent mirror of a git source under ``<state-dir>/git/`` (None for other
        sources). Its arguments are checked now: a wrong ref or credentials file is a start-up
        error, not a reconcile failing forever."""
        try:
            src = classify(self.args.source)
        except SourceError:
            return None  # the first reconcile says why
        if src.kind is not Kind.GIT:
            if self.options.ssh_key_file or self.options.git_credentials_file:
                raise UserError(
                    "--ssh-key-file and --git-credentials-file apply to git sources, not to "
                    f"{src.shown}"
                )
            return None
        try:
            return GitMirror(
                src.given,
                self.args.ref,
                mirror_dir(state_dir, src.given),
                timeout=self.args.git_timeout,
                ssh_key_file=_path(self.options.ssh_key_file),
                credentials_file=_path(self.options.git_credentials_file),
            )
        except SourceError as e:
            raise UserError(str(e)) from None

    def _start_webhook(self) -> Any:
        """The webhook receiver: a good request queues a reconcile (folded with any other
        pending trigger, so a flood costs one fetch at a time); the receiver never touches the
        kernel or git itself."""
        if not self.options.webhook_listen or not self.options.webhook_secret_file:
            return None

        try:
            server = WebhookServer(
                self.options.webhook_listen,
                self.options.webhook_secret_file,
                self.trigger,
                on_request=self.metrics.webhook_request,
            )
            server.start()
        except WebhookError as e:
            raise UserError(str(e)) from None
        host, port = server.address
        self.log("receiving webhooks", address=f"{host}:{port}")
        return server

    def _start_metrics(self) -> Any:
        if not self.options.metrics_listen:
            return None
        try:
            host, port = metrics_mod.parse_listen(self.options.metrics_listen)
        except ValueError as e:
            raise UserError(f"--metrics-listen: {e}") from None
        server = metrics_mod.MetricsServer(self.metrics, host, port)
        try:
            server.start()
        except OSError as e:
            raise UserError(
                f"--metrics-listen {self.options.metrics_listen}: cannot listen: {e.strerror or e}"
            ) from None
        self.log("serving metrics", url=server.url)
        return server

    def _save_status(self) -> None:
        try:
            status.write_status(self.state_dir, self.status)
        except OSError as e:  # the loop goes on: the kernel matters more than the report
            self.log("cannot write the status file", error=e.strerror or str(e))

    def _record(self, r: Result, next_at: float) -> None:
        """The result into the status file and the metrics."""
        st = self.status
        held = suspended(self.state_dir)
        if (held is not None) != st.suspended:
            st.set_suspended(held is not None)
        counts = status.Counts(r.added, r.changed, r.destroyed)
        if r.result in ("applied", "no-changes"):
            st.record_success(
                r.revision,
                result=r.result,
                counts=counts,
                programs_by_kind=r.programs_by_kind,
                duration_seconds=r.duration,
                drift_repaired=r.drift_repaired,
                drift_reported=len(r.drift) if self.options.drift == "report" else 0,
                next_reconcile_at=next_at,
            )
        elif r.result == "planned":
            st.record_planned(
                r.revision, counts, duration_seconds=r.duration, next_reconcile_at=next_at
            )
        else:
            if r.result == "refused":
                why = status.EMPTY_SOURCE_REFUSED
            elif r.stage == "validation":
                why = status.VALIDATION_FAILED
            elif r.stage == "source":
                why = status.SOURCE_FETCH_FAILED
                self.metrics.source_fetch_failed()
            else:
                why = status.RECONCILIATION_FAILED
            st.record_failure(
                r.revision,
                r.error or r.result,
                reason=why,
                result="refused" if r.result == "refused" else "failed",
                diagnostics=r.diagnostics,
                duration_seconds=r.duration,
                next_reconcile_at=next_at,
            )
        self._save_status()
        self.metrics.observe_reconcile(r.result, r.duration)
        if r.drift_repaired:
            self.metrics.add_drift_repairs(r.drift_repaired)
        self.metrics.sync_status(st)

    def _on_term(self, signum: int, _frame: object) -> None:
        self.stopping = True
        self.trigger(signal.Signals(signum).name)

    def _shown_source(self) -> str:
        try:
            return classify(self.args.source).shown
        except Exception:  # reported by the first reconcile, with its reason
            return str(self.args.source)

    def _start_triggers(self) -> Any:
        """Start what triggers reconciles besides the timer: netlink link events (host and
        managed namespaces), the suspension marker (so that `bpfman suspend`/`resume` act at
        once) and file events of a directory or file source. Returns how to stop them all."""
        _root, state_dir = paths(self.args)
        links = LinkWatch(self.trigger, lambda: [None, *sorted(self.namespaces)])
        links.start()
        self.links = links
        # Subscribed to the runtime only once a reconcile finds container selectors.
        events = ContainerWatch(self.trigger, self.log)
        events.start()
        self.container_events = events
        ensure_dir(state_dir)
        marker = DirWatch(state_dir, lambda _why: self.trigger("suspend or resume"), SUSPEND_FILE)
        marker.start()
        self._watch_source()

        def stop_all() -> None:
            links.stop()
            events.stop()
            marker.stop()
            if self.source_watch is not None:
                self.source_watch.stop()

        return stop_all

    def _follow_containers(self) -> None:
        """Follow the container runtime's events while the manifests select containers (as the
        last reconcile that read them found), so that a container starting or stopping
        triggers a reconcile; stop following when none does. Called after every reconcile."""
        if self.container_events is None or self.selectors is None:
            return  # nothing read yet (a source that failed): keep what was followed
        config = None
        if self.selectors:
            try:
                config = invocation.host(self.args).config().containers
            except (HostError, UserError):
                return  # a wrong host config: the reconcile says so
        every = None in self.selectors
        self.container_events.follow(
            config, None if every else sorted(ns for ns in self.selectors if ns is not None)
        )

    def _watch_source(self) -> None:
        """(Re)start the file watch of a directory or file source when what its path names is
        not the directory watched (first call; the directory deleted and made again, which
        leaves inotify watching a dead inode). Called after every reconcile."""
        try:
            src = classify(self.args.source)
        except Exception:
            return  # the reconcile says why
        if src.kind not in (Kind.DIRECTORY, Kind.MANIFEST) or src.path is None:
            return
        path = Path(src.path)
        if self.args.path and src.kind is Kind.DIRECTORY:
            path = path / self.args.path
        directory, only = (path, None) if path.is_dir() else (path.parent, path.name)
        try:
            st = os.stat(directory)
        except OSError:
            # Gone: the retries (with backoff) look again, and watch what comes in its place.
            if self.source_watch is not None:
                self.source_watch.stop()
                self.source_watch = None
            return
        same = self.source_ino == (st.st_dev, st.st_ino)  # inode numbers can be reused, so:
        if self.source_watch is not None and same and not self.source_watch.gone:
            return
        first = self.source_ino is None  # never watched before
        if self.source_watch is not None:
            self.source_watch.stop()
        self.source_watch = DirWatch(directory, self.trigger, only=only)
        self.source_watch.start()
        self.source_ino = (st.st_dev, st.st_ino)
        if not first:
            # Files written while nothing watched them sent no event: look once more.
            self.trigger("source directory replaced")

    def _report(self, r: Result) -> None:
        fields = asdict(r)
        fields["duration"] = round(r.duration, 3)
        fields["drift"] = len(r.drift) or None
        if r.error:
            # One line: the head and the first problems (file:line), so that a log search for
            # the reconcile finds why it failed.
            lines = [line.strip() for line in r.error.split("\n") if line.strip()]
            head = lines[0].rstrip(":") + (": " if len(lines) > 1 else "")
            shown = "; ".join(lines[1 : 1 + MAX_PROBLEMS_LOGGED])
            more = len(lines) - 1 - MAX_PROBLEMS_LOGGED
            fields["error"] = head + shown + (f"; ... and {more} more" if more > 0 else "")
        fields["waiting"] = len(r.waiting) or None
        for line in r.drift:
            self.log("drift", what=line, action=self.options.drift)
        for line in r.waiting:
            self.log("waiting", what=line)
        hidden = ("drift", "stage", "diagnostics", "programs_by_kind")
        self.log("reconcile", **{k: v for k, v in fields.items() if k not in hidden})


class _Refused(Exception):
    pass


def _tree_fingerprint(base: Path, outside: list[str]) -> str:
    """Every file under ``base`` (and the files ``outside`` it) by path, inode, size and
    modification time: any edit, rename or replacement changes it."""
    import hashlib

    h = hashlib.sha256()
    stack = [str(base)]
    while stack:
        top = stack.pop()
        try:
            entries = sorted(os.scandir(top), key=lambda e: e.name)
        except OSError as e:
            h.update(f"{top}\0error {e.errno}\n".encode())
            continue
        for entry in entries:
            try:
                st = entry.stat()  # followed: a symlinked file counts as its target
            except OSError:
                h.update(f"{entry.path}\0dangling\n".encode())
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            h.update(
                f"{entry.path}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\n".encode(
                    errors="surrogateescape"
                )
            )
    for path in outside:
        try:
            st = os.stat(path)
            h.update(f"{path}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{path}\0missing\n".encode())
    return h.hexdigest()


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None


def _inside_checkout(root: Path, path: str) -> Path:
    """``--path`` inside a checkout, refused if it leads out of it (as for a clone)."""
    inside = real(root / path)
    if not is_within(inside, real(root)) or not inside.exists():
        raise SourceError(f"--path {path!r} is not a directory or manifest file in the repository")
    return inside


def _split_waiting(attachments: list[Any], kernel: Any) -> tuple[list[Any], list[tuple[Any, str]]]:
    """The attachments to plan now, and a sentence for each one whose interface or network
    namespace is absent. For the CLI a missing interface is an error (someone asked for it now);
    for the watcher it is a wait: interfaces come and go (a veth of a container, a VLAN), and
    the other programs must not be held hostage. What such an attachment had loaded is unloaded
    (its interface took it away), and it comes back when the interface does."""
    import os

    now, waiting = [], []
    for d in attachments:
        p = d.point
        if isinstance(p, XdpPoint | TcxPoint | TcHook):
            where = f" in {p.netns}" if p.netns else ""
            if p.netns and not os.path.exists(p.netns):
                waiting.append((d, f"{d.address}: network namespace {p.netns} does not exist"))
                continue
            if not kernel.interface_exists(p.ifname, p.netns):
                waiting.append((d, f"{d.address}: interface {p.ifname}{where} does not exist"))
                continue
        now.append(d)
    return now, waiting


def _namespaces_of(records: dict[str, Any], *groups: Any) -> set[str]:
    """Network namespaces the watcher must watch for interfaces: those of the manifests (planned
    or waiting) and those recorded."""
    out = {r.attributes.get("netns") for r in records.values()}
    for group in groups:
        for d in group:
            point = getattr(d, "point", None)
            out.add(getattr(point, "netns", None))
    return {ns for ns in out if isinstance(ns, str) and ns}


def _by_kind(records: dict[str, Any]) -> dict[str, int]:
    """Programs managed here by manifest kind (records are keyed by address, KIND/NAME[...])."""
    return dict(Counter(key.split("/", 1)[0] for key in records))
