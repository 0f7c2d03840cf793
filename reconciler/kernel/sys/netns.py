"""Run code inside another network namespace, on the calling thread only.

``setns(2)`` with ``CLONE_NEWNET`` moves just the calling thread, and only its network namespace:
the mount namespace (and so bpffs pins under /sys/fs/bpf) stays ours. That is why this is used
instead of ``ip netns exec``, which also remounts /sys and hides the pins.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from reconciler import files
from reconciler.kernel.sys.libc import libc as _libc
from reconciler.kernel.types import KernelError

CLONE_NEWNET = 0x40000000
NAMED_NETNS_DIR = "/run/netns"  # where `ip netns add` bind-mounts named namespaces

_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def current_path() -> str:
    # /proc/thread-self, not /proc/self: after setns only this thread is in the namespace.
    return "/proc/thread-self/ns/net"


def identity(path: str | None = None) -> tuple[int, int]:
    """(device, inode) of a namespace file: equal identities mean the same namespace."""
    st = os.stat(path or current_path())
    return (st.st_dev, st.st_ino)


def is_current(path: str | None) -> bool:
    try:
        return path is None or identity(path) == identity()
    except FileNotFoundError:
        return False  # no such namespace: entering it says so


@contextmanager
def enter(path: str | None) -> Iterator[None]:
    """Move the calling thread into the network namespace at ``path`` (None: stay) and back.

    Sockets opened inside the block (netlink, ioctl) belong to that namespace for their lifetime;
    ifindexes given to bpf(2) (tcx links) are resolved in it too.
    """
    if path is None or is_current(path):
        yield
        return
    try:
        # Never blocks: a FIFO or a device given as a namespace is refused, not opened.
        target = files.open_nonblocking(path)
    except files.NotReadable as e:
        raise KernelError(
            f"network namespace {path} is {e.kind}, not a namespace file; give one such as "
            "/run/netns/NAME (`ip netns add NAME`) or /proc/PID/ns/net"
        ) from e
    except OSError as e:
        raise KernelError(
            f"network namespace {path} cannot be opened ({e.strerror}); "
            "create it first (e.g. `ip netns add NAME`) or fix the netns path"
        ) from e
    original = os.open(current_path(), os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _setns(target)
        except OSError as e:
            why = e.strerror
            if e.errno == errno.EINVAL:
                why = "it is not a network namespace file; give /run/netns/NAME or /proc/PID/ns/net"
            raise KernelError(f"cannot enter network namespace {path}: {why}") from e
        try:
            yield
        finally:
            # Failing to come back would leave this thread in the wrong namespace: that is a bug,
            # never a user error, so let the OSError propagate.
            _setns(original)
    finally:
        os.close(target)
        os.close(original)


def named_namespaces() -> list[str]:
    """Paths of the namespaces `ip netns` knows (bind mounts under /run/netns)."""
    try:
        names = sorted(os.listdir(NAMED_NETNS_DIR))
    except OSError:
        return []
    return [os.path.join(NAMED_NETNS_DIR, n) for n in names]


# Namespaces bpfman attaches in that no name leads to (a container's /proc/PID/ns/net): told by
# the engine before it observes (Kernel.observe_namespaces), since no scan can find them.
_also: list[str] = []


def also_observe(paths: list[str]) -> None:
    _also[:] = sorted(set(paths))


def all_known(first: str | None = None) -> list[str | None]:
    """Namespaces to scan when looking for an attachment: ``first``, ours, every named
    namespace, then those ``also_observe`` was told, each once (deduplicated by identity; ours
    is reported as None; unreadable ones, e.g. of a process that exited, are skipped)."""
    ours = identity()
    seen: set[tuple[int, int]] = set()
    out: list[str | None] = []
    for path in [first, None, *named_namespaces(), *_also]:
        try:
            ident = identity(path)
        except OSError:
            continue
        if ident not in seen:
            seen.add(ident)
            out.append(None if ident == ours else path)
    return out


def observed_as(path: str | None) -> tuple[bool, str | None]:
    """Whether an observation (``all_known``) sees the namespace at ``path``, and the name it
    gives it (None: ours). An unnamed namespace of another process is not seen."""
    ident = identity(path)
    for known in all_known():
        try:
            if identity(known) == ident:
                return True, known
        except OSError:
            continue
    return False, None


def by_inode() -> dict[int, str | None]:
    """Inode of every namespace we can enter (ours as None, then the named ones) -> its path:
    how pins named after a namespace's inode (dispatcher hooks) find their namespace again."""
    out: dict[int, str | None] = {}
    for ns in all_known():
        try:
            out.setdefault(identity(ns)[1], ns)
        except OSError:
            continue
    return out
