"""Where the watcher stands: one small JSON file in the state dir, rewritten after each reconcile.

``bpfman status`` reads this file rather than asking a process, so it answers the same way while
a watcher runs, after it stopped, and when none ever ran (a "not watching" status, not an error).
The watcher changes a :class:`WatchStatus` only through its ``record_*`` methods, which keep the
three conditions consistent with each other, in the spirit of Flux and Kubernetes:

- ``Ready``: the host matches the last revision bpfman was asked to apply (True), or why not;
- ``Reconciling``: a reconcile is in progress, or a retry is scheduled;
- ``Stalled``: retrying cannot help (a revision that does not validate, an empty source refused):
  only a new revision, or an operator, can.

A condition's ``lastTransitionTime`` changes only when its status flips, so "Ready since" means
what it says even though every interval re-runs the reconcile.

    status = WatchStatus()
    status.record_start("https://github.com/o/r", now=t0)
    status.record_attempt("abc123")
    status.record_success("abc123", counts=Counts(added=1), programs_by_kind={"xdp": 1})
    write_status(state_dir, status)
    print(render_text(read_status(state_dir)))
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler import __version__
from reconciler.errors import Diagnostic
from reconciler.files import NotReadable, read_regular
from reconciler.sources.redact import redact, shown
from reconciler.state import ensure_dir, write_atomic

STATUS_FILE = "watch-status.json"
FILE_FORMAT = 1  # of the file; bumped when a field changes meaning
DOCUMENT_FORMAT = "1.0"  # of ``bpfman status --json``, as for the other JSON documents
# The file holds a handful of fields and at most MAX_DIAGNOSTICS problems: anything larger was not
# written by bpfman.
MAX_STATUS_SIZE = 1024 * 1024
MAX_DIAGNOSTICS = 50
MAX_ERROR_LENGTH = 500

# last_result values
APPLIED = "applied"
NO_CHANGES = "no-changes"
PLANNED = "planned"  # suspended: planned, not applied
FAILED = "failed"
REFUSED = "refused"
SUCCESS_RESULTS = frozenset({APPLIED, NO_CHANGES})

# Condition types, in the order they are written and shown.
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
CONDITION_TYPES = (READY, RECONCILING, STALLED)

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"

# Condition reasons (CamelCase, as Flux writes them).
SUCCEEDED = "ReconciliationSucceeded"
RECONCILIATION_FAILED = "ReconciliationFailed"
VALIDATION_FAILED = "ValidationFailed"
EMPTY_SOURCE_REFUSED = "EmptySourceRefused"
SOURCE_FETCH_FAILED = "SourceFetchFailed"
PROGRESSING = "Progressing"
RETRYING = "ProgressingWithRetry"
SUSPENDED = "Suspended"
RESUMED = "Resumed"
WATCHER_STOPPED = "WatcherStopped"
NOT_WATCHING = "NotWatching"
STATUS_UNREADABLE = "StatusUnreadable"
# Failures that the same revision will always hit again: the loop keeps its backoff, but the
# status says plainly that waiting will not fix it.
STALLING_REASONS = frozenset({VALIDATION_FAILED, EMPTY_SOURCE_REFUSED})


def stamp(now: float | None = None) -> str:
    """``now`` (seconds since the epoch; the current time if None) as the project writes times:
    ISO 8601 in UTC, to the second."""
    return datetime.fromtimestamp(time.time() if now is None else now, UTC).isoformat(
        timespec="seconds"
    )


@dataclass
class Condition:
    type: str
    status: str = UNKNOWN
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None

    def to_json(self) -> dict[str, Any]:
        # Kubernetes' own spelling, so tools that read conditions read these.
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": self.last_transition_time,
        }


@dataclass
class Counts:
    """What the last reconcile changed (or, suspended, would change)."""

    added: int = 0
    changed: int = 0
    destroyed: int = 0

    def __str__(self) -> str:
        return f"{self.added} added, {self.changed} changed, {self.destroyed} destroyed"


def _initial_conditions() -> dict[str, Condition]:
    return {
        t: Condition(t, UNKNOWN, NOT_WATCHING, "no watcher has reported yet")
        for t in CONDITION_TYPES
    }


@dataclass
class WatchStatus:
    source: str = ""  # redacted: the file is readable by whoever reads the state dir
    last_applied_revision: str | None = None
    last_applied_at: str | None = None
    last_attempted_revision: str | None = None
    last_attempted_at: str | None = None
    last_result: str | None = None
    last_error: str | None = None  # one line; the details are in ``diagnostics``
    diagnostics: list[Diagnostic] = field(default_factory=list)
    next_reconcile_at: str | None = None
    drift_repaired: int = 0
    drift_reported: int = 0
    suspended: bool = False
    programs_by_kind: dict[str, int] = field(default_factory=dict)
    last_counts: Counts = field(default_factory=Counts)
    last_duration_seconds: float | None = None
    watcher_pid: int | None = None
    watcher_started_at: str | None = None
    # /proc/<pid>/stat's start time and the boot it belongs to: a pid alone may have been reused
    # by an unrelated process since the watcher died.
    watcher_start_ticks: int | None = None
    watcher_boot_id: str | None = None
    watcher_stopped_at: str | None = None
    conditions: dict[str, Condition] = field(default_factory=_initial_conditions)
    # Between record_attempt and the outcome; not written (a file is only written between
    # reconciles, or shows an attempt with no result yet).
    _in_progress: bool = field(default=False, repr=False, compare=False)

    # --- conditions ---------------------------------------------------------------------------

    def condition(self, type_: str) -> Condition:
        return self.conditions.setdefault(type_, Condition(type_))

    def set_condition(
        self, type_: str, status: str, reason: str, message: str, now: float | None = None
    ) -> None:
        """Set a condition; its transition time moves only when its status flips."""
        c = self.condition(type_)
        if c.status != status or c.last_transition_time is None:
            c.last_transition_time = stamp(now)
        c.status, c.reason, c.message = status, reason, message

    def is_true(self, type_: str) -> bool:
        return self.condition(type_).status == TRUE

    # --- what the watcher records -------------------------------------------------------------

    def record_start(
        self, source: str, *, pid: int | None = None, now: float | None = None
    ) -> None:
        """A watcher (this process unless ``pid`` says otherwise) starts watching ``source``.
        What the file says about earlier reconciles is kept: it is still the host's story."""
        pid = os.getpid() if pid is None else pid
        self.source = redact(source)
        self.watcher_pid = pid
        self.watcher_started_at = stamp(now)
        self.watcher_start_ticks = process_start_ticks(pid)
        self.watcher_boot_id = boot_id()
        self.watcher_stopped_at = None
        if self.suspended:
            self.set_condition(RECONCILING, FALSE, SUSPENDED, _SUSPENDED_MESSAGE, now)
        else:
            self.set_condition(RECONCILING, TRUE, PROGRESSING, "watcher started", now)

    def record_stop(self, now: float | None = None) -> None:
        """The watcher exits (nothing is unloaded): no reconcile is coming."""
        self.watcher_pid = None
        self.watcher_start_ticks = None
        self.watcher_stopped_at = stamp(now)
        self.next_reconcile_at = None
        self.set_condition(RECONCILING, FALSE, WATCHER_STOPPED, "the watcher has stopped", now)

    def record_attempt(self, revision: str | None, now: float | None = None) -> None:
        """A reconcile starts (``revision`` None while the source is still being fetched).

        Ready keeps its status: a periodic drift check is not a reason to stop being Ready,
        and flipping it every interval would make its transition time meaningless."""
        self.last_attempted_revision = revision
        self.last_attempted_at = stamp(now)
        self.last_result = None  # in progress
        self._in_progress = True
        what = f"revision {revision}" if revision else "the source"
        self.set_condition(RECONCILING, TRUE, PROGRESSING, f"reconciling {what}", now)
        if self.condition(READY).status == UNKNOWN:
            self.set_condition(READY, UNKNOWN, PROGRESSING, "first reconcile in progress", now)

    def record_success(
        self,
        revision: str | None,
        *,
        result: str = APPLIED,
        counts: Counts | None = None,
        programs_by_kind: Mapping[str, int] | None = None,
        duration_seconds: float | None = None,
        drift_repaired: int = 0,
        drift_reported: int = 0,
        next_reconcile_at: float | None = None,
        now: float | None = None,
    ) -> None:
        """A reconcile ended with the host matching ``revision`` (``result`` ``applied`` or
        ``no-changes``); ``drift_*`` are this reconcile's counts, added to the totals."""
        if result not in SUCCESS_RESULTS:
            raise ValueError(f"not a successful result: {result!r}")
        counts = counts or Counts()
        self._record_end(revision, result, counts, duration_seconds, next_reconcile_at, now)
        # "Last applied at" is when the kernel last changed or a new revision was adopted, not
        # every interval's confirmation that nothing needed to.
        if result == APPLIED or revision != self.last_applied_revision:
            self.last_applied_at = stamp(now)
        self.last_applied_revision = revision
        self.last_error = None
        self.diagnostics = []
        self.drift_repaired += drift_repaired
        self.drift_reported += drift_reported
        if programs_by_kind is not None:
            self.programs_by_kind = dict(sorted(programs_by_kind.items()))
        what = f"revision {revision}" if revision else "the source"
        message = f"applied {what}: {counts}" if result == APPLIED else f"{what}: no changes"
        self.set_condition(READY, TRUE, SUCCEEDED, message, now)
        self.set_condition(STALLED, FALSE, SUCCEEDED, "", now)
        if self.suspended:  # resumed and applied: set_suspended(False) was called before this
            self.set_condition(RECONCILING, FALSE, SUSPENDED, _SUSPENDED_MESSAGE, now)
        else:
            self.set_condition(RECONCILING, FALSE, SUCCEEDED, message, now)

    def record_failure(
        self,
        revision: str | None,
        error: str,
        *,
        reason: str = RECONCILIATION_FAILED,
        result: str = FAILED,
        diagnostics: Sequence[Diagnostic] = (),
        duration_seconds: float | None = None,
        next_reconcile_at: float | None = None,
        stalled: bool | None = None,
        now: float | None = None,
    ) -> None:
        """A reconcile of ``revision`` did not converge the host (``result`` ``failed``, or
        ``refused`` for a revision bpfman will not apply). The last applied revision stays:
        it is still what the host runs. ``stalled`` defaults from the reason."""
        self._record_end(revision, result, Counts(), duration_seconds, next_reconcile_at, now)
        self.last_error = one_line(error)
        self.diagnostics = _capped(diagnostics)
        stalled = reason in STALLING_REASONS if stalled is None else stalled
        self.set_condition(READY, FALSE, reason, self.last_error, now)
        if stalled:
            self.set_condition(STALLED, TRUE, reason, self.last_error, now)
            self.set_condition(
                RECONCILING, FALSE, reason, "waiting for a new revision of the source", now
            )
        else:
            self.set_condition(STALLED, FALSE, reason, "", now)
            when = f" at {self.next_reconcile_at}" if self.next_reconcile_at else ""
            self.set_condition(RECONCILING, TRUE, RETRYING, f"retrying{when}", now)

    def record_planned(
        self,
        revision: str | None,
        counts: Counts,
        *,
        duration_seconds: float | None = None,
        next_reconcile_at: float | None = None,
        now: float | None = None,
    ) -> None:
        """Suspended: ``revision`` was planned and nothing applied. ``last_counts`` is what
        resuming would do; Ready still describes the last applied revision."""
        result = PLANNED if (counts.added or counts.changed or counts.destroyed) else NO_CHANGES
        self._record_end(revision, result, counts, duration_seconds, next_reconcile_at, now)
        self.last_error = None
        self.diagnostics = []
        what = f"revision {revision}" if revision else "the source"
        self.set_condition(
            RECONCILING, FALSE, SUSPENDED, f"suspended; {what} would give {counts}", now
        )

    def set_suspended(self, suspended: bool, now: float | None = None) -> None:
        """``bpfman suspend`` / ``resume``: applying stops or restarts (plans go on)."""
        self.suspended = suspended
        if suspended:
            self.set_condition(RECONCILING, FALSE, SUSPENDED, _SUSPENDED_MESSAGE, now)
        else:
            self.set_condition(
                RECONCILING, FALSE, RESUMED, "applying resumed; the next reconcile applies", now
            )

    def _record_end(
        self,
        revision: str | None,
        result: str,
        counts: Counts,
        duration_seconds: float | None,
        next_reconcile_at: float | None,
        now: float | None,
    ) -> None:
        self.last_attempted_revision = revision
        if not self._in_progress:  # no record_attempt for this one: it started and ended now
            self.last_attempted_at = stamp(now)
        self._in_progress = False
        self.last_result = result
        self.last_counts = counts
        self.last_duration_seconds = duration_seconds
        self.next_reconcile_at = None if next_reconcile_at is None else stamp(next_reconcile_at)

    # --- JSON -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FILE_FORMAT,
            "source": self.source,
            "last_applied_revision": self.last_applied_revision,
            "last_applied_at": self.last_applied_at,
            "last_attempted_revision": self.last_attempted_revision,
            "last_attempted_at": self.last_attempted_at,
            "last_result": self.last_result,
            "last_error": self.last_error,
            "diagnostics": [_diagnostic_json(d) for d in self.diagnostics],
            "next_reconcile_at": self.next_reconcile_at,
            "drift_repaired": self.drift_repaired,
            "drift_reported": self.drift_reported,
            "suspended": self.suspended,
            "programs_by_kind": dict(self.programs_by_kind),
            "last_counts": {
                "added": self.last_counts.added,
                "changed": self.last_counts.changed,
                "destroyed": self.last_counts.destroyed,
            },
            "last_duration_seconds": self.last_duration_seconds,
            "watcher": {
                "pid": self.watcher_pid,
                "started_at": self.watcher_started_at,
                "start_ticks": self.watcher_start_ticks,
                "boot_id": self.watcher_boot_id,
                "stopped_at": self.watcher_stopped_at,
            },
            "conditions": [self.condition(t).to_json() for t in self._condition_order()],
        }

    def _condition_order(self) -> list[str]:
        return [*CONDITION_TYPES, *sorted(set(self.conditions) - set(CONDITION_TYPES))]

    @classmethod
    def from_json(cls, doc: object) -> WatchStatus:
        """The status a file holds; ValueError naming the first field that is wrong."""
        d = _Fields(doc, "")
        version = d.integer("format_version")
        if version != FILE_FORMAT:
            raise ValueError(
                f"format_version {version} is not one this bpfman ({__version__}) reads "
                f"(it reads {FILE_FORMAT})"
            )
        counts = d.obj("last_counts")
        watcher = d.obj("watcher")
        status = cls(
            source=d.text("source") or "",
            last_applied_revision=d.text("last_applied_revision"),
            last_applied_at=d.text("last_applied_at"),
            last_attempted_revision=d.text("last_attempted_revision"),
            last_attempted_at=d.text("last_attempted_at"),
            last_result=d.text("last_result"),
            last_error=d.text("last_error"),
            diagnostics=[_diagnostic(x) for x in d.items("diagnostics")],
            next_reconcile_at=d.text("next_reconcile_at"),
            drift_repaired=d.integer("drift_repaired") or 0,
            drift_reported=d.integer("drift_reported") or 0,
            suspended=d.flag("suspended"),
            programs_by_kind=d.int_map("programs_by_kind"),
            last_counts=Counts(
                counts.integer("added") or 0,
                counts.integer("changed") or 0,
                counts.integer("destroyed") or 0,
            ),
            last_duration_seconds=d.number("last_duration_seconds"),
            watcher_pid=watcher.integer("pid"),
            watcher_started_at=watcher.text("started_at"),
            watcher_start_ticks=watcher.integer("start_ticks"),
            watcher_boot_id=watcher.text("boot_id"),
            watcher_stopped_at=watcher.text("stopped_at"),
        )
        for raw in d.items("conditions"):
            c = _Fields(raw, "conditions[]")
            type_ = c.text("type")
            if not type_:
                raise ValueError("conditions[].type: missing")
            status.conditions[type_] = Condition(
                type_,
                c.text("status") or UNKNOWN,
                c.text("reason") or "",
                c.text("message") or "",
                c.text("lastTransitionTime"),
            )
        return status


