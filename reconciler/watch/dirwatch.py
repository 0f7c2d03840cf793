"""File system events of a directory source, settled into one trigger per burst.

An editor's save-by-rename, a ``git checkout`` of 50 files or a half-written file all arrive as
several events; reconciling on each would read partial trees. Events only mark the source
dirty; the trigger fires once no event has come for ``settle`` seconds (and at the latest after
``max_delay``, so a file rewritten in a tight loop cannot starve the reconcile). The watcher
then reads the whole tree as it is, so a reconcile never sees "the" changed file alone.

watchdog (inotify on Linux) is used rather than raw inotify: it handles recursive watches,
directories created after the start and moves in and out of the tree.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

SETTLE = 0.1  # seconds without an event before a burst counts as finished
MAX_DELAY = 2.0  # a burst that never ends still triggers after this long


class _Mark(FileSystemEventHandler):
    def __init__(self, watcher: DirWatch) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads (our own, among them) change nothing
        if event.event_type in ("deleted", "moved") and os.path.normpath(
            str(event.src_path)
        ) == os.path.normpath(str(self.watcher.directory)):
            self.watcher.gone = (
                True  # inotify watched that inode: a new directory needs a new watch
            )
        self.watcher.mark(str(event.src_path))


class DirWatch:
    """Calls ``on_change(reason)`` once per settled burst of changes under ``directory``.
    ``only``: a single file source, whose directory is watched for that one name."""

    def __init__(
        self,
        directory: Path,
        on_change: Callable[[str], None],
        only: str | None = None,
        settle: float = SETTLE,
        max_delay: float = MAX_DELAY,
    ) -> None:
        self.directory = directory
        self.on_change = on_change
        self.only = only
        self.settle = settle
        self.max_delay = max_delay
        self._lock = threading.Lock()
        self._first: float | None = None
        self._last = 0.0
        self._what = ""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._observer = Observer()
        self.gone = False  # the watched directory itself was deleted or moved away
        self._thread = threading.Thread(target=self._settle_loop, name="dirwatch", daemon=True)

    def start(self) -> None:
        self._observer.schedule(_Mark(self), str(self.directory), recursive=self.only is None)
        self._observer.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._observer.stop()
        self._observer.join(5)
        self._thread.join(5)

    def mark(self, path: str) -> None:
        if self.only is not None and Path(path).name != self.only:
            return
        now = time.monotonic()
        with self._lock:
            if self._first is None:
                self._first = now
                self._what = path
            self._last = now
        self._wake.set()

    def _settle_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            what = self._settled()
            if what is not None:
                self.on_change(f"file change ({Path(what).name})")

    def _settled(self) -> str | None:
        """Wait until the burst in progress settles; the first path it touched, or None if
        there was none (or we are stopping)."""
        while not self._stop.is_set():
            with self._lock:
                if self._first is None:
                    return None
                now = time.monotonic()
                since_last, since_first = now - self._last, now - self._first
                if since_last >= self.settle or since_first >= self.max_delay:
                    self._first = None
                    return self._what
                wait = min(self.settle - since_last, self.max_delay - since_first)
            time.sleep(max(wait, 0.01))
        return None
