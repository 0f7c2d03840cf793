"""The progress line of a long apply or destroy on a terminal: ``[3/8] ADDRESS (4.2s)``.

One line at the bottom of the terminal, rewritten in place (``\\r`` then erase-line,
``ESC[2K``): steps done of the total, the address (or dispatcher hook) of the step in progress,
and the time since the apply began, redrawn every :data:`TICK` seconds so a slow step still
shows time passing. The per-action lines scroll above it exactly as without it: everything else
written to stdout or stderr (a step's line, a log line, the interrupt notice, a test pause line)
goes through a :class:`~reconciler.terminal.SafeStream` whose overlay this is, which clears the
line first; the next step or tick draws it again, only at the start of a line. So the final
screen is the per-action log and the summary, as without a terminal, and no text is ever glued
to a fragment of the line. It is cleared for good when the apply ends, before the summary or
the error; a signal clears it before its handler runs (the second SIGINT kills at once).

When it is shown, decided once per apply (:func:`wanted`):

- stdout is a terminal. The line goes to stdout because it belongs with the per-action log
  there: one stream keeps the order of clears and lines exact, and stdout sent to a file or a
  pipe (``bpfman apply | tee log``) never gets a ``\\r``, even when stderr is a terminal;
- not ``--json``;
- ``TERM`` is not ``dumb`` or ``unknown``: such a terminal has no erase-line;
- the plan has more than :data:`HANDFUL` steps (a dispatcher hook's changes are one step).

``--no-color`` and ``NO_COLOR`` keep the line and drop only its bold counter: they concern
colour, not cursor control (https://no-color.org). The watcher never shows it: it logs, and
does not pass ``on_step`` to ``apply_plan``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any, TextIO

from reconciler.terminal import SafeStream, escape

HANDFUL = 5  # more steps than this get a progress line
TICK = 0.2  # seconds between redraws of the elapsed time
CLEAR = "\r\x1b[2K"  # to the start of the line, then erase all of it
_BOLD, _RESET = "\x1b[1m", "\x1b[0m"
_DUMB_TERMS = ("dumb", "unknown")


def wanted(
    stream: TextIO | SafeStream, json: bool, environ: Mapping[str, str] = os.environ
) -> bool:
    """Whether an apply writing to ``stream`` may show a progress line (the step count is
    checked later, by :meth:`ProgressLine.step`)."""
    if json or environ.get("TERM", "").strip() in _DUMB_TERMS:
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def elapsed_text(seconds: float) -> str:
    """``0.4s``, ``12.0s``, ``2m05s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def render(
    done: int, total: int, label: str, elapsed: float, width: int, colors: bool = False
) -> str:
    """The line, without cursor control: ``[done/total] LABEL (elapsed)``, at most
    ``width - 1`` columns (a line that reaches the last column wraps and could not be erased),
    the label cut in its middle when it does not fit, and left out when there is no room.
    ``label`` is escaped here: it comes from data."""
    counter = f"[{done}/{total}]"
    tail = f"({elapsed_text(elapsed)})"
    room = max(width, 2) - 1
    label = escape(label)
    text_room = room - len(counter) - len(tail) - 2  # the two spaces
    if label and text_room < len(label):
        label = _middle_cut(label, text_room) if text_room >= 9 else ""
    parts = [counter, label, tail] if label else [counter, tail]
    if len(" ".join(parts)) > room:
        parts = [counter]
    line = " ".join(parts)[:room]
    if colors and line.startswith(counter):
        return _BOLD + counter + _RESET + line[len(counter) :]
    return line


def _middle_cut(text: str, room: int) -> str:
    head = (room - 1) // 2
    tail = room - 1 - head
    return text[:head] + "…" + text[len(text) - tail :]


def _terminal_width(stream: TextIO | SafeStream) -> int:
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        columns = 0
    return columns or 80  # a new pseudo-terminal says 0 columns


