"""Tell systemd how the watcher is doing: ``READY``, ``STATUS``, ``STOPPING`` and watchdog pings.

This is systemd's notify protocol (``sd_notify(3)``) spoken directly: each message is one datagram
of newline-separated ``KEY=value`` lines sent over an ``AF_UNIX``/``SOCK_DGRAM`` socket whose
address systemd passes in ``NOTIFY_SOCKET`` (a file system path, or an abstract name written with
a leading ``@``). We do not use python-systemd: it is not published on PyPI as a wheel, so
installing it compiles against libsystemd's headers, and a few lines of socket code do the same.

Outside systemd (``NOTIFY_SOCKET`` unset) every method is a no-op, so the watcher calls them
unconditionally. A failed send is logged at debug level and never raised: reporting to the service
manager must not be able to stop a reconcile.

Watchdog (``WatchdogSec=`` sets ``WATCHDOG_USEC``): a background thread sends ``WATCHDOG=1`` every
half period, but only while the watcher loop shows progress by calling :meth:`Notifier.kick` (or
:meth:`~Notifier.ready`/:meth:`~Notifier.status`) within the last full period. A thread that pinged
unconditionally would keep a hung loop alive forever; a loop that pinged only from its own
iterations would be killed during a long ``--interval`` wait. So the loop must kick at least once
per :attr:`Notifier.watchdog_interval` - when it waits for the next trigger it should wake that
often, kick and go back to waiting - and a reconcile step that blocks for longer than the period
(a hung git fetch, a stuck kernel call) stops the pings: systemd then kills and restarts the
service within at most two periods of the last kick.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType

log = logging.getLogger("bpfman.sdnotify")

# systemd keeps at most 16 KiB of status text; a one-line summary needs far less, and a long
# error (a whole traceback) would only make `systemctl status` unreadable.
STATUS_MAX = 512

# Seconds one send may wait for room in the service manager's queue (see _send).
SEND_TIMEOUT = 1.0

# Line breaks of any kind (the protocol splits on "\n", so one in STATUS could smuggle in another
# assignment such as READY=1 or MAINPID=) and every other control character.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str, limit: int = STATUS_MAX) -> str:
    """``text`` as one line fit for ``STATUS=``: control characters become spaces, runs of
    whitespace collapse, and anything past ``limit`` characters is cut with an ellipsis."""
    flat = " ".join(_UNPRINTABLE.sub(" ", text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _socket_address(value: str) -> str | None:
    """The ``AF_UNIX`` address named by ``NOTIFY_SOCKET``, or None for a form we do not speak
    (systemd ≥ 254 can also pass ``vsock:``, which only matters inside VMs it manages)."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]  # Linux's abstract namespace: a leading NUL byte, no file
    if value.startswith("/"):
        return value
    return None


def _watchdog_usec(environ: Mapping[str, str], pid: int) -> int | None:
    """``WATCHDOG_USEC`` when it is meant for this process, as ``sd_watchdog_enabled(3)`` decides:
    a positive integer, and ``WATCHDOG_PID`` unset or equal to our pid (a child that inherited the
    variables must not ping for its parent)."""
    raw = environ.get("WATCHDOG_USEC")
    if not raw:
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.debug("ignoring WATCHDOG_USEC=%r: not an integer", raw)
        return None
    if usec <= 0:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != pid:
                return None
        except ValueError:
            log.debug("ignoring the watchdog: WATCHDOG_PID=%r is not a pid", owner)
            return None
    return usec


class Notifier:
    """systemd notifications for one long-running process.

    Typical use by the watcher loop::

        with Notifier() as notify:            # starts the watchdog thread if systemd asked for one
            result = reconcile()
            notify.ready(summary(result))     # after the first reconcile, whatever its result
            while not stopping:
                wait_for_trigger(timeout=notify.watchdog_interval)  # None: no bound needed
                notify.kick()
                ...
            notify.stopping()

    ``environ`` (default: the process environment, read once here) and ``clock`` (the monotonic
    clock progress is measured with) are there for tests.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        env = os.environ if environ is None else environ
        self._clock = clock
        raw = env.get("NOTIFY_SOCKET", "")
        self._address = _socket_address(raw) if raw else None
        if raw and self._address is None:
            log.debug("ignoring NOTIFY_SOCKET=%r: not a path or an @abstract name", raw)
        usec = _watchdog_usec(env, os.getpid()) if self._address else None
        self._period: float | None = usec / 1_000_000 if usec else None
        self._last_kick = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        """Whether there is a service manager to talk to."""
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between keep-alives (half of ``WatchdogSec``), which is also how often the loop
        must :meth:`kick`; None when systemd runs no watchdog for us."""
        return self._period / 2 if self._period else None

    def ready(self, status: str | None = None) -> None:
        """Start-up is complete: ``systemctl start`` returns and units ordered after us start."""
        self.kick()
        self._send("READY=1", status)

    def status(self, text: str) -> None:
        """Replace the one line ``systemctl status`` shows (e.g. the last reconcile's result)."""
        self.kick()
        self._send(None, text)

    def stopping(self, status: str | None = None) -> None:
        """We are shutting down (after SIGTERM); systemd shows the unit as deactivating."""
        self._send("STOPPING=1", status)

    def kick(self) -> None:
        """The loop is alive: the watchdog thread may keep pinging for one more period."""
        self._last_kick = self._clock()

    def start(self) -> None:
        """Start the watchdog thread, if systemd asked for keep-alives and it is not running."""
        if self._period is None or self._thread is not None:
            return
        self.kick()  # the loop is starting now: the first period counts from here
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._keep_alive, args=(self._period,), name="sd-watchdog", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the watchdog thread and wait for it (at most one send)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()

    def __enter__(self) -> Notifier:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _keep_alive(self, period: float) -> None:
        stalled = False
        while not self._stop.wait(period / 2):
            if self._clock() - self._last_kick <= period:
                stalled = False
                self._send("WATCHDOG=1", None)
            elif not stalled:
                stalled = True  # said once: systemd will restart us if the loop does not resume
                log.debug("watcher loop made no progress for %.1f s: watchdog pings stop", period)

    def _send(self, state: str | None, status: str | None) -> None:
        if self._address is None:
            return
        lines = [state] if state else []
        if status is not None:
            lines.append("STATUS=" + one_line(status))
        if not lines:
            return
        # A fresh socket per message, as sd_notify does: nothing to keep open or share between the
        # loop and the watchdog thread, and it costs microseconds once a reconcile or half-period.
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # A datagram send blocks while the receiver's queue is full; a service manager
                # that has not read for a second gets this message dropped, not our loop stuck.
                sock.settimeout(SEND_TIMEOUT)
                # backslashreplace: a status quoting a file name that is not UTF-8 still goes out
                sock.sendto("\n".join(lines).encode("utf-8", "backslashreplace"), self._address)
        except (OSError, ValueError) as err:  # ValueError: an address Python cannot encode
            log.debug("could not notify systemd at %r: %s", self._address, err)
