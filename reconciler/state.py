"""The state file: what the kernel cannot hold for us (manifest attributes, bytecode digest,
source revision), keyed by address. Written atomically (temp + fsync + rename)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
STATE_FILE = "state.json"


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


def ensure_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # state reveals what runs where: owner-only


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / STATE_FILE

    def load(self) -> dict[str, Record]:
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

    def save(self, records: dict[str, Record]) -> None:
        ensure_dir(self.dir)
        doc = {
            "format_version": FORMAT_VERSION,
            "records": [asdict(records[k]) for k in sorted(records)],
        }
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=self.dir)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=2, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            dfd = os.open(self.dir, os.O_RDONLY)  # make the rename itself durable
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