_SUSPENDED_MESSAGE = "applying is suspended (bpfman resume restarts it); plans go on"


def one_line(text: str) -> str:
    """``text`` as a status line: its first non-empty line, credentials redacted, bounded."""
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    line = redact(line)
    if len(line) > MAX_ERROR_LENGTH:
        line = line[: MAX_ERROR_LENGTH - 3] + "..."
    return line


def _capped(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    kept = list(diagnostics)
    if len(kept) <= MAX_DIAGNOSTICS:
        return kept
    rest = len(kept) - MAX_DIAGNOSTICS
    return [*kept[:MAX_DIAGNOSTICS], Diagnostic(f"... and {rest} more problems")]


def _diagnostic_json(d: Diagnostic) -> dict[str, Any]:
    return {"message": d.message, "file": d.file, "line": d.line, "field": d.field}


def _diagnostic(raw: object) -> Diagnostic:
    f = _Fields(raw, "diagnostics[]")
    return Diagnostic(f.text("message") or "", f.text("file"), f.integer("line"), f.text("field"))


class _Fields:
    """Typed access to one JSON object, so a hand-edited or damaged file gives a message naming
    the field instead of a TypeError somewhere in the renderer. Missing fields are None: a file
    from an older bpfman of the same format may lack fields added since."""

    def __init__(self, doc: object, where: str) -> None:
        if not isinstance(doc, dict):
            raise ValueError(f"{where or 'the document'}: expected an object")
        self.doc: dict[str, Any] = doc
        self.where = where

    def _get(self, key: str, types: tuple[type, ...], what: str) -> Any:
        value = self.doc.get(key)
        # bool is an int in Python; JSON true is not a count.
        if value is None or (isinstance(value, types) and not _bool_as_number(value, types)):
            return value
        raise ValueError(f"{self.where}{'.' if self.where else ''}{key}: expected {what}")

    def text(self, key: str) -> str | None:
        value: str | None = self._get(key, (str,), "a string")
        return value

    def integer(self, key: str) -> int | None:
        value: int | None = self._get(key, (int,), "an integer")
        return value

    def number(self, key: str) -> float | None:
        value = self._get(key, (int, float), "a number")
        return None if value is None else float(value)

    def flag(self, key: str) -> bool:
        return bool(self._get(key, (bool,), "true or false"))

    def items(self, key: str) -> list[Any]:
        value: list[Any] | None = self._get(key, (list,), "a list")
        return value or []

    def obj(self, key: str) -> _Fields:
        return _Fields(self.doc.get(key) or {}, key)

    def int_map(self, key: str) -> dict[str, int]:
        value: dict[str, Any] = self._get(key, (dict,), "an object") or {}
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value.values()):
            raise ValueError(f"{key}: expected integer values")
        return dict(value)


