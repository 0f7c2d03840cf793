"""The state file: what the kernel cannot hold for us (applied attributes, bytecode digest,
manifest location, source revision), keyed by address.

Two files under the state dir:
- ``state.json``: the snapshot, written atomically (temp + fsync + rename + fsync of the dir);
- ``journal.jsonl``: the intent log of the apply in progress, one line appended (and flushed)
  per event, so recording a step costs O(1) however many programs are managed:
  ``begin`` (written before a step touches the kernel), then ``put`` or ``del`` (written once the
  step's kernel change is verified). Loading replays the journal over the snapshot; ``compact``
  folds it in at the end of an apply.

What a crash (SIGKILL, OOM, power) can leave, and how loading treats it:
- a ``begin`` without its ``put``/``del``: that step was interrupted somewhere between "nothing
  done" and "kernel changed, not recorded". The address's record is dropped (never trusted: it
  may describe the program the step replaced), so the plan compares the pins alone with the
  manifests ("no record": replace; no pins: load) and the next apply converges.
- a torn last line: the append itself was interrupted; ignored (the ``begin`` before it covers
  the step).
Anything else unreadable is corruption, never silently trusted: see ``load``.

Both are read through :mod:`reconciler.files`: regular files only, never blocking, at most
``MAX_FILE_SIZE`` bytes. One that is not a regular file (a directory, a FIFO, a device), or is
larger, is not a damaged state bpfman wrote but something else put there: loading refuses it
(``StateError``, naming the file and the fix) rather than moving aside what it cannot read.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from reconciler.address import Address
from reconciler.files import NotReadable, kind_of, read_regular

if TYPE_CHECKING:
    from reconciler.kernel.types import Installed

FORMAT_VERSION = 1
STATE_FILE = "state.json"
JOURNAL_FILE = "journal.jsonl"
# A record is about 1 KiB, and a journal holds two lines per step of one apply: 64 MiB is tens of
# thousands of programs, and still a bounded read.
MAX_FILE_SIZE = 64 * 1024 * 1024


class StateError(Exception):
    """The state cannot be used at all: written by a newer bpfman, or a state file that is not
    a regular file (or is over ``MAX_FILE_SIZE``)."""


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


@dataclass
class StateProblem:
    """Something wrong with the files under the state dir that loading worked around."""

    path: Path
    message: str
    corrupt: bool  # the file must be moved aside (not just an interrupted step)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def ensure_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)  # state reveals what runs where: owner-only


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str, prefix: str) -> None:
    """Replace ``path`` so that a reader sees the old content or the new, never a torn file,
    even after a kill or a power cut: a temporary file (``prefix``, 0600 from mkstemp) in the
    same directory, fsynced, renamed over it, and the directory fsynced. The temporary file is
    removed on every way out but SIGKILL."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / STATE_FILE
        self.journal_path = directory / JOURNAL_FILE
        self._journal: IO[str] | None = None
        # Filled by every load: what was wrong and how it was worked around.
        self.problems: list[StateProblem] = []
        # Addresses whose step an earlier apply began and never finished (kill, crash).
        self.interrupted: dict[str, str] = {}

    def load(self, repair: bool = False) -> dict[str, Record]:
        """The records: the snapshot with the journal replayed over it.

        Never raises for a damaged file (only for a newer format, ``StateError``): a corrupt
        snapshot or journal line is reported in ``problems`` and what it held is dropped, so
        the plan sees those pins as unrecorded (replace) and the next apply re-records them.
        With ``repair`` (the caller holds the apply lock) the corrupt files are moved aside as
        ``<name>.corrupt-<timestamp>`` and the rebuilt records saved as the new snapshot.
        """
        self.problems = []
        self.interrupted = {}
        records = self._load_snapshot()
        self._replay(records)
        if repair and any(p.corrupt for p in self.problems):
            self._repair(records)
        return records

    def _read(self, path: Path) -> bytes | None:
        """The content of ``path`` (None if there is none); StateError if it is not a file
        bpfman could have written."""
        try:
            return read_regular(path, MAX_FILE_SIZE)
        except FileNotFoundError:
            return None
        except NotReadable as e:
            what = "state file" if path == self.path else "state journal"
            raise StateError(
                f"the {what} {path} {e}; it is not a state bpfman wrote, so bpfman does not "
                "move it aside itself: remove it (or move it away) and run again"
            ) from None
        except NotADirectoryError:
            raise StateError(
                f"the state dir {self.dir} is not a directory; remove it or choose another "
                "--state-dir"
            ) from None

    def _load_snapshot(self) -> dict[str, Record]:
        data = self._read(self.path)
        if data is None:
            return {}
        try:
            raw = data.decode()
        except UnicodeDecodeError as e:
            self.problems.append(StateProblem(self.path, f"is corrupt ({e})", corrupt=True))
            return {}
        try:
            doc = json.loads(raw)
            version = doc.get("format_version")
        except (ValueError, AttributeError) as e:
            self.problems.append(StateProblem(self.path, _why(raw, e), corrupt=True))
            return {}
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise StateError(
                f"{self.path}: format_version {version} is newer than {FORMAT_VERSION}; "
                "this bpfman cannot read it (upgrade bpfman)"
            )
        try:
            if version != FORMAT_VERSION:
                raise ValueError(f"format_version {version!r} is not {FORMAT_VERSION}")
            records = {}
            for r in doc["records"]:
                rec = Record(**r)
                if not isinstance(rec.address, str) or not isinstance(rec.attributes, dict):
                    raise ValueError(f"record {r!r} is malformed")
                records[rec.address] = rec
            return records
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            self.problems.append(StateProblem(self.path, f"is corrupt ({e})", corrupt=True))
            return {}

    def _replay(self, records: dict[str, Record]) -> None:
        data = self._read(self.journal_path)
        if data is None:
            return
        lines = data.decode(errors="replace").split("\n")
        # The last element is "" after a complete final line, or the torn tail of one.
        last = len(lines)
        begun: dict[str, str] = {}
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                op = entry["op"]
                if op == "begin":
                    begun[entry["address"]] = entry.get("action", "change")
                elif op == "put":
                    rec = Record(**entry["record"])
                    if not isinstance(rec.address, str) or not isinstance(rec.attributes, dict):
                        raise ValueError("malformed record")
                    records[rec.address] = rec
                    begun.pop(rec.address, None)
                elif op == "del":
                    records.pop(entry["address"], None)
                    begun.pop(entry["address"], None)
                else:
                    raise KeyError(op)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                if n == last:  # only the last line can be torn by a crash while appending
                    continue
                # Which address this line changed is unknown, so no record written before it
                # can be trusted: keep only what later lines establish.
                self.problems.append(
                    StateProblem(
                        self.journal_path,
                        f"line {n} is corrupt ({_why(line, e)}); records before it are dropped",
                        corrupt=True,
                    )
                )
                records.clear()
                begun.clear()
        for address, action in begun.items():
            records.pop(address, None)
            self.interrupted[address] = action
            self.problems.append(
                StateProblem(
                    self.journal_path,
                    f"an apply was interrupted during {address} ({action}); its record is "
                    "dropped and the plan compares its pins with the manifests",
                    corrupt=False,
                )
            )

    def _repair(self, records: dict[str, Record]) -> None:
        """Move the corrupt files aside and save ``records`` (what could be rebuilt)."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for problem in self.problems:
            if not problem.corrupt or not problem.path.exists():
                continue
            aside = problem.path.with_name(f"{problem.path.name}.corrupt-{stamp}")
            os.replace(problem.path, aside)
            problem.message += f"; moved aside to {aside.name}"
        self.compact(records)

    # --- writing -------------------------------------------------------------------------------

    def _append(self, entry: dict[str, Any]) -> None:
        if self._journal is None:
            ensure_dir(self.dir)
            self._journal = _open_journal(self.journal_path)
        self._journal.write(json.dumps(entry, separators=(",", ":")) + "\n")
        # flush, not fsync: a killed process loses nothing the kernel already has, and a machine
        # crash loses bpffs itself, so durability past the page cache would buy nothing.
        self._journal.flush()

    def begin(self, address: str, action: str) -> None:
        """Intent: the step for ``address`` is about to change the kernel. Until its ``put`` or
        ``del`` follows, a reader drops the address's record (see the module docstring)."""
        self._append({"op": "begin", "address": address, "action": action, "pid": os.getpid()})

    def put(self, record: Record) -> None:
        self._append({"op": "put", "record": record.to_json()})

    def delete(self, address: str) -> None:
        self._append({"op": "del", "address": address})

    def compact(self, records: dict[str, Record], saved: Callable[[], None] | None = None) -> None:
        """Write the snapshot and drop the journal it now contains. A kill between the two
        (``saved`` is called there: a test-only pause point) leaves a journal that replays over
        the new snapshot to the same records: every line in it is already in the snapshot."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        self.save(records)
        if saved is not None:
            saved()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.journal_path)

    def save(self, records: dict[str, Record]) -> None:
        """Replace the snapshot atomically. Callers hold the apply lock, so any other temporary
        file is what a process killed inside an earlier save left: it goes too."""
        ensure_dir(self.dir)
        write_atomic(self.path, _snapshot_text(records), ".state-")
        for left in self.dir.glob(".state-*"):
            left.unlink(missing_ok=True)


def _snapshot_text(records: dict[str, Record]) -> str:
    """The snapshot document, one record a line (sorted by address, keys sorted): ``indent``
    would make json use its pure-Python encoder, several times slower than the C one on the
    thousands of records of a large host."""
    lines = [json.dumps(records[k].to_json(), sort_keys=True) for k in sorted(records)]
    body = "\n" + ",\n".join(f"  {line}" for line in lines) + "\n" if lines else ""
    return f'{{"format_version": {FORMAT_VERSION}, "records": [{body}]}}\n'


def _open_journal(path: Path) -> IO[str]:
    """``path`` for appending, created if need be: never through a symlink, never blocking on a
    FIFO, and only if it is a regular file (written as root, it must not be redirected)."""

    def require_regular(mode: int) -> None:
        if not stat.S_ISREG(mode):
            raise StateError(
                f"the state journal {path} is {kind_of(mode)}, not a regular file; remove it"
            )

    with contextlib.suppress(FileNotFoundError):
        require_regular(os.lstat(path).st_mode)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        require_regular(os.fstat(fd).st_mode)  # swapped since the lstat
        os.set_blocking(fd, True)
        return os.fdopen(fd, "a")
    except BaseException:
        os.close(fd)
        raise


def refresh(records: dict[str, Record], installed: Iterable[Installed]) -> tuple[int, int]:
    """Bring ``records`` in line with what the kernel holds (``--refresh-only``): drop records
    whose pins are gone, update program and link ids and where each runs. Returns (updated,
    removed). Pins without a record stay unrecorded: the state cannot invent their manifest."""
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
        attach = inst.attach_json() if inst.attached else None
        if (rec.prog_id, rec.link_id, rec.extra.get("attach")) != (
            inst.prog_id,
            inst.link_id,
            attach,
        ):
            rec.prog_id, rec.link_id = inst.prog_id, inst.link_id
            rec.extra["attach"] = attach
            updated += 1
    return updated, removed


def _why(text: str, e: Exception) -> str:
    if not text.strip():
        return "empty"
    if isinstance(e, json.JSONDecodeError) and (
        e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string")
    ):
        return f"truncated after {len(text)} bytes"
    return f"not valid JSON: {e}" if isinstance(e, json.JSONDecodeError) else str(e)
