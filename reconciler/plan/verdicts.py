"""The verifier's verdicts (and the kernel's feature probe answers) kept between runs, so that a
plan that loads nothing new loads nothing at all.

One small JSON file, ``<state-dir>/verdicts.json``::

    {"format": "bpfman-verdicts/1", "identity": "<kernel build, libbpf, boot>",
     "verdicts": {"<key>": {"accepted": true|false, "reason": "...", "used": <unix time>}},
     "probes": {"<feature>": {"supported": true|false, "reason": "..."}}}

A key (``Kernel.verdict_key``) is a digest of everything a verdict depends on: the object's
bytes, the function, the program type, the global data, the fentry/fexit target, the dispatcher,
the shapes of the shared maps already pinned, and the kernel build and libbpf. The file as a
whole is valid for one ``identity`` (kernel build, libbpf, boot): a file written on another
kernel or boot, by another bpfman format, or unreadable in any way is ignored and rebuilt. It
holds at most ``MAX_VERDICTS`` verdicts (the least recently used go first), is read through
``reconciler.files`` with a size bound, and written atomically (temp file, fsync, rename).
Failing to write it only costs the next run a load: it is a cache, never the truth.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from reconciler import files
from reconciler.kernel.types import Probe
from reconciler.values import frozen

log = logging.getLogger("bpfman.verdicts")

FILE = "verdicts.json"
FORMAT = "bpfman-verdicts/1"
MAX_VERDICTS = 512
MAX_REASON = 8 * 1024
MAX_FILE = 8 * 1024 * 1024  # well above MAX_VERDICTS * MAX_REASON
_KEY = re.compile(r"^[0-9a-f]{64}$")
# A verdict used again is marked used (for the size bound) at most this often: reading the same
# verdicts over and over does not rewrite the file each time.
_TOUCH_AFTER = 3600


@frozen
class Verdict:
    accepted: bool
    reason: str = ""  # the kernel's words when it rejected the program


class VerdictCache:
    def __init__(self, path: Path | None, identity: str) -> None:
        self.path = path  # None: nothing is read or written (a cache of this run only)
        self.identity = identity
        self._verdicts: dict[str, dict[str, Any]] = {}
        self._probes: dict[str, Probe] = {}
        self._changed = False

    @classmethod
    def load(cls, state_dir: Path, identity: str) -> VerdictCache:
        cache = cls(state_dir / FILE, identity)
        try:
            raw = files.read_regular(state_dir / FILE, MAX_FILE)
        except FileNotFoundError:
            return cache
        except (OSError, ValueError) as e:
            log.info("ignoring %s: %s", state_dir / FILE, e)
            cache._changed = True  # rebuilt at the next save
            return cache
        try:
            cache._read(json.loads(raw.decode("utf-8")))
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            log.info("ignoring %s: %s", state_dir / FILE, e)
            cache._verdicts, cache._probes, cache._changed = {}, {}, True
        return cache

    def _read(self, doc: dict[str, Any]) -> None:
        if doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format')!r} is not {FORMAT}")
        if doc.get("identity") != self.identity:
            raise ValueError("written for another kernel, libbpf or boot")
        for key, v in dict(doc["verdicts"]).items():
            if not (_KEY.match(key) and isinstance(v["accepted"], bool)):
                raise ValueError(f"malformed verdict {key!r}")
            if not isinstance(v["reason"], str) or len(v["reason"]) > MAX_REASON:
                raise ValueError(f"malformed reason of {key!r}")
            if not isinstance(v["used"], int | float):
                raise ValueError(f"malformed time of {key!r}")
            self._verdicts[key] = {
                "accepted": v["accepted"],
                "reason": v["reason"],
                "used": v["used"],
            }
        for feature, p in dict(doc.get("probes", {})).items():
            if not (isinstance(p["supported"], bool) and isinstance(p["reason"], str)):
                raise ValueError(f"malformed probe {feature!r}")
            self._probes[str(feature)] = Probe(str(feature), p["supported"], p["reason"])

    # --- verdicts ---------------------------------------------------------------------------

    def get(self, key: str) -> Verdict | None:
        found = self._verdicts.get(key)
        if found is None:
            return None
        now = int(time.time())
        if now - found["used"] > _TOUCH_AFTER:  # keep it among the recently used, cheaply
            found["used"] = now
            self._changed = True
        return Verdict(found["accepted"], found["reason"])

    def put(self, key: str, verdict: Verdict) -> None:
        self._verdicts[key] = {
            "accepted": verdict.accepted,
            "reason": verdict.reason[:MAX_REASON],
            "used": int(time.time()),
        }
        self._changed = True

    def __len__(self) -> int:
        return len(self._verdicts)

    # --- probes -----------------------------------------------------------------------------

    def probes(self) -> dict[str, Probe]:
        return dict(self._probes)

    def put_probes(self, answers: dict[str, Probe]) -> None:
        if any(self._probes.get(f) != p for f, p in answers.items()):
            self._probes.update(answers)
            self._changed = True

    # --- writing ----------------------------------------------------------------------------

    def save(self) -> None:
        """Write the file if anything changed (atomically); a failure is logged, not raised."""
        if not self._changed or self.path is None:
            return
        kept = sorted(self._verdicts.items(), key=lambda kv: kv[1]["used"], reverse=True)
        doc = {
            "format": FORMAT,
            "identity": self.identity,
            "verdicts": dict(kept[:MAX_VERDICTS]),
            "probes": {
                f: {"supported": p.supported, "reason": p.reason}
                for f, p in sorted(self._probes.items())
            },
        }
        try:
            _write_atomically(self.path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
            self._changed = False
        except OSError as e:
            log.info("cannot keep the verifier's verdicts in %s: %s", self.path, e)


def _write_atomically(path: Path, text: str) -> None:
    directory = path.parent
    if not directory.is_dir():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".verdicts-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
