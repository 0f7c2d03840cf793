"""Container events for the watcher (docs/watch.md, docs/containers.md): the HTTP stream reader,
podman's event stream client against a fake service on a unix socket, and the watch that turns
events into debounced reconcile triggers, logs an outage once, retries with backoff and stops at
once. The real podman is in tests/containers/test_watch_containers.py."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.containers import ContainerEvent, RuntimeConfig, RuntimeUnreachable
from reconciler.containers.podman import Podman
from reconciler.containers.stream import ResponseReader, StreamError
from reconciler.plancache import RecordingHost
from reconciler.spec import load_desired
from reconciler.watch.containerevents import SUBSCRIBED, ContainerWatch, selector_namespaces
from tests.unit.spec_support import StubHost, write_tree
from tests.unit.test_containers import APP_XDP, RUNNING, UPROBE

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def event(action: str, ns: str | None = "shop", pod: str = "web-2", name: str = "app") -> bytes:
    attributes = {"name": f"{pod}-{name}", "image": "x", "app": "web"}
    if ns is not None:
        attributes |= {
            "io.kubernetes.pod.namespace": ns,
            "io.kubernetes.pod.name": pod,
            "io.kubernetes.container.name": name,
        }
    doc = {
        "status": action,
        "id": "c0ffee" * 10,
        "Type": "container",
        "Action": action,
        "Actor": {"ID": "c0ffee" * 10, "Attributes": attributes},
        "time": 1,
    }
    return json.dumps(doc).encode() + b"\n"


# --- the HTTP stream reader ---------------------------------------------------------------------


def test_a_chunked_stream_gives_its_lines_however_the_bytes_arrive() -> None:
    body = chunk(b'{"a": 1}\n{"b"') + chunk(b": 2}\n\n") + chunk(b'{"c": 3}\n')
    whole = HEAD + body
    for size in (1, 2, 3, 7, 64, len(whole)):
        reader = ResponseReader()
        lines = []
        for i in range(0, len(whole), size):
            lines += reader.feed(whole[i : i + size])
        assert reader.status == 200
        assert lines == [b'{"a": 1}', b'{"b": 2}', b'{"c": 3}'], size
        assert not reader.ended


def test_a_stream_ends_with_its_last_chunk_or_its_length() -> None:
    reader = ResponseReader()
    assert reader.feed(HEAD + chunk(b"one\n") + b"0\r\n\r\n") == [b"one"]
    assert reader.ended
    reader = ResponseReader()
    head = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 18\r\n\r\n"
    assert reader.feed(head + b'{"message": "bad"}') == [b'{"message": "bad"}']
    assert (reader.status, reader.ended) == (500, True)


def test_what_is_not_http_is_refused() -> None:
    with pytest.raises(StreamError, match="not an HTTP/1.1 response"):
        ResponseReader().feed(b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(StreamError, match="not hexadecimal"):
        ResponseReader().feed(HEAD + b"zz\r\n")
    reader = ResponseReader()
    assert reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Enc") == []
    assert not reader.head_done


# --- podman's event stream, against a fake service ------------------------------------------------


class FakeService:
    """A unix socket answering each connection with ``answer`` (bytes to send, then whether to
    keep the connection open); the request lines it received are kept."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.requests: list[str] = []
        self.conns: list[socket.socket] = []
        self.answer: list[bytes] = [HEAD]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            request = b""
            while b"\r\n\r\n" not in request:
                data = conn.recv(4096)
                if not data:
                    break
                request += data
            self.requests.append(request.decode().split("\r\n", 1)[0])
            for part in self.answer:
                conn.sendall(part)
            self.conns.append(conn)

    def send(self, data: bytes) -> None:
        self.conns[-1].sendall(data)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[FakeService]:
    s = FakeService(tmp_path / "api.sock")
    try:
        yield s
    finally:
        s.close()


def until(check: Callable[[], Any], what: str, patience: float = 5.0) -> Any:
    deadline = time.monotonic() + patience
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {patience:g}s: {what}")
        time.sleep(0.01)


def read_until(stream: Any, n: int) -> list[ContainerEvent]:
    got: list[ContainerEvent] = []

    def more() -> bool:
        got.extend(stream.read())
        return len(got) >= n

    until(more, f"{n} events")
    return got


