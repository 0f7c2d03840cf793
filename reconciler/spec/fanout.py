"""Reading many manifest files on more than one core.

Reading a manifest (YAML with line numbers, schema, the semantic checks) is pure Python and the
same work for every file, so a source of a thousand files spends most of a plan on one core
while the others idle. ``fan_out`` splits such a list in two: a forked child does the second
half while this process does the first, and the child's results come back pickled through a
pipe, in order. Threads would not help (the GIL); a process pool would cost its own start-up
and imports on every command, where a fork shares everything already imported.

It is an optimisation only: with one core, a short list, or any failure of the child (it died,
was killed, sent something unreadable), this process does the whole list itself, so the answer
is always the one the sequential reading gives. A process running other threads does not fork.
``BPFMAN_NO_FANOUT=1`` turns it off. Nothing here changes the host: reading
manifests writes nothing, and the child leaves with ``os._exit`` (no atexit, no flushed buffers
of the parent).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Below this many items the fork and the pickling cost more than half the work saves.
MIN_ITEMS = 200
_BUFSIZE = 1 << 20


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def fan_out(work: Callable[[T], R], items: Sequence[T], min_items: int = MIN_ITEMS) -> list[R]:
    """``[work(i) for i in items]``, the second half computed by a forked child when that pays
    (see the module's text). ``work`` must not change the host."""
    if (
        len(items) < min_items
        or _cores() < 2
        or os.environ.get("BPFMAN_NO_FANOUT")
        # A fork copies locks other threads hold (logging's, the import lock): the child could
        # wait on one forever. The watcher runs threads; its reconciles reuse what they read.
        or threading.active_count() > 1
    ):
        return [work(i) for i in items]
    half = len(items) // 2
    first, second = items[:half], items[half:]
    try:
        rfd, wfd = os.pipe()
        pid = os.fork()
    except OSError:
        return [work(i) for i in items]
    if pid == 0:  # the child: compute, send, leave without running anything of the parent's
        code = 1
        try:
            os.close(rfd)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            data = pickle.dumps([work(i) for i in second], protocol=pickle.HIGHEST_PROTOCOL)
            with os.fdopen(wfd, "wb", buffering=_BUFSIZE) as out:
                out.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    try:
        done = [work(i) for i in first]
    except BaseException:
        _reap(pid, rfd, kill=True)
        raise
    rest = _collect(pid, rfd)
    if rest is None or len(rest) != len(second):
        rest = [work(i) for i in second]
    return done + rest


def _collect(pid: int, rfd: int) -> list[Any] | None:
    """The child's results, or None when it failed."""
    try:
        with os.fdopen(rfd, "rb", buffering=_BUFSIZE) as pipe:
            data = pipe.read()
    except OSError:
        data = b""
    ok = _reap(pid, None, kill=False)
    if not ok or not data:
        return None
    try:
        # Our own child's bytes, written by the code above from objects it built itself.
        rest = pickle.loads(data)  # noqa: S301
    except Exception:
        return None
    return rest if isinstance(rest, list) else None


def _reap(pid: int, rfd: int | None, kill: bool) -> bool:
    """Wait for the child (killing it first if asked); whether it exited 0."""
    if rfd is not None:
        os.close(rfd)
    if kill:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return False
        return os.waitstatus_to_exitcode(status) == 0