def _bool_as_number(value: object, types: tuple[type, ...]) -> bool:
    return isinstance(value, bool) and bool not in types


# --- the file ---------------------------------------------------------------------------------


def status_path(state_dir: Path) -> Path:
    return Path(state_dir) / STATUS_FILE


def write_status(state_dir: Path, status: WatchStatus) -> None:
    """Replace the status file atomically: a reader (``bpfman status``, any time) sees the old
    file or the new one, never a torn one, even if the watcher is killed mid-write."""
    state_dir = Path(state_dir)
    ensure_dir(state_dir)
    text = json.dumps(status.to_json(), indent=2, sort_keys=True) + "\n"
    # 0600: the status names the source and what runs on the host.
    write_atomic(status_path(state_dir), text, ".watch-status-")


@dataclass(frozen=True)
class StatusFile:
    """What reading the status file gave. ``status`` is always something to show: the file's,
    or a "not watching" status when there is no file or it cannot be read (``problem`` says
    why; a broken status file never stops ``bpfman status`` from answering)."""

    path: Path
    status: WatchStatus
    found: bool
    problem: str | None = None


def not_watching(reason: str = NOT_WATCHING, message: str = "") -> WatchStatus:
    status = WatchStatus()
    message = message or "no watcher has run with this state dir"
    for t in CONDITION_TYPES:
        status.conditions[t] = Condition(t, UNKNOWN, reason, message)
    return status


