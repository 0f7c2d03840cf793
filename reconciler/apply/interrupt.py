"""Stopping an apply between steps: SIGINT/SIGTERM, and the test-only pause points.

Signals: while an apply runs, the first SIGINT or SIGTERM only sets a flag. The step in progress
finishes (its kernel change verified and recorded), then the apply stops before the next step,
folds the journal into the state file and exits 1. A second signal while the step is still
running ends the process at once with the default action: that is a kill, which the journal's
intent lines make safe (see ``reconciler.state``).

Pause points (TEST ONLY, for the crash harness in ``tests/crash/``): with the environment variable
``BPFMAN_TEST_PAUSE_AFTER_STEP=k`` the apply, on reaching pause point
``BPFMAN_TEST_PAUSE_AT`` (default ``kernel``) of its k-th step, writes one line to stderr::

    BPFMAN-TEST-PAUSED step=<k> at=<point> pid=<pid> address=<address>

and blocks until SIGUSR1 (which lets the apply go on as if it had never paused: to hold an
apply mid-step while another bpfman is started), SIGINT or SIGTERM (which then stop the apply
after that step, as above) or a SIGKILL. Points, in the order a step reaches them:

- ``begun``: the intent line is in the journal, the kernel is untouched;
- ``staged``: the new program is loaded and pinned in ``%next``, not yet attached or swapped in
  (installs and replacements by the real kernel; for a dispatcher hook, the new dispatcher and
  its changed programs are loaded and pinned, not yet swapped in);
- ``swapped``: the new program is attached or swapped in from ``%next`` (for a dispatcher hook:
  the new dispatcher runs, or the last one was removed), its pins not yet moved into place;
- ``committing``: half of the commit is done: the new maps and link are in place, ``prog`` not
  yet (installs and replacements by the real kernel, dispatcher components included);
- ``detached``: an unload has detached the program and unpinned nothing yet (real kernel);
- ``kernel``: the step's kernel change is complete, and not yet recorded (the worst window);
- ``recorded``: the step's record is in the journal;
- ``compacted``: after the last step, ``state.json`` holds every record and the journal it
  folds in is not yet removed (reached once per apply, with the number of the last step).

The kernel-side points (``staged`` to ``detached``) are reached only by steps that do that
kind of work (the apply hears of them through ``Kernel.reporting_steps``, which only the real
kernel calls); the crash tests in ``tests/crash/`` try every one at every step.

Steps are counted from 1 in execution order; all the changes of one dispatcher hook are one step.
Nothing here is a user interface: the variables are read only to make crashes reproducible.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

PAUSE_STEP_ENV = "BPFMAN_TEST_PAUSE_AFTER_STEP"
PAUSE_AT_ENV = "BPFMAN_TEST_PAUSE_AT"
PAUSE_MARKER = "BPFMAN-TEST-PAUSED"
POINTS = (
    "begun",
    "staged",
    "swapped",
    "committing",
    "detached",
    "kernel",
    "recorded",
    "compacted",
)


class Interrupt:
    """The stop flag an apply polls between steps."""

    def __init__(self) -> None:
        self.signum: int | None = None
        pause = os.environ.get(PAUSE_STEP_ENV, "")
        self.pause_step = int(pause) if pause.isdigit() else None
        self.pause_at = os.environ.get(PAUSE_AT_ENV, "kernel")
        self._paused = False
        if self.pause_step is not None and self.pause_at not in POINTS:
            raise ValueError(f"{PAUSE_AT_ENV}={self.pause_at!r}: one of {', '.join(POINTS)}")

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handler(self, signum: int, _frame: FrameType | None) -> None:
        if self.signum is not None:
            # The second signal: give up on finishing the step; the journal covers a kill.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        sys.stderr.write(
            f"\nbpfman: received {self.name}; finishing the current step, then stopping "
            "(send it again to stop at once)\n"
        )
        sys.stderr.flush()

    @contextmanager
    def handling(self) -> Iterator[Interrupt]:
        """Catch SIGINT and SIGTERM for the duration of the block."""
        old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def checkpoint(self, step: int, point: str, address: str) -> None:
        """A pause point (test only): block here if the environment asks for it."""
        if step != self.pause_step or point != self.pause_at or self._paused:
            return
        self._paused = True  # once: a point a step reaches again (several components) goes on
        resumed = False

        def resume(_signum: int, _frame: FrameType | None) -> None:
            nonlocal resumed
            resumed = True

        old = signal.signal(signal.SIGUSR1, resume)  # before the line: a test acts on it
        try:
            sys.stderr.write(
                f"{PAUSE_MARKER} step={step} at={point} pid={os.getpid()} address={address}\n"
            )
            sys.stderr.flush()
            while self.signum is None and not resumed:
                time.sleep(0.02)
        finally:
            signal.signal(signal.SIGUSR1, old)
