"""``bpfman suspend`` / ``resume``: a marker in the state dir that stops the watcher applying.

A file, not a signal to a running watcher, so that it holds across restarts (a maintenance
window outlives a reboot) and can be set before the watcher starts. While it is there the
watcher still plans on every trigger and records what it would do; it changes nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from reconciler import files
from reconciler.state import ensure_dir, write_atomic

SUSPEND_FILE = "watch-suspended.json"
MAX_SIZE = 64 * 1024


@dataclass
class Suspension:
    since: str
    reason: str

    def __str__(self) -> str:
        return f"suspended since {self.since}" + (f": {self.reason}" if self.reason else "")


def suspended(state_dir: Path) -> Suspension | None:
    """The suspension in force, or None. A marker that cannot be read still suspends: when in
    doubt, change nothing."""
    path = state_dir / SUSPEND_FILE
    if not os.path.lexists(path):
        return None
    try:
        doc = json.loads(files.read_regular(path, MAX_SIZE))
        return Suspension(since=str(doc.get("since", "")), reason=str(doc.get("reason", "")))
    except (OSError, ValueError, AttributeError, files.NotReadable) as e:
        return Suspension(since="unknown", reason=f"{path} cannot be read ({e}); `bpfman resume`")


def suspend(state_dir: Path, reason: str) -> Suspension:
    ensure_dir(state_dir)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    s = Suspension(since=now, reason=reason)
    doc = {"since": s.since, "reason": s.reason}
    write_atomic(state_dir / SUSPEND_FILE, json.dumps(doc) + "\n", ".suspend-")
    return s


def resume(state_dir: Path) -> bool:
    """Remove the marker; whether there was one."""
    try:
        os.unlink(state_dir / SUSPEND_FILE)
    except FileNotFoundError:
        return False
    return True
