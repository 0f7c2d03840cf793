"""One apply at a time: an exclusive flock on ``<state-dir>/lock``.

flock is released by the kernel when its holder dies, so a lock left by a killed process is never
an obstacle; the file's content only names the current holder for the error message.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from reconciler.sources.redact import redact
from reconciler.state import ensure_dir


class LockTimeout(Exception):
    pass


class ApplyLock:
    def __init__(self, state_dir: Path, timeout: float = 10.0) -> None:
        self.path = state_dir / "lock"
        self.state_dir = state_dir
        self.timeout = timeout
        self._fd: int | None = None

    def acquire(self) -> None:
        ensure_dir(self.state_dir)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self._holder(fd)
                    os.close(fd)
                    raise LockTimeout(
                        f"another bpfman holds the state lock {self.path}{holder}; waited "
                        f"{self.timeout:g}s (raise --lock-timeout, or wait for it to finish)"
                    ) from None
                time.sleep(0.1)
        info = {
            "pid": os.getpid(),
            # The command line may hold a git URL with credentials: stored redacted.
            "command": redact(" ".join(["bpfman", *sys.argv[1:]])),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode() + b"\n", 0)
        self._fd = fd

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return f": pid {info['pid']} ({info['command']}) since {info['since']}"
        except (ValueError, KeyError):
            return ""

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ApplyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
