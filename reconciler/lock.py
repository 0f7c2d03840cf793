"""One apply at a time: an exclusive flock on ``<state-dir>/lock``.

flock is released by the kernel when its holder dies, so a lock left by a killed process is never
an obstacle; the file's content only names the current holder, for the messages of those who
wait for it.

An apply or destroy takes it before it reads the state or observes the kernel and keeps it until
it has recorded what it did (see docs/reliability.md, Concurrency). Code running inside that
transaction may ask for the lock again (the state store's repair does): within one thread the
lock is re-entrant, so such a nested request succeeds at once instead of waiting for itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from reconciler.state import ensure_dir


class LockTimeout(Exception):
    pass


# (lock file, thread) -> how many ApplyLocks of that thread hold it: the outermost one owns the
# flock; nested ones only count (flock would make a second fd of this process wait for the first).
_held: dict[tuple[str, int], int] = {}


class ApplyLock:
    def __init__(
        self,
        state_dir: Path,
        timeout: float = 10.0,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        """``on_wait`` is told once, in a sentence naming the holder, when the lock is busy and
        this lock will wait for it (``timeout`` > 0)."""
        self.path = state_dir / "lock"
        self.state_dir = state_dir
        self.timeout = timeout
        self.on_wait = on_wait
        self._fd: int | None = None
        self._nested = False

    def _key(self) -> tuple[str, int]:
        return (os.path.abspath(self.path), threading.get_ident())

    def acquire(self) -> None:
        key = self._key()
        if _held.get(key):
            _held[key] += 1
            self._nested = True
            return
        ensure_dir(self.state_dir)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self._holder(fd)
                    os.close(fd)
                    raise LockTimeout(
                        f"another bpfman holds the state lock {self.path}"
                        f"{': ' + holder if holder else ''}; waited {self.timeout:g}s (raise "
                        "--lock-timeout, or wait for it to finish)"
                    ) from None
                if not told and self.on_wait is not None:
                    told = True
                    holder = self._holder(fd)
                    self.on_wait(
                        "Waiting for the state lock "
                        + (f"held by {holder}" if holder else f"{self.path} (held by another run)")
                        + f"; up to {self.timeout:g}s (--lock-timeout)"
                    )
                time.sleep(0.1)
        info = {
            "pid": os.getpid(),
            "command": " ".join(["bpfman", *sys.argv[1:]]),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode() + b"\n", 0)
        self._fd = fd
        _held[key] = 1

    @staticmethod
    def _holder(fd: int) -> str:
        """``pid N (COMMAND) since TIME`` from the lock file, or "" if it does not say."""
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return f"pid {info['pid']} ({info['command']}) since {info['since']}"
        except (ValueError, KeyError):
            return ""

    def release(self) -> None:
        key = self._key()
        if self._nested:
            _held[key] -= 1
            self._nested = False
            return
        if self._fd is not None:
            _held.pop(key, None)
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ApplyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
