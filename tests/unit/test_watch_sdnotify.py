"""systemd notifications reach a real notify socket, as systemd would receive them.

Each test binds an AF_UNIX datagram socket (a file, or an abstract ``@name``), points
``NOTIFY_SOCKET`` at it and reads what the :class:`Notifier` sent. Waits are bounded and generous;
nothing asserts how long anything took.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.watch.sdnotify import STATUS_MAX, Notifier, one_line

WAIT = 10.0  # seconds a message that must come may take on a slow, loaded machine
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes including the terminating NUL


class Listener:
    """The service manager's end: a bound datagram socket that collects messages."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)

    def next(self, timeout: float = WAIT) -> str | None:
        """The next message, or None if none comes within ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536).decode()
        except TimeoutError:
            return None

    def wait_for(self, wanted: str, timeout: float = WAIT) -> bool:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self.next(left) == wanted:
                return True
        return False

    def drain(self) -> list[str]:
        """Everything already queued, without waiting."""
        got = []
        while (msg := self.next(0.001)) is not None:
            got.append(msg)
        return got


@pytest.fixture
def notify_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    """A notify socket file in tmp_path (or a short temporary directory when tmp_path is too deep
    for sun_path), exported as NOTIFY_SOCKET with no watchdog."""
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    path = tmp_path / "notify.sock"
    short = None
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        short = tempfile.TemporaryDirectory(prefix="sdn")
        path = Path(short.name) / "n.sock"
    listener = Listener(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield listener
    listener.sock.close()
    if short is not None:
        short.cleanup()


def watchdog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sd-watchdog"]


def test_ready_status_and_stopping_are_sent_as_systemd_reads_them(notify_path: Listener) -> None:
    notify = Notifier()
    assert notify.enabled
    notify.ready("applied rev abc123: 3 added, 0 changed")
    assert notify_path.next() == "READY=1\nSTATUS=applied rev abc123: 3 added, 0 changed"
    notify.status("reconcile failed: manifests/xdp.yaml:4: unknown interface eth9")
    assert (
        notify_path.next()
        == "STATUS=reconcile failed: manifests/xdp.yaml:4: unknown interface eth9"
    )
    notify.stopping()
    assert notify_path.next() == "STOPPING=1"
    notify.ready()
    assert notify_path.next() == "READY=1"


def test_an_abstract_socket_name_works(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"bpfman-test-{os.getpid()}-{uuid.uuid4().hex}"
    listener = Listener("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        Notifier().ready("ok")
        assert listener.next() == "READY=1\nSTATUS=ok"
    finally:
        listener.sock.close()


def test_status_cannot_smuggle_in_another_assignment(notify_path: Listener) -> None:
    Notifier().status("bad\nREADY=1\r\n\x1b[2J  MAINPID=1\u2028end")
    assert notify_path.next() == "STATUS=bad READY=1 [2J MAINPID=1 end"


def test_status_is_cut_to_one_readable_line() -> None:
    long = one_line("x" * (STATUS_MAX * 3))
    assert len(long) == STATUS_MAX and long.endswith("…")
    assert one_line("name-\udcff") == "name-\udcff"  # not UTF-8: escaped when sent, not dropped


def test_a_file_name_that_is_not_utf8_still_gets_through(notify_path: Listener) -> None:
    Notifier().status("cannot read manifests/bad-\udcff.yaml")
    assert notify_path.next() == "STATUS=cannot read manifests/bad-\\udcff.yaml"


def test_watchdog_pings_arrive_while_the_loop_kicks(
    notify_path: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    with Notifier() as notify:
        assert notify.watchdog_interval == pytest.approx(0.1)
        assert len(watchdog_threads()) == 1
        assert notify_path.wait_for("WATCHDOG=1")
    assert watchdog_threads() == []


def test_watchdog_pid_of_this_process_enables_pings(
    notify_path: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    with Notifier():
        assert notify_path.wait_for("WATCHDOG=1")


@pytest.mark.parametrize("pid", [str(os.getppid()), "not-a-pid"])
def test_a_watchdog_meant_for_another_process_is_left_alone(
    notify_path: Listener, monkeypatch: pytest.MonkeyPatch, pid: str
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000")
    monkeypatch.setenv("WATCHDOG_PID", pid)  # variables inherited from the parent
    with Notifier() as notify:
        assert notify.watchdog_interval is None
        assert watchdog_threads() == []
        assert notify_path.next(timeout=0.2) is None  # 20 half-periods: nothing was sent


@pytest.mark.parametrize("usec", ["0", "-5", "soon", ""])
def test_no_watchdog_without_a_usable_period(
    notify_path: Listener, monkeypatch: pytest.MonkeyPatch, usec: str
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    with Notifier() as notify:
        assert notify.watchdog_interval is None
        assert watchdog_threads() == []


def test_without_notify_socket_everything_is_a_quiet_no_op(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "20000")  # meaningless without a socket to ping
    caplog.set_level(logging.DEBUG, logger="bpfman.sdnotify")
    with Notifier() as notify:
        assert not notify.enabled
        assert notify.watchdog_interval is None
        notify.ready("ok")
        notify.status("still ok")
        notify.kick()
        notify.stopping()
        assert watchdog_threads() == []
    assert caplog.records == []


@pytest.mark.parametrize("value", ["relative/notify.sock", "@", "vsock:2:1234"])
def test_a_notify_socket_we_cannot_speak_to_is_ignored(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    notify = Notifier()
    assert not notify.enabled
    notify.ready("ok")


def test_a_failed_send_is_logged_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    caplog.set_level(logging.DEBUG, logger="bpfman.sdnotify")
    Notifier().ready("ok")
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert "could not notify systemd" in caplog.text


def test_a_stalled_loop_stops_the_pings_and_a_kick_resumes_them(
    notify_path: Listener, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The loop's progress is read from an injected clock, so "stalled" is a fact the test sets,
    not a race against the machine's speed."""
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # pings every 0.05 s while the loop is alive
    caplog.set_level(logging.DEBUG, logger="bpfman.sdnotify")
    now = [0.0]
    with Notifier(clock=lambda: now[0]) as notify:
        assert notify_path.wait_for("WATCHDOG=1")

        now[0] = 1000.0  # the loop has not kicked for far longer than a watchdog period
        deadline = time.monotonic() + WAIT
        while "no progress" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "no progress" in caplog.text
        notify_path.drain()  # pings sent before the thread noticed
        assert notify_path.next(timeout=0.5) is None  # ten half-periods: no ping

        notify.kick()  # the loop is back
        assert notify_path.wait_for("WATCHDOG=1")
