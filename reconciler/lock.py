"""One apply at a time: an exclusive flock on ``<state-dir>/lock``.

flock is released by the kernel when its holder dies, so a lock left by a killed process is never
an obstacle; the file's content only names the current holder, for the messages of those who
wait for it.

An apply or destroy takes it before it reads the state or observes the kernel and keeps it until
it has recorded what it did (see docs/reliability.md, Concurrency). Code running inside that
transaction may ask for the lock again (the state store's repair does): within one thread the
lock is re-entrant, so such a nested request succeeds at once instead of waiting for itself.

The lock file is opened without following a symlink and without blocking, and must be a regular
file: it is written (truncated, then the holder's name) as root, so a symlink planted there must
not redirect that write, and a FIFO or device must not hang or be written to.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from reconciler.files import kind_of
from reconciler.sources.redact import redact
from reconciler.state import ensure_dir

LOCK_FILE = "lock"


def _now() -> str:
    from datetime import UTC, datetime  # only when a lock is taken: not on every start-up

    return datetime.now(UTC).isoformat(timespec="seconds")


class LockTimeout(Exception):
    """The lock could not be taken: another bpfman holds it."""


class LockUnusable(LockTimeout):
    """The lock could not be taken because the state dir or its lock file cannot be used (a
    read-only file system, a lock that is a directory or a FIFO). A LockTimeout, so that every
    caller that reports a lock it could not take reports this too, as one clear error."""


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
        self.path = state_dir / LOCK_FILE
        self.state_dir = state_dir
        self.timeout = timeout
        self.on_wait = on_wait
        self._fd: int | None = None
        self._nested = False

    def _key(self) -> tuple[str, int]:
        return (os.path.abspath(self.path), threading.get_ident())

    def _open(self) -> int:
        try:
            ensure_dir(self.state_dir)
        except PermissionError:
            raise  # not root: said as such by the CLI
        except OSError as e:
            raise LockUnusable(
                f"cannot create the state dir {self.state_dir}: {e.strerror or e}; choose a "
                "--state-dir on a writable file system (default /run/bpfman)"
            ) from None
        # The kind before opening (opening a device can do something of its own), and again
        # on what was opened; O_NOFOLLOW makes a symlink swapped in since fail with ELOOP.
        with contextlib.suppress(FileNotFoundError):
            self._require_regular(os.lstat(self.path).st_mode)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o600)
        except PermissionError:
            raise
        except OSError as e:
            if e.errno == errno.ELOOP:
                self._require_regular(stat.S_IFLNK)
            raise LockUnusable(
                f"cannot open the lock file {self.path}: {e.strerror or e}; choose a "
                "--state-dir on a writable file system (default /run/bpfman)"
            ) from None
        try:
            self._require_regular(os.fstat(fd).st_mode)
        except LockUnusable:
            os.close(fd)
            raise
        return fd

    def _require_regular(self, mode: int) -> None:
        if not stat.S_ISREG(mode):
            raise LockUnusable(
                f"the lock file {self.path} is {kind_of(mode)}, not a regular file; bpfman "
                "only ever makes it a regular file: remove it and run again"
            )

    def acquire(self) -> None:
        key = self._key()
        if _held.get(key):
            _held[key] += 1
            self._nested = True
            return
        fd = self._open()
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
            # The command line may hold a git URL with credentials: stored redacted.
            "command": redact(" ".join(["bpfman", *sys.argv[1:]])),
            "since": _now(),
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
