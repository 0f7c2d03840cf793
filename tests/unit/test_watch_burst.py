"""The debounce of the watcher's event triggers: a burst is due after it settles, or after its
maximum delay however steadily changes keep coming."""

from reconciler.watch.burst import Burst


def test_a_burst_is_due_once_it_settles_or_at_its_maximum_delay() -> None:
    b = Burst(settle=0.1, max_delay=0.5)
    assert b.due() is None and b.take(10.0) is None
    b.note([], 10.0)  # nothing noted: no burst
    assert b.due() is None
    b.note(["eth0 up"], 10.0)
    b.note(["eth1 up"], 10.05)
    assert b.take(10.1) is None  # changes came 0.05 s ago
    assert b.take(10.15) == ["eth0 up", "eth1 up"]
    assert b.due() is None  # taken: over
    for i in range(10):  # a steady trickle, never settling
        b.note([f"change {i}"], 20.0 + i * 0.06)
    assert b.due() == 20.5
    assert b.take(20.5) == [f"change {i}" for i in range(10)]
