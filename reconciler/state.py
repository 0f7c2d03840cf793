"""The state file: what the kernel cannot hold for us (applied attributes, bytecode digest,
manifest location, source revision), keyed by address.

Two files under the state dir:
- ``state.json``: the snapshot, written atomically (temp + fsync + rename + fsync of the dir);
- ``journal.jsonl``: one line appended (and flushed) per change an apply makes, so recording a
  step costs O(1) however many programs are managed. Loading replays the journal over the
  snapshot; ``compact`` folds it in at the end of an apply. A torn last line (a crash while
  appending) is ignored: that step's kernel change is then seen as drift by the next plan.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.kernel.types import Installed

FORMAT_VERSION = 1
STATE_FILE = "state.json"
JOURNAL_FILE = "journal.jsonl"


class StateError(Exception):
    """The state file is unreadable or corrupt."""


@dataclass
class Record:
    address: str
    attributes: dict[str, Any]
    origin: str = ""
    revision: str | None = None
    prog_id: int | None = None
    link_id: int | None = None
    applied_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def ensure_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # state reveals what runs where: owner-only


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / STATE_FILE
        self.journal_path = directory / JOURNAL_FILE
        self._journal: IO[str] | None = None

    def load(self) -> dict[str, Record]:
        records = self._load_snapshot()
        self._replay(records)
        return records

    def _load_snapshot(self) -> dict[str, Record]:
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            return {}
        try:
            doc = json.loads(raw)
            if doc.get("format_version") != FORMAT_VERSION:
                raise StateError(
                    f"{self.path}: format_version {doc.get('format_version')!r} is not "
                    f"{FORMAT_VERSION}; this bpfman cannot read it"
                )
            return {r["address"]: Record(**r) for r in doc["records"]}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise StateError(f"{self.path} is corrupt ({e}); move it aside to rebuild it") from None

    def _replay(self, records: dict[str, Record]) -> None:
        try:
            lines = self.journal_path.read_text().split("\n")
        except FileNotFoundError:
            return
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if entry["op"] == "put":
                    rec = Record(**entry["record"])
                    records[rec.address] = rec
                elif entry["op"] == "del":
                    records.pop(entry["address"], None)
                else:
                    raise KeyError(entry["op"])
            except (ValueError, KeyError, TypeError) as e:
                if n >= len(lines) - 1:  # only the last line can be torn by a crash
                    return
                raise StateError(
                    f"{self.journal_path}:{n} is corrupt ({e}); move it aside to rebuild it"
                ) from None

    # --- writing -------------------------------------------------------------------------------

    def _append(self, entry: dict[str, Any]) -> None:
        if self._journal is None:
            ensure_dir(self.dir)
            self._journal = open(self.journal_path, "a")  # noqa: SIM115 (held across calls)
        self._journal.write(json.dumps(entry, separators=(",", ":")) + "\n")
        # flush, not fsync: a killed process loses nothing the kernel already has, and a machine
        # crash loses bpffs itself, so durability past the page cache would buy nothing.
        self._journal.flush()

    def put(self, record: Record) -> None:
        self._append({"op": "put", "record": record.to_json()})

    def delete(self, address: str) -> None:
        self._append({"op": "del", "address": address})

    def compact(self, records: dict[str, Record]) -> None:
        """Write the snapshot and drop the journal it now contains."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        self.save(records)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.journal_path)

    def save(self, records: dict[str, Record]) -> None:
        ensure_dir(self.dir)
        doc = {
            "format_version": FORMAT_VERSION,
            "records": [records[k].to_json() for k in sorted(records)],
        }
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=self.dir)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=2, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            _fsync_dir(self.dir)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def refresh(records: dict[str, Record], installed: Iterable[Installed]) -> tuple[int, int]:
    """Bring ``records`` in line with what the kernel holds (``--refresh-only``): drop records
    whose pins are gone, update program and link ids and where each runs. Returns (updated,
    removed). Pins without a record stay unrecorded: the state cannot invent their manifest."""
    from reconciler.address import Address

    have: dict[str, Installed] = {}
    for found in installed:
        try:
            have[str(Address.from_pin_dir(found.pin_dir))] = found
        except ValueError:
            continue
    updated = removed = 0
    for key in list(records):
        inst = have.get(key)
        rec = records[key]
        if inst is None:
            del records[key]
            removed += 1
            continue
        attach = dict(inst.attach) if inst.attached else None
        if (rec.prog_id, rec.link_id, rec.extra.get("attach")) != (
            inst.prog_id,
            inst.link_id,
            attach,
        ):
            rec.prog_id, rec.link_id = inst.prog_id, inst.link_id
            rec.extra["attach"] = attach
            updated += 1
    return updated, removed
