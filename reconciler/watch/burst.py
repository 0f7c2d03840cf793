"""A burst of changes, held until it settles: the debounce the watcher's event triggers share
(interface events, container events). A burst is due ``settle`` seconds after its last change,
or ``max_delay`` after its first, whichever comes first, so a steady trickle of changes cannot
postpone a reconcile for ever."""

from __future__ import annotations


class Burst:
    def __init__(self, settle: float, max_delay: float) -> None:
        self.settle, self.max_delay = settle, max_delay
        self._changes: list[str] = []
        self._first = self._last = 0.0

    def note(self, changes: list[str], now: float) -> None:
        if not changes:
            return
        if not self._changes:
            self._first = now
        self._last = now
        self._changes += changes

    def due(self) -> float | None:
        """When the burst held is due (a monotonic time), None when there is none."""
        if not self._changes:
            return None
        return min(self._last + self.settle, self._first + self.max_delay)

    def take(self, now: float) -> list[str] | None:
        """The changes of a burst that is due at ``now``, which is then over; None otherwise."""
        due = self.due()
        if due is None or now < due:
            return None
        changes, self._changes = self._changes, []
        return changes
