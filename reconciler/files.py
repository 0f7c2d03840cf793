"""Reading paths that may not be what they claim to be.

Every file bpfman reads on a user's or a source's say-so (manifests, the host config and labels
file, bytecode, uprobe targets, network namespace paths, state and plan files) goes through
here, because a path can name a FIFO (``open`` blocks until a writer appears: a hang), a
character device (``/dev/zero`` never ends: memory runs out), a directory or a socket. So:

- the kind is checked with ``stat`` before the path is opened (opening a device can have side
  effects of its own), and again with ``fstat`` on what was opened (the path may have been
  swapped in between);
- the open itself never blocks (``O_NONBLOCK``: a FIFO swapped in opens at once, then fails the
  ``fstat`` check);
- every read is bounded: a file over its limit is refused by its size, and a file that grows
  while it is read is cut off at the limit and refused too.

    data = read_regular(path, limit=4 * 1024 * 1024)    # bytes, or NotReadable with the reason
    with open_regular(path) as f: ...                   # a regular file, for seeking readers
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

_KIND = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISREG, "a regular file"),
)


class NotReadable(ValueError):
    """The path exists but is not something bpfman reads: not a regular file, or too large.
    The message is a reason to follow the path, e.g. ``is a FIFO (named pipe), not a regular
    file``; ``kind`` says what the path is instead (``a FIFO (named pipe)``), when that is why."""

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind


def kind_of(mode: int) -> str:
    """In words, what kind of file ``mode`` (an ``st_mode``) is."""
    for test, words in _KIND:
        if test(mode):
            return words
    return "not a regular file"


def _require_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise NotReadable(f"is {kind_of(mode)}, not a regular file", kind_of(mode))


def _open_regular_fd(path: str | Path) -> tuple[int, os.stat_result]:
    """A descriptor for reading ``path`` and its fstat, if it is a regular file (symlinks
    followed); the stat before the open and the fstat after it both say so. Never blocks."""
    _require_regular(os.stat(path).st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        _require_regular(st.st_mode)  # swapped for something else since the stat
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def open_regular(path: str | Path) -> BinaryIO:
    """``path`` opened for reading in binary mode, if it is a regular file (symlinks followed).

    FileNotFoundError and other OSErrors propagate as they are; NotReadable for a path that is
    not a regular file. The open never blocks."""
    fd, _st = _open_regular_fd(path)
    try:
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class TooLarge(NotReadable):
    """A regular file over the size limit its reader sets."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"is {size} bytes, over the limit of {_size(limit)}")
        self.size = size
        self.limit = limit


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


def read_regular(path: str | Path, limit: int) -> bytes:
    """The whole content of the regular file ``path``, at most ``limit`` bytes (NotReadable
    beyond, decided from the size before reading, and from what was read for a file that
    grows or lies about its size)."""
    # On the bare descriptor: a thousand manifests read through file objects would cost three
    # more syscalls each (isatty, lseek, fstat) and a buffer apiece.
    fd, st = _open_regular_fd(path)
    try:
        if st.st_size > limit:
            raise TooLarge(st.st_size, limit)
        # As many bytes as the size says, plus one to notice growth: asking for ``limit + 1``
        # at once would allocate the whole limit (MiBs) for every kilobyte manifest.
        data = _read_upto(fd, st.st_size + 1)
        if len(data) > st.st_size:
            data += _read_upto(fd, limit + 1 - len(data))
    finally:
        os.close(fd)
    if len(data) > limit:
        raise TooLarge(len(data), limit)
    return data


def _read_upto(fd: int, n: int) -> bytes:
    """Up to ``n`` bytes, fewer only at the end of the file (a read may return less)."""
    first = os.read(fd, n)
    if len(first) >= n or not first:
        return first
    parts, got = [first], len(first)
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def open_nonblocking(path: str | Path, flags: int = os.O_RDONLY) -> int:
    """A file descriptor for ``path`` that never blocks in ``open`` and is never a FIFO, a
    device or a socket (directories and regular files only: namespace files are regular), for
    callers that hand the descriptor to the kernel (setns) rather than read it."""
    mode = os.stat(path).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise NotReadable(f"is {kind_of(mode)}, not a regular file", kind_of(mode))
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        os.close(fd)
        raise NotReadable(f"is {kind_of(mode)}, not a regular file", kind_of(mode))
    return fd
