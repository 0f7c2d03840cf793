"""LinkWatch against the real kernel: veths created, deleted, renamed and set up with `ip` in a
network namespace of the test's own, and the callback the watcher would get."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from reconciler.watch.linkevents import OVERRUN, LinkWatch
from tests import support

pytestmark = pytest.mark.kernel

WAIT = 10.0  # a bound on waiting for a callback, never an expectation of speed


class Calls:
    """The reasons on_change was called with, for tests to wait on."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, reason: str) -> None:
        with self._cond:
            self.reasons.append(reason)
            self._cond.notify_all()

    def wait_for(self, check: Callable[[str], bool], what: str) -> str:
        """The first reason (old or new) that passes ``check``."""
        deadline = time.monotonic() + WAIT
        with self._cond:
            while True:
                for r in self.reasons:
                    if check(r):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no callback for {what}; got {self.reasons}")
                self._cond.wait(left)

    def clear(self) -> None:
        with self._cond:
            self.reasons.clear()


def _netns() -> Iterator[str]:
    name = support.unique("bpflw-")
    support.sh("ip", "netns", "add", name)
    try:
        yield name
    finally:
        support.sh("ip", "netns", "del", name, check=False)


ns = pytest.fixture(_netns)
other_ns = pytest.fixture(_netns)


def ip(netns: str, *args: str) -> None:
    support.sh("ip", "-n", netns, *args)


def add_veth(netns: str) -> tuple[str, str]:
    a, b = support.unique("lwa"), support.unique("lwb")
    ip(netns, "link", "add", a, "type", "veth", "peer", "name", b)
    return a, b


@pytest.fixture
def watch(ns: str) -> Iterator[tuple[LinkWatch, Calls]]:
    calls = Calls()
    lw = LinkWatch(calls, lambda: [f"/run/netns/{ns}"])
    lw.start()
    try:
        yield lw, calls
    finally:
        lw.stop()


def test_a_veth_added_is_reported(ns: str, watch: tuple[LinkWatch, Calls]) -> None:
    _, calls = watch
    a, _ = add_veth(ns)
    reason = calls.wait_for(lambda r: a in r, f"{a} added")
    assert "added" in reason and f"/run/netns/{ns}" in reason


def test_a_veth_deleted_is_reported(ns: str, watch: tuple[LinkWatch, Calls]) -> None:
    _, calls = watch
    a, b = add_veth(ns)
    calls.wait_for(lambda r: a in r, f"{a} added")
    calls.clear()
    ip(ns, "link", "del", a)  # takes its peer with it
    calls.wait_for(lambda r: f"interface {a} removed" in r or f"{b} removed" in r, "removal")


def test_a_veth_renamed_is_reported(ns: str, watch: tuple[LinkWatch, Calls]) -> None:
    _, calls = watch
    a, _ = add_veth(ns)
    calls.wait_for(lambda r: a in r, f"{a} added")
    calls.clear()
    new = support.unique("lwr")
    ip(ns, "link", "set", a, "name", new)
    calls.wait_for(lambda r: f"interface {a} renamed to {new}" in r, "rename")


def test_a_veth_set_up_is_reported(ns: str, watch: tuple[LinkWatch, Calls]) -> None:
    _, calls = watch
    a, _ = add_veth(ns)
    calls.wait_for(lambda r: a in r, f"{a} added")
    calls.clear()
    ip(ns, "link", "set", a, "up")
    calls.wait_for(lambda r: f"interface {a} set up" in r, "set up")


def test_updates_that_change_nothing_we_track_are_not_reported(
    ns: str, watch: tuple[LinkWatch, Calls]
) -> None:
    _, calls = watch
    a, _ = add_veth(ns)
    calls.wait_for(lambda r: a in r, f"{a} added")
    calls.clear()
    # An MTU change and an alias are RTM_NEWLINK too; then a sentinel that must be reported.
    ip(ns, "link", "set", a, "mtu", "1400")
    ip(ns, "link", "set", a, "alias", "not-interesting")
    sentinel, _ = add_veth(ns)
    calls.wait_for(lambda r: sentinel in r, "the sentinel veth")
    assert not any(a in r for r in calls.reasons), calls.reasons


def test_a_burst_is_coalesced(ns: str, watch: tuple[LinkWatch, Calls]) -> None:
    _, calls = watch
    names = [(support.unique("lwa"), support.unique("lwb")) for _ in range(10)]
    batch = "".join(f"link add {a} type veth peer name {b}\n" for a, b in names)
    support.sh("ip", "-n", ns, "-batch", "-", input=batch)
    # The sentinel's events are queued after the whole burst's: once it is reported, so is the
    # burst (a coalesced reason names its last change).
    sentinel, _ = add_veth(ns)
    calls.wait_for(lambda r: sentinel in r, "the sentinel veth")
    assert 1 <= len(calls.reasons) < 10, calls.reasons