def test_podman_events_are_filtered_to_pods_containers_of_the_namespaces(
    service: FakeService,
) -> None:
    stream = Podman(service.path).events(["shop"])
    try:
        until(lambda: stream.read() == [] and stream.ready, "the subscription answered")
        (request,) = service.requests
        method, target, _ = request.split(" ")
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
        assert method == "GET" and target.startswith("/v4.0.0/libpod/events?")
        assert query["stream"] == ["true"]
        filters = json.loads(query["filters"][0])
        assert filters["type"] == ["container"]
        assert set(filters["event"]) == {"start", "stop", "died", "remove"}
        assert filters["label"] == ["io.kubernetes.pod.namespace=shop"]
        service.send(
            chunk(event("start"))
            + chunk(event("start", ns=None))  # a plain container: never selected
            + chunk(event("start", ns="other"))  # another namespace
            + chunk(event("exec"))  # not a start or a stop
            + chunk(b"not json\n")
            + chunk(event("died", pod="web-3"))
        )
        got = read_until(stream, 2)
        assert [e.describe() for e in got] == [
            "container shop/web-2/app started",
            "container shop/web-3/app exited",
        ]
    finally:
        stream.close()


def test_several_namespaces_are_filtered_here_and_every_one_takes_all(
    service: FakeService,
) -> None:
    for namespaces, expected in ((["a", "b"], ["a", "b"]), (None, ["a", "b", "c"])):
        stream = Podman(service.path).events(namespaces)
        try:
            until(lambda s=stream: s.read() == [] and s.ready, "subscribed")
            target = service.requests[-1].split(" ")[1]
            filters = json.loads(
                urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)["filters"][0]
            )
            assert "label" not in filters  # podman 4 would AND two label filters
            service.send(b"".join(chunk(event("stop", ns=ns)) for ns in ("a", "b", "c")))
            got = read_until(stream, len(expected))
            assert [e.namespace for e in got] == expected
        finally:
            stream.close()


def test_a_stream_that_ends_or_is_refused_or_has_no_socket_is_unreachable(
    service: FakeService, tmp_path: Path
) -> None:
    stream = Podman(service.path).events(None)
    until(lambda: stream.read() == [] and stream.ready, "subscribed")
    service.conns[-1].shutdown(socket.SHUT_RDWR)
    with pytest.raises(RuntimeUnreachable, match="the event stream ended"):
        until(lambda: stream.read() and False, "never")
    assert stream.fileno() == -1  # closed

    body = b'{"cause": "x", "message": "bad filter", "response": 500}'
    service.answer = [
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    ]
    stream = Podman(service.path).events(None)
    with pytest.raises(RuntimeUnreachable, match="answered HTTP 500: bad filter"):
        until(lambda: stream.read() and False, "never")

    with pytest.raises(RuntimeUnreachable, match="the socket does not exist") as e:
        Podman(str(tmp_path / "none.sock")).events(None)
    assert f"unix://{tmp_path / 'none.sock'}" in str(e.value)


# --- the watch: debounced triggers, backoff, one line per outage ----------------------------------


