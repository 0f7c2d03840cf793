"""Container events: tell the watcher when a container of a selected namespace starts or stops.

When the manifests select containers (``containers: {namespace, pods, containerNames}``,
``networkNamespaces``), which containers run is part of the plan. The watcher then follows the
runtime's event stream (podman: ``/libpod/events``, :mod:`reconciler.containers.podman`) and
asks for a reconcile per settled burst of events (a restart is stop, died and start within
milliseconds), with the containers named as its reason.

One background thread polls the stream's socket and a wake-up pipe, so nothing ever blocks on
the runtime: ``stop()`` (SIGTERM) returns at once, and the stream is closed by the thread that
read it. A runtime that is down, or a stream that breaks, is logged once and retried with
backoff (1 s, 2 s, 4 s, … up to a minute) while the watcher goes on with its other triggers;
each new subscription triggers one reconcile, for what started or stopped while nothing was
listening.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from reconciler import containers
from reconciler.containers import EventStream, RuntimeConfig, RuntimeUnreachable
from reconciler.watch.burst import Burst
from reconciler.watch.linkevents import summary

# As for link events: a burst settles within milliseconds, the cap bounds a steady trickle.
SETTLE = 0.1
MAX_DELAY = 0.5
RETRY_FIRST = 1.0
RETRY_MAX = 60.0
HEAD_TIMEOUT = 10.0  # podman answers the subscription at once; a service that does not is hung
SUBSCRIBED = "container events watched"


def _open(config: RuntimeConfig, namespaces: frozenset[str] | None) -> EventStream:
    return containers.connect(config).events(namespaces)


# What the watcher asks for: the runtime to follow and the namespaces (None: every one).
Target = tuple[RuntimeConfig, frozenset[str] | None]


class ContainerWatch:
    """Follow ``follow()``'s runtime from a background thread and call ``on_change(reason)``
    once per settled burst of container events; ``log(message, **fields)`` says when the
    runtime cannot be followed (once per outage) and when it is followed again."""

    def __init__(
        self,
        on_change: Callable[[str], None],
        log: Callable[..., None],
        *,
        settle: float = SETTLE,
        max_delay: float = MAX_DELAY,
        retry_first: float = RETRY_FIRST,
        retry_max: float = RETRY_MAX,
        head_timeout: float = HEAD_TIMEOUT,
        open_stream: Callable[[RuntimeConfig, frozenset[str] | None], EventStream] = _open,
    ) -> None:
        self._on_change, self._log, self._open_stream = on_change, log, open_stream
        self._burst = Burst(settle, max_delay)
        self._retry_first, self._retry_max = retry_first, retry_max
        self._head_timeout = head_timeout
        self._lock = threading.Lock()  # guards _wanted, set by the watcher's thread
        self._wanted: Target | None = None
        self._changed = False
        # Owned by the thread once it runs:
        self._target: Target | None = None
        self._stream: EventStream | None = None
        self._opened_at = 0.0
        self._ready = False
        self._failures = 0
        self._retry_at = 0.0
        self._problem: str | None = None  # the outage last logged, so it is logged once
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._wake_r, self._wake_w = -1, -1

    # -- public API -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("ContainerWatch already started")
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._run, name="bpfman-containerwatch", daemon=True)
        self._thread.start()

    def follow(self, config: RuntimeConfig | None, namespaces: Iterable[str] | None) -> None:
        """Follow ``config``'s runtime for containers of ``namespaces`` (None: of every
        namespace), or nothing (``config`` None). A change of either resubscribes; the same
        again changes nothing (an established stream is kept)."""
        wanted = None if config is None else (config, _frozen(namespaces))
        with self._lock:
            if wanted == self._wanted:
                return
            self._wanted, self._changed = wanted, True
        self._wake()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread, closing the stream; events not yet reported are dropped (the
        watcher is stopping too)."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self._wake()
        if thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                return  # a daemon thread: it closes the stream when it ends
        self._thread = None
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- the thread -------------------------------------------------------------------------

    def _wake(self) -> None:
        # BlockingIOError: the pipe is full, so a wake-up is pending anyway; OSError: stopped.
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        polled = -1
        try:
            while not self._stopping:
                now = time.monotonic()
                self._take_request()
                if self._target is not None and self._stream is None and now >= self._retry_at:
                    self._subscribe(now)
                fd = self._stream.fileno() if self._stream is not None else -1
                if fd != polled:
                    if polled >= 0:
                        poller.unregister(polled)
                    if fd >= 0:
                        poller.register(fd, select.POLLIN)
                    polled = fd
                timeout = self._timeout(time.monotonic())
                for ready_fd, _ in poller.poll(None if timeout is None else timeout * 1000):
                    if ready_fd == self._wake_r:
                        _drain(self._wake_r)
                    elif ready_fd == polled and self._stream is not None:
                        self._read()
                now = time.monotonic()
                late = now >= self._opened_at + self._head_timeout
                if self._stream is not None and not self._ready and late:
                    self._fail(f"no answer to the subscription within {self._head_timeout:g} s")
                self._flush_if_settled(now)
        except Exception as e:  # a bug: say so once, and leave the watcher its other triggers
            self._log(
                "container events: the watch stopped by a bug; containers are seen by interval",
                error=repr(e),
            )
        finally:
            self._close()

    def _timeout(self, now: float) -> float | None:
        """Seconds until the next deadline (a retry, the subscription's answer, a settled
        burst); None: none, sleep until woken or the stream speaks."""
        deadlines = []
        if self._target is not None and self._stream is None:
            deadlines.append(self._retry_at)
        if self._stream is not None and not self._ready:
            deadlines.append(self._opened_at + self._head_timeout)
        if (due := self._burst.due()) is not None:
            deadlines.append(due)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now)

    def _take_request(self) -> None:
        with self._lock:
            if not self._changed:
                return
            wanted, self._changed = self._wanted, False
        if wanted == self._target:
            return
        was = self._target
        self._close()
        self._target, self._failures, self._retry_at, self._problem = wanted, 0, 0.0, None
        if wanted is None and was is not None:
            self._log("container events: no manifest selects containers; not watching them")

    def _subscribe(self, now: float) -> None:
        assert self._target is not None
        config, namespaces = self._target
        try:
            self._stream = self._open_stream(config, namespaces)
        except RuntimeUnreachable as e:
            self._fail(str(e))
            return
        self._opened_at, self._ready = now, False

    def _read(self) -> None:
        assert self._stream is not None
        try:
            events = self._stream.read()
        except RuntimeUnreachable as e:
            self._fail(str(e))
            return
        if not self._ready and self._stream.ready:
            self._ready = True
            self._failures = 0
            config, namespaces = self._target or (None, None)
            self._log(
                "container events: watching" + (" again" if self._problem else ""),
                runtime=config.runtime if config else None,
                socket=config.socket if config else None,
                namespaces=",".join(sorted(namespaces)) if namespaces is not None else "*",
            )
            self._problem = None
            # What started or stopped while nothing listened (since the last reconcile listed
            # the containers, or during an outage) is seen by one reconcile now.
            self._note([SUBSCRIBED])
        self._note([e.describe() for e in events])

    def _fail(self, problem: str) -> None:
        self._close()
        self._failures += 1
        delay = min(self._retry_first * 2 ** min(self._failures - 1, 16), self._retry_max)
        self._retry_at = time.monotonic() + delay
        if problem != self._problem:  # once per outage, not once per retry
            self._log(
                "container events: cannot watch them; retrying with backoff, containers "
                "starting or stopping are seen by the interval meanwhile",
                error=problem,
            )
            self._problem = problem

    def _close(self) -> None:
        stream, self._stream = self._stream, None
        self._ready = False
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()

    def _note(self, changes: list[str]) -> None:
        self._burst.note(changes, time.monotonic())

    def _flush_if_settled(self, now: float) -> None:
        changes = self._burst.take(now)
        if changes is None:
            return
        reason = _reason(changes)
        try:
            self._on_change(reason)
        except Exception as e:
            self._log("container events: the trigger failed", reason=reason, error=repr(e))


def _reason(changes: list[str]) -> str:
    """One reason for a burst: the subscription notice alone only when nothing else happened
    (events name what the reconcile is about)."""
    named = [c for c in changes if c != SUBSCRIBED]
    return summary(named) if named else SUBSCRIBED


def _frozen(namespaces: Iterable[str] | None) -> frozenset[str] | None:
    return None if namespaces is None else frozenset(namespaces)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def selector_namespaces(calls: Iterable[Any]) -> frozenset[str | None]:
    """The namespaces the manifests' container selectors asked the host for, from a
    ``RecordingHost``'s calls (None: a selector of every namespace); empty when none did."""
    out: set[str | None] = set()
    for name, args, _answer in calls:
        if name == "containers" and args and isinstance(args[0], dict):
            out.add(args[0].get("namespace") or None)
    return frozenset(out)