def test_a_namespace_not_watched_is_not_reported(
    ns: str, other_ns: str, watch: tuple[LinkWatch, Calls]
) -> None:
    _, calls = watch
    elsewhere, _ = add_veth(other_ns)
    sentinel, _ = add_veth(ns)
    calls.wait_for(lambda r: sentinel in r, "the sentinel veth")
    assert not any(elsewhere in r or other_ns in r for r in calls.reasons), calls.reasons


def test_stop_ends_the_thread(ns: str) -> None:
    calls = Calls()
    lw = LinkWatch(calls, lambda: [f"/run/netns/{ns}"])
    lw.start()
    assert lw.running and lw.watched() == [f"/run/netns/{ns}"]
    lw.stop()
    assert not lw.running
    assert lw.watched() == []


def test_a_namespace_deleted_then_recreated(ns: str, watch: tuple[LinkWatch, Calls]) -> None:
    lw, calls = watch
    path = f"/run/netns/{ns}"
    add_veth(ns)
    support.sh("ip", "netns", "del", ns)
    calls.wait_for(lambda r: f"network namespace {path} disappeared" in r, "namespace gone")
    assert path not in lw.watched()  # our socket no longer holds the dead namespace alive
    support.sh("ip", "netns", "add", ns)  # the fixture deletes it again
    calls.wait_for(lambda r: f"network namespace {path} appeared" in r, "namespace back")
    calls.clear()
    a, _ = add_veth(ns)
    calls.wait_for(lambda r: a in r, f"{a} added in the recreated namespace")


def test_refresh_watches_namespaces_named_later(ns: str, other_ns: str) -> None:
    calls = Calls()
    wanted = [f"/run/netns/{ns}"]
    lw = LinkWatch(calls, lambda: list(wanted))
    lw.start()
    try:
        wanted.append(f"/run/netns/{other_ns}")
        lw.refresh_namespaces()
        assert lw.watched() == wanted
        calls.wait_for(lambda r: other_ns in r and "now watched" in r, "newly watched")
        a, _ = add_veth(other_ns)
        calls.wait_for(lambda r: a in r, f"{a} added in the namespace watched later")
        wanted.pop()
        lw.refresh_namespaces()
        assert lw.watched() == wanted[:1]
    finally:
        lw.stop()


def test_an_overrun_asks_for_a_full_reread(ns: str) -> None:
    """A callback that blocks stops the reading; a tiny receive buffer then overflows."""
    calls = Calls()
    release = threading.Event()

    def slow(reason: str) -> None:
        calls(reason)
        release.wait(WAIT)

    lw = LinkWatch(slow, lambda: [f"/run/netns/{ns}"], rcvbuf=4096)
    lw.start()
    try:
        first, _ = add_veth(ns)
        calls.wait_for(lambda r: first in r, "the first veth")  # the thread is now blocked
        names = [(support.unique("lwa"), support.unique("lwb")) for _ in range(10)]
        batch = "".join(f"link add {a} type veth peer name {b}\n" for a, b in names)
        support.sh("ip", "-n", ns, "-batch", "-", input=batch)
        release.set()
        calls.wait_for(lambda r: r.startswith(OVERRUN), "the overrun")
        # The re-read rebuilt what we know: a later removal is still seen as one.
        gone = names[3][0]
        ip(ns, "link", "del", gone)
        calls.wait_for(lambda r: f"interface {gone} removed" in r, "removal after the overrun")
    finally:
        release.set()
        lw.stop()


def _host_link_exists(name: str) -> bool:
    return support.sh("ip", "link", "show", name, check=False).returncode == 0


def test_the_host_namespace_by_default() -> None:
    calls = Calls()
    lw = LinkWatch(calls)  # namespaces default to [None]: the host's
    a, b = support.unique("lwa"), support.unique("lwb")
    lw.start()
    try:
        assert lw.watched() == [None]
        support.sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        reason = calls.wait_for(lambda r: f"interface {a} added" in r, f"{a} added in the host")
        assert "network namespace" not in reason
    finally:
        lw.stop()
        support.sh("ip", "link", "del", a, check=False)


def test_a_deleted_namespace_is_released(ns: str, watch: tuple[LinkWatch, Calls]) -> None:
    """Our socket holds a reference to its namespace: unless it is closed, the namespace and
    its veths outlive `ip netns del` (seen here through the veth's peer left in the host)."""
    _, calls = watch
    inside, host_end = support.unique("lwa"), support.unique("lwh")
    support.sh("ip", "link", "add", inside, "type", "veth", "peer", "name", host_end)
    try:
        support.sh("ip", "link", "set", inside, "netns", ns)
        calls.wait_for(lambda r: inside in r, f"{inside} moved into the namespace")
        support.sh("ip", "netns", "del", ns)
        calls.wait_for(lambda r: "disappeared" in r, "namespace gone")
        deadline = time.monotonic() + WAIT  # the kernel tears a namespace down asynchronously
        while _host_link_exists(host_end):
            assert time.monotonic() < deadline, f"{host_end} outlived its namespace's deletion"
            time.sleep(0.05)
    finally:
        support.sh("ip", "link", "del", host_end, check=False)