class FakeStream:
    """An EventStream over a pipe: the test writes to ``feed`` to make it readable."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        self.ready = False
        self.queued: list[ContainerEvent] = []
        self.broken: str | None = None
        self.closed = False

    def fileno(self) -> int:
        return -1 if self.closed else self.r

    def read(self) -> list[ContainerEvent]:
        with contextlib.suppress(BlockingIOError):
            os.read(self.r, 4096)
        if self.broken:
            self.close()
            raise RuntimeUnreachable("podman", "/fake.sock", self.broken)
        self.ready = True
        out, self.queued = self.queued, []
        return out

    def push(self, *events: ContainerEvent, broken: str | None = None) -> None:
        self.queued += events
        self.broken = broken
        os.write(self.w, b"x")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.r)
            os.close(self.w)


class Harness:
    def __init__(self) -> None:
        self.triggers: list[str] = []
        self.logs: list[tuple[str, dict[str, Any]]] = []
        self.streams: list[FakeStream] = []
        self.opened: list[tuple[RuntimeConfig, frozenset[str] | None]] = []
        self.down: str | None = None  # the runtime cannot be reached: why

    def open(self, config: RuntimeConfig, namespaces: frozenset[str] | None) -> FakeStream:
        self.opened.append((config, namespaces))
        if self.down:
            raise RuntimeUnreachable("podman", config.socket, self.down)
        stream = FakeStream()
        self.streams.append(stream)
        stream.push()  # podman answers the subscription at once
        return stream

    def log(self, message: str, **fields: Any) -> None:
        self.logs.append((message, fields))

    def said(self, start: str) -> int:
        return sum(1 for message, _ in self.logs if message.startswith(start))


@pytest.fixture
def harness() -> Iterator[tuple[Harness, ContainerWatch]]:
    h = Harness()
    w = ContainerWatch(
        h.triggers.append,
        h.log,
        settle=0.02,
        max_delay=0.2,
        retry_first=0.02,
        retry_max=0.08,
        open_stream=h.open,
    )
    w.start()
    try:
        yield h, w
    finally:
        w.stop()
        for s in h.streams:
            s.close()


CONFIG = RuntimeConfig("podman", "/fake.sock")


def started(pod: str, action: str = "start") -> ContainerEvent:
    return ContainerEvent(action, "c" + pod, "shop", pod, "app")


def test_a_burst_of_events_is_one_trigger_naming_the_containers(
    harness: tuple[Harness, ContainerWatch],
) -> None:
    h, w = harness
    w.follow(CONFIG, ["shop"])
    until(lambda: h.triggers == [SUBSCRIBED], "the subscription's own reconcile")
    assert h.opened == [(CONFIG, frozenset({"shop"}))]
    assert h.said("container events: watching") == 1
    (stream,) = h.streams
    stream.push(started("web-2", "stop"), started("web-2", "died"), started("web-2", "start"))
    until(lambda: len(h.triggers) == 2, "one trigger for the restart")
    assert h.triggers[1] == (
        "container shop/web-2/app stopped; ... container shop/web-2/app started (3 changes)"
    )
    stream.push(started("web-3"))
    until(lambda: len(h.triggers) == 3, "a later event")
    assert h.triggers[2] == "container shop/web-3/app started"
    w.follow(CONFIG, ["shop"])  # the same again: the stream is kept
    time.sleep(0.05)
    assert len(h.opened) == 1 and not stream.closed


def test_an_outage_is_said_once_retried_with_backoff_and_recovered(
    harness: tuple[Harness, ContainerWatch],
) -> None:
    h, w = harness
    h.down = "the socket does not exist"
    w.follow(CONFIG, None)
    until(lambda: len(h.opened) >= 4, "retries")
    assert h.said("container events: cannot watch them") == 1
    assert h.triggers == []
    h.down = None
    until(lambda: h.said("container events: watching again") == 1, "recovered")
    until(lambda: h.triggers == [SUBSCRIBED], "a reconcile for what was missed")
    assert h.opened[-1] == (CONFIG, None)

    # The stream breaks: said again (a new outage), then followed again.
    h.streams[-1].push(broken="the event stream ended")
    until(lambda: h.said("container events: cannot watch them") == 2, "the break said")
    until(lambda: h.said("container events: watching again") == 2, "resubscribed")
    until(lambda: h.triggers == [SUBSCRIBED, SUBSCRIBED], "and reconciled")


def test_no_selector_left_stops_following_and_stop_is_prompt(
    harness: tuple[Harness, ContainerWatch],
) -> None:
    h, w = harness
    w.follow(CONFIG, ["shop"])
    until(lambda: h.triggers, "subscribed")
    w.follow(None, None)
    until(lambda: h.streams[0].closed, "the stream closed")
    assert h.said("container events: no manifest selects containers") == 1
    w.follow(RuntimeConfig("podman", "/other.sock"), ["shop"])
    until(lambda: len(h.streams) == 2, "subscribed to the other socket")
    # A subscription that is idle (nothing to read) does not hold up stop().
    started_at = time.monotonic()
    w.stop()
    assert not w.running
    assert h.streams[1].closed
    assert time.monotonic() - started_at < 5  # a bound on a hang, not a measurement


def test_the_namespaces_the_manifests_selectors_ask_for(tmp_path: Path) -> None:
    host = RecordingHost(StubHost(running=RUNNING))
    load_desired(write_tree(tmp_path, {"u.yaml": UPROBE, "x.yaml": APP_XDP}), host)
    assert selector_namespaces(host.calls) == frozenset({"shop"})
    host = RecordingHost(StubHost())
    host.labels()
    assert selector_namespaces(host.calls) == frozenset()  # nothing to follow
    host.containers({"pods": {}})
    assert selector_namespaces(host.calls) == frozenset({None})  # every namespace