class ProgressLine:
    """The progress line of one apply (see the module's docstring): a context manager, fed by
    ``apply_plan(on_step=line.step)``. Inert when ``out`` is None (not a terminal, ``--json``)
    and for a plan of at most :data:`HANDFUL` steps. ``clock``, ``width`` and ``interval``
    (None: no redraw between steps) are there for tests."""

    def __init__(
        self,
        out: SafeStream | None,
        others: tuple[SafeStream, ...] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        width: Callable[[], int] | None = None,
        interval: float | None = TICK,
    ) -> None:
        self._out = out
        self._streams = (out, *others) if out is not None else ()
        self._clock = clock
        self._width = width or (lambda: _terminal_width(out) if out is not None else 80)
        self._interval = interval
        self._lock = threading.RLock()  # RLock: a signal handler may run inside a write
        self._start = clock()
        self._active = False  # a long plan: the overlay is ours
        self._shown = False  # the line is on the screen now
        self._at_line_start = True  # where the last other write left the cursor
        self._done, self._total, self._label = 0, 0, ""
        self._signals: dict[int, Any] = {}
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    @classmethod
    def for_command(cls, json: bool) -> ProgressLine:
        """The line for this process's stdout and stderr (SafeStreams, as cli.main installs)."""
        out, err = sys.stdout, sys.stderr
        if not isinstance(out, SafeStream) or not wanted(out, json):
            return cls(None)
        return cls(out, (err,) if isinstance(err, SafeStream) and err is not out else ())

    def __enter__(self) -> ProgressLine:
        self._start = self._clock()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()

    def step(self, done: int, total: int, label: str) -> None:
        """``done`` of ``total`` steps are done; ``label`` is the one in progress ("" once all
        are)."""
        if self._out is None or (not self._active and total <= HANDFUL):
            return
        with self._lock:
            if not self._active:
                self._activate()
            self._done, self._total, self._label = done, total, label
            if self._at_line_start:
                self._draw()

    def close(self) -> None:
        """Clear the line for good and give the streams and the signals back."""
        with self._lock:
            self._clear()
            was_active, self._active = self._active, False
            if was_active:
                for stream in self._streams:
                    if stream.overlay is self:
                        stream.overlay = None
                self._restore_signals()
            self._stop.set()
        if self._ticker is not None:  # outside the lock: the ticker may be waiting for it
            self._ticker.join()
            self._ticker = None

    @contextmanager
    def around(self, stream: SafeStream, text: str) -> Iterator[None]:
        """Another write to a terminal stream (``terminal.Overlay``): the line is cleared
        before it; the next step or tick draws it again, if the write ended a line (the
        lines of a step come in a burst: redrawing between them would only flicker)."""
        with self._lock:
            self._clear()
            yield
            if text:
                self._at_line_start = text.endswith("\n")
                if self._at_line_start and stream is not self._out:
                    stream.flush()  # its line first, then ours on the other stream

    def redraw(self) -> None:
        """Draw the line again with the time now (the ticker's job)."""
        with self._lock:
            if self._active and self._at_line_start:
                self._draw()

    def _activate(self) -> None:
        self._active = True
        for stream in self._streams:
            stream.overlay = self
        self._wrap_signals()
        if self._interval is not None:
            self._ticker = threading.Thread(target=self._tick, name="bpfman-progress", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        assert self._interval is not None
        while not self._stop.wait(self._interval):
            self.redraw()

    def _draw(self) -> None:
        assert self._out is not None
        out = self._out
        line = render(
            self._done,
            self._total,
            self._label,
            self._clock() - self._start,
            self._width(),
            colors=out.colors,
        )
        out.write_control(CLEAR + line)
        self._shown = True

    def _clear(self) -> None:
        if self._shown and self._out is not None:
            self._shown = False
            self._out.write_control(CLEAR)

    def _wrap_signals(self) -> None:
        """SIGINT/SIGTERM clear the line before their handler (apply/interrupt.py) runs: its
        notice, or the kill of a second signal, then finds a clean line."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if callable(previous):
                handler = self._clearing(previous)
                self._signals[signum] = (previous, handler)
                signal.signal(signum, handler)

    def _clearing(self, previous: Callable[[int, FrameType | None], Any]) -> Callable[..., Any]:
        def handler(signum: int, frame: FrameType | None) -> Any:
            try:
                with self._lock:
                    self._clear()
            except (OSError, RuntimeError):  # inside a blocked write of stdout: leave it be
                pass
            return previous(signum, frame)

        return handler

    def _restore_signals(self) -> None:
        for signum, (previous, handler) in self._signals.items():
            if signal.getsignal(signum) is handler:  # not replaced since: ours to give back
                signal.signal(signum, previous)
        self._signals.clear()