def read_status(state_dir: Path) -> StatusFile:
    path = status_path(Path(state_dir))
    try:
        data = read_regular(path, MAX_STATUS_SIZE)
    except FileNotFoundError:
        return StatusFile(path, not_watching(), found=False)
    except (NotReadable, OSError) as e:
        return _unreadable(path, str(e) if isinstance(e, NotReadable) else _os_reason(e))
    try:
        status = WatchStatus.from_json(json.loads(data.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return _unreadable(path, f"is not valid JSON ({e})")
    except ValueError as e:
        return _unreadable(path, f"does not hold a watcher status: {e}")
    return StatusFile(path, status, found=True)


def _unreadable(path: Path, why: str) -> StatusFile:
    problem = f"the status file {path} {why}; the next reconcile of a watcher rewrites it"
    return StatusFile(path, not_watching(STATUS_UNREADABLE, problem), found=True, problem=problem)


def _os_reason(e: OSError) -> str:
    return f"cannot be read ({e.strerror or e})"


# --- is the watcher running? ------------------------------------------------------------------


def _proc_stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields from the third on (state, ppid, ...), or None."""
    try:
        text = read_regular(f"/proc/{pid}/stat", 64 * 1024).decode("utf-8", "replace")
    except (OSError, NotReadable):
        return None
    # The command name (field 2) is in parentheses and may itself hold ") ": split at the last.
    _, paren, rest = text.rpartition(")")
    return rest.split() if paren else None


def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (field 22 of /proc/<pid>/stat),
    or None where /proc cannot tell."""
    fields = _proc_stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


def boot_id() -> str | None:
    try:
        return read_regular("/proc/sys/kernel/random/boot_id", 4096).decode().strip() or None
    except (OSError, NotReadable, UnicodeDecodeError):
        return None


def is_running(status: WatchStatus) -> bool:
    """Whether the watcher the status names is alive: its pid exists, is not a zombie, and is
    the same process (same start time, same boot), not a later one that reused the pid."""
    pid = status.watcher_pid
    if pid is None or pid <= 0:  # kill(0) and kill(-1) would address groups, not a process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    fields = _proc_stat_fields(pid)
    if fields is None:  # no /proc to ask: the pid's liveness is all there is
        return True
    if fields[0] in ("Z", "X"):  # exited, not yet reaped
        return False
    if status.watcher_boot_id is not None and status.watcher_boot_id != boot_id():
        return False
    if status.watcher_start_ticks is not None:
        return process_start_ticks(pid) == status.watcher_start_ticks
    return True


# --- showing it -------------------------------------------------------------------------------


def _ago(when: str | None, now: float | None) -> str:
    if when is None:
        return "never"
    try:
        seconds = (time.time() if now is None else now) - datetime.fromisoformat(when).timestamp()
    except ValueError:
        return shown(when)
    if seconds < 0:
        return f"{when} (in {_span(-seconds)})"
    return f"{when} ({_span(seconds)} ago)"


def _span(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _watcher_line(loaded: StatusFile, running: bool) -> str:
    st = loaded.status
    if running:
        return f"running (pid {st.watcher_pid}, since {st.watcher_started_at})"
    if not loaded.found or loaded.problem:
        return "not watching"
    if st.watcher_stopped_at:
        return f"not running (stopped at {st.watcher_stopped_at})"
    if st.watcher_pid is not None:
        return f"not running (pid {st.watcher_pid} is gone; it started {st.watcher_started_at})"
    return "not running"


def render_text(
    loaded: StatusFile, *, running: bool | None = None, now: float | None = None
) -> str:
    """``bpfman status`` for people: plain lines, then the conditions as a table."""
    st = loaded.status
    running = is_running(st) if running is None else running
    lines: list[str] = []
    if loaded.problem:
        lines += [f"Warning: {shown(loaded.problem)}", ""]
    elif not loaded.found:
        lines += [f"Not watching: no watcher has written {loaded.path}.", ""]

    def row(label: str, value: str) -> None:
        lines.append(f"{label + ':':<17}{value}")

    row("Source", shown(st.source) if st.source else "-")
    row("Watcher", _watcher_line(loaded, running))
    row("Suspended", "yes: applying is stopped (bpfman resume)" if st.suspended else "no")
    if st.last_applied_revision is None and st.last_applied_at is None:
        row("Last applied", "never")
    else:
        applied = shown(st.last_applied_revision or "-")
        row("Last applied", f"{applied} at {_ago(st.last_applied_at, now)}")
    if st.last_attempted_at is not None:
        attempted = shown(st.last_attempted_revision or "-")
        took = f" in {st.last_duration_seconds:.1f}s" if st.last_duration_seconds else ""
        result = st.last_result or "in progress"
        row("Last attempt", f"{attempted} at {_ago(st.last_attempted_at, now)}: {result}{took}")
        if st.last_result in (APPLIED, PLANNED):
            row(
                "Changes",
                str(st.last_counts) + (" (not applied)" if st.last_result == PLANNED else ""),
            )
    if st.last_error:
        row("Error", shown(st.last_error))
        for d in st.diagnostics:
            where = f"{d.file}:{d.line}: " if d.file and d.line else f"{d.file}: " if d.file else ""
            lines.append(" " * 17 + shown(where + (f"{d.field}: " if d.field else "") + d.message))
    if running or st.next_reconcile_at:
        row("Next reconcile", _ago(st.next_reconcile_at, now) if st.next_reconcile_at else "-")
    row("Drift", f"{st.drift_repaired} repaired, {st.drift_reported} reported")
    total = sum(st.programs_by_kind.values())
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(st.programs_by_kind.items()))
    row("Programs", f"{total} ({kinds})" if kinds else str(total))
    lines += ["", "Conditions:"]
    table = [("TYPE", "STATUS", "REASON", "SINCE", "MESSAGE")]
    for t in st._condition_order():
        c = st.condition(t)
        since = c.last_transition_time or "-"
        table.append((c.type, c.status, c.reason or "-", since, shown(c.message) or "-"))
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    for r in table:
        lines.append(
            "  " + "  ".join(v.ljust(w) for v, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
        )
    return "\n".join(line.rstrip() for line in lines) + "\n"


def status_document(loaded: StatusFile, *, running: bool | None = None) -> dict[str, Any]:
    """``bpfman status --json``: the file's fields plus what only a reader can say (is the
    watcher running, was the file there, could it be read). Same shape with or without a
    file, so scripts need no special case for "never watched"."""
    st = loaded.status
    body = st.to_json()
    body.pop("format_version")
    return {
        "format_version": DOCUMENT_FORMAT,
        "bpfman_version": __version__,
        "status_file": str(loaded.path),
        "found": loaded.found,
        "problem": loaded.problem,
        "watcher_running": is_running(st) if running is None else running,
        **body,
    }
