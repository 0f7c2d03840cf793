"""The webhook receiver, over real HTTP on 127.0.0.1 (no mocks).

Whether a request triggered anything is read from the server's Trigger right after the answer:
the handler records the request before it answers, so "nothing pending, nothing running, no
call" then means there will be no call. Waits are generous bounds, never measurements.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from reconciler.watch.webhook import (
    Trigger,
    WebhookError,
    WebhookServer,
    parse_listen,
    read_secret,
)

SECRET = b"It's a Secret to Everybody"
WAIT = 30.0  # an upper bound for things that happen at once, so a broken test cannot hang


class Calls:
    """on_trigger for the tests: records reasons; with ``hold``, each call waits for release()."""

    def __init__(self, hold: bool = False) -> None:
        self.reasons: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.cond = threading.Condition()
        self.gate = threading.Event()
        if not hold:
            self.gate.set()

    def __call__(self, reason: str) -> None:
        with self.cond:
            self.reasons.append(reason)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.cond.notify_all()
        self.gate.wait(WAIT)
        with self.cond:
            self.in_flight -= 1
            self.cond.notify_all()

    def wait(self, n: int) -> None:
        """Until ``n`` calls have started (and the same number have finished if not held)."""
        with self.cond:
            ok = self.cond.wait_for(
                lambda: len(self.reasons) >= n and (self.in_flight == 0 or not self.gate.is_set()),
                WAIT,
            )
        assert ok, f"{n} trigger call(s) expected, saw {self.reasons}"


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def serve(secret_file: Path) -> Iterator[Callable[..., tuple[WebhookServer, Calls]]]:
    """Start a server on a free port; every server started is stopped, pass or fail."""
    servers: list[tuple[WebhookServer, Calls]] = []

    def start(hold: bool = False, **kwargs: object) -> tuple[WebhookServer, Calls]:
        calls = Calls(hold)
        server = WebhookServer("127.0.0.1:0", secret_file, calls, **kwargs)  # type: ignore[arg-type]
        server.start()
        servers.append((server, calls))
        return server, calls

    try:
        yield start
    finally:
        for server, calls in servers:
            calls.gate.set()
            server.stop(timeout=WAIT)


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def request(
    server: WebhookServer,
    body: bytes = b"{}",
    headers: dict[str, str] | None = None,
    path: str = "/hook",
    method: str = "POST",
) -> tuple[int, str, http.client.HTTPResponse]:
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=WAIT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode(), response
    finally:
        conn.close()


def github(server: WebhookServer, body: bytes = b'{"ref": "refs/heads/main"}') -> int:
    headers = {"X-Hub-Signature-256": sign(body), "X-GitHub-Event": "push"}
    return request(server, body, headers)[0]


def raw(server: WebhookServer, data: bytes) -> bytes:
    """Send ``data`` as is and read the answer until the server closes."""
    with socket.create_connection(server.address, timeout=WAIT) as s:
        s.sendall(data)
        return read_all(s)


def read_all(s: socket.socket) -> bytes:
    out = b""
    try:
        while chunk := s.recv(4096):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def untriggered(server: WebhookServer, calls: Calls) -> bool:
    return not server.trigger.pending and not server.trigger.busy and not calls.reasons


# --- authentication -----------------------------------------------------------------------


def test_good_github_signature_triggers(serve):
    server, calls = serve()
    body = b'{"ref": "refs/heads/main"}'
    status, text, _ = request(
        server, body, {"X-Hub-Signature-256": sign(body), "X-GitHub-Event": "push"}
    )
    assert (status, text) == (202, "accepted\n")
    calls.wait(1)
    assert calls.reasons == ["webhook github push"]
    assert server.counts == {"accepted": 1}


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"X-Hub-Signature-256": sign(b"another body")}, id="other-body"),
        pytest.param({"X-Hub-Signature-256": sign(b"{}", b"wrong secret")}, id="other-secret"),
        pytest.param({"X-Hub-Signature-256": sign(b"{}")[7:]}, id="no-prefix"),
        pytest.param({"X-Hub-Signature-256": ""}, id="empty"),
        pytest.param(
            {"X-Hub-Signature": "sha1=" + hmac.new(SECRET, b"{}", hashlib.sha1).hexdigest()},
            id="sha1-only",
        ),
        pytest.param({"X-Gitlab-Token": SECRET.decode() + "x"}, id="gitlab-longer"),
        pytest.param({"X-Gitlab-Token": SECRET.decode()[:-1]}, id="gitlab-shorter"),
        pytest.param({"X-Gitlab-Token": ""}, id="gitlab-empty"),
        # A wrong signature is not rescued by a right token: the first header present decides.
        pytest.param(
            {"X-Hub-Signature-256": sign(b"x"), "X-Gitlab-Token": SECRET.decode()}, id="both"
        ),
    ],
)
def test_bad_or_missing_credentials_are_refused(serve, headers):
    server, calls = serve()
    status, _, _ = request(server, b"{}", headers)
    assert status == 401
    assert untriggered(server, calls)
    assert server.counts == {"unauthorized": 1}


def test_good_gitlab_token_triggers(serve):
    server, calls = serve()
    headers = {"X-Gitlab-Token": SECRET.decode(), "X-Gitlab-Event": "Push Hook"}
    assert request(server, b"{}", headers)[0] == 202
    calls.wait(1)
    assert calls.reasons == ["webhook gitlab Push Hook"]


def test_signature_in_upper_case_hex_is_accepted(serve):
    server, calls = serve()
    body = b"{}"
    assert request(server, body, {"X-Hub-Signature-256": sign(body).upper()})[0] == 202


def test_an_odd_event_name_is_not_carried_into_the_reason(serve):
    server, calls = serve()
    body = b"{}"
    headers = {"X-Hub-Signature-256": sign(body), "X-GitHub-Event": "push\x1b[31m;rm -rf"}
    assert request(server, body, headers)[0] == 202
    calls.wait(1)
    assert calls.reasons == ["webhook github event"]


# --- what is refused before any authentication ---------------------------------------------


def test_body_over_the_limit_is_refused(serve):
    server, calls = serve(max_body=1024)
    body = b"x" * 1025
    status, _, _ = request(server, body, {"X-Hub-Signature-256": sign(body)})
    assert status == 413
    assert untriggered(server, calls)
    assert server.counts == {"too_large": 1}


def test_a_huge_declared_length_is_refused_without_waiting_for_the_body(serve):
    server, calls = serve(max_body=1024)
    answer = raw(server, b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 10737418240\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert untriggered(server, calls)


def test_expect_continue_is_refused_before_the_body(serve):
    server, calls = serve(max_body=1024)
    head = b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
    answer = raw(server, head)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in answer


def test_expect_continue_with_a_good_request(serve):
    server, calls = serve()
    body = b"{}"
    head = (
        "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n"
        f"X-Hub-Signature-256: {sign(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(server.address, timeout=WAIT) as s:
        s.sendall(head)
        assert s.recv(4096).startswith(b"HTTP/1.1 100 Continue\r\n")
        s.sendall(body)
        assert read_all(s).startswith(b"HTTP/1.1 202 ")
    calls.wait(1)


def test_a_body_of_exactly_the_limit_is_accepted(serve):
    server, calls = serve(max_body=1024)
    assert github(server, b"x" * 1024) == 202


@pytest.mark.parametrize(
    "head, status",
    [
        (b"POST /hook HTTP/1.1\r\nHost: x\r\n\r\n", 411),
        (
            b"POST /hook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\n{}\r\n0\r\n\r\n",
            411,
        ),
        (b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (
            b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
            400,
        ),
        (b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{}", 400),  # then EOF
        (b"NONSENSE\r\n\r\n", 400),
    ],
    ids=["no-length", "chunked", "negative", "twice", "short", "garbage"],
)
def test_malformed_requests(serve, head, status):
    server, calls = serve()
    with socket.create_connection(server.address, timeout=WAIT) as s:
        s.sendall(head)
        s.shutdown(socket.SHUT_WR)  # the "short" body ends here
        answer = read_all(s)
    assert answer.split(b"\r\n")[0].split(b" ")[1] == str(status).encode()
    assert untriggered(server, calls)
    assert server.counts == {"bad_request": 1}


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "BREW"])
def test_other_methods_are_not_allowed(serve, method):
    server, calls = serve()
    status, _, response = request(server, b"", {"X-Hub-Signature-256": sign(b"")}, method=method)
    assert status == 405
    assert response.getheader("Allow") == "POST"
    assert untriggered(server, calls)
    assert server.counts == {"bad_method": 1}


def test_paths(serve):
    server, calls = serve()
    body = b"{}"
    signed = {"X-Hub-Signature-256": sign(body)}
    assert request(server, body, signed, path="/elsewhere")[0] == 404
    assert request(server, body, signed, path="/hook/")[0] == 404
    assert untriggered(server, calls)
    assert request(server, body, signed, path="/")[0] == 202
    assert request(server, body, signed, path="/hook?from=github")[0] == 202
    assert server.counts == {"not_found": 2, "accepted": 2}


# --- floods and slow clients ---------------------------------------------------------------


def test_a_flood_gives_one_fetch_in_flight_and_one_more_after_it(serve):
    server, calls = serve(hold=True)
    assert github(server) == 202
    calls.wait(1)  # the first fetch is running, and held there

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(lambda _: github(server), range(50)))
    assert statuses == [202] * 50
    assert server.trigger.pending  # the pushes during the fetch are kept, as one
    assert len(calls.reasons) == 1

    calls.gate.set()
    calls.wait(2)
    with calls.cond:  # the second call has returned; is anything left to call?
        assert calls.cond.wait_for(lambda: calls.in_flight == 0, WAIT)
    assert not server.trigger.pending
    assert len(calls.reasons) == 2
    assert calls.max_in_flight == 1
    assert server.counts == {"accepted": 51}


def test_a_failing_trigger_does_not_stop_later_ones(serve, secret_file):
    seen: list[str] = []
    entered, release, second = threading.Event(), threading.Event(), threading.Event()

    def on_trigger(reason: str) -> None:
        seen.append(reason)
        if len(seen) == 1:
            entered.set()
            release.wait(WAIT)
            raise RuntimeError("fetch failed")
        second.set()

    server = WebhookServer("127.0.0.1:0", secret_file, on_trigger)
    with server:
        assert github(server) == 202
        assert entered.wait(WAIT)
        assert github(server) == 202  # pending while the first call runs
        release.set()
        assert second.wait(WAIT)
    assert len(seen) == 2


def test_a_client_that_stops_sending_does_not_hold_up_others(serve):
    server, calls = serve(read_timeout=1.0)
    with (
        socket.create_connection(server.address, timeout=WAIT) as mute,
        socket.create_connection(server.address, timeout=WAIT) as slow,
    ):
        mute.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\n")  # the headers never end
        slow.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        assert github(server) == 202
        calls.wait(1)
        # And the stalled ones are cut off by the read timeout, not left to hold a thread.
        assert read_all(mute).startswith(b"HTTP/1.1 408 ")
        assert read_all(slow).startswith(b"HTTP/1.1 408 ")
    assert server.counts == {"accepted": 1, "bad_request": 2}


def test_connections_over_the_cap_are_closed(serve):
    server, calls = serve(max_connections=2)
    with (
        socket.create_connection(server.address, timeout=WAIT) as a,
        socket.create_connection(server.address, timeout=WAIT) as b,
    ):
        a.sendall(b"POST")  # both are accepted and held in their handlers
        b.sendall(b"POST")
        third = socket.create_connection(server.address, timeout=WAIT)
        with third:
            assert read_all(third) == b""
        assert server.counts == {"busy": 1}


# --- counting and logging ------------------------------------------------------------------


def test_outcomes_go_to_the_callback(secret_file):
    outcomes: list[str] = []
    server = WebhookServer("127.0.0.1:0", secret_file, lambda _: None, outcomes.append)
    with server:
        github(server)
        request(server, b"{}")
        request(server, b"{}", method="GET")
    assert outcomes == ["accepted", "unauthorized", "bad_method"]


def test_one_log_line_per_request_and_no_secrets(serve, caplog):
    caplog.set_level(logging.INFO, logger="bpfman.watch.webhook")
    server, calls = serve()
    caplog.clear()
    body = b"{}"
    request(server, body, {"X-Hub-Signature-256": sign(body)})
    request(server, body, {"X-Gitlab-Token": SECRET.decode()})
    request(server, body, {"X-Hub-Signature-256": sign(b"nope")})
    request(server, body, {"X-Gitlab-Token": "guess"})
    lines = [r.getMessage() for r in caplog.records if r.name == "bpfman.watch.webhook"]
    assert len(lines) == 4
    assert [" 202 accepted" in x for x in lines] == [True, True, False, False]
    assert all(" 401 unauthorized" in x for x in lines[2:])
    text = caplog.text
    for secret in (SECRET.decode(), sign(body)[7:], sign(b"nope")[7:], "guess"):
        assert secret not in text


# --- start-up checks -----------------------------------------------------------------------


def test_secret_file_newline_is_stripped_once(tmp_path):
    for content, secret in [
        (b"abc\n", b"abc"),
        (b"abc\r\n", b"abc"),
        (b"abc", b"abc"),
        (b"abc\n\n", b"abc\n"),
        (b" abc ", b" abc "),
    ]:
        (tmp_path / "s").write_bytes(content)
        assert read_secret(tmp_path / "s") == secret


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "is a directory, not a regular file"),
        (lambda p: os.mkfifo(p), "is a FIFO (named pipe), not a regular file"),
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.write_bytes(b"\n"), "is empty"),
        (lambda p: p.write_bytes(b"x" * 5000), "is 5000 bytes, over the limit of 4 KiB"),
    ],
    ids=["missing", "directory", "fifo", "empty", "newline-only", "too-large"],
)
def test_a_secret_file_that_cannot_serve_is_an_error_at_start(tmp_path, make, words):
    path = tmp_path / "secret"
    make(path)
    with pytest.raises(WebhookError) as e:
        WebhookServer("127.0.0.1:0", path, lambda _: None)
    assert str(e.value) == f"webhook secret file {path}: {words}"


def test_a_port_in_use_is_an_error_at_start(secret_file):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = WebhookServer(f"127.0.0.1:{port}", secret_file, lambda _: None)
        with pytest.raises(WebhookError, match=rf"cannot listen on 127\.0\.0\.1:{port}: "):
            server.start()
        server.stop()


def test_ipv6_loopback(secret_file):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    server = WebhookServer("[::1]:0", secret_file, lambda _: None)
    with server:
        assert server.address[0] == "::1"
        assert github(server) == 202


@pytest.mark.parametrize(
    "text, address",
    [
        ("9000", ("127.0.0.1", 9000)),
        (":9000", ("127.0.0.1", 9000)),
        ("127.0.0.1:9000", ("127.0.0.1", 9000)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("localhost:9000", ("localhost", 9000)),
        ("[::1]:9000", ("::1", 9000)),
        ("[::]:0", ("::", 0)),
        (" 10.1.2.3:65535 ", ("10.1.2.3", 65535)),
    ],
)
def test_listen_addresses(text, address):
    assert parse_listen(text) == address


@pytest.mark.parametrize(
    "text, why",
    [
        ("", "empty"),
        ("127.0.0.1", "the port '127.0.0.1' is not a number"),
        ("127.0.0.1:", "no port"),
        ("host:http", "the port 'http' is not a number"),
        (":65536", "the port 65536 is over 65535"),
        (":-1", "the port '-1' is not a number"),
        ("::1:9000", "an IPv6 address needs brackets"),
        ("[::1:9000", "no ']' closes the IPv6 address"),
        ("[::1]9000", "a port must follow ']' as ':PORT'"),
        ("[nothost]:9000", "'nothost' is not an IPv6 address"),
        ("[127.0.0.1]:9000", "'127.0.0.1' is not an IPv6 address"),
        ("300.1.1.1:9000", "'300.1.1.1' is not an IPv4 address"),
        ("bad_host:9000", "'bad_host' is not a host name or IP address"),
        ("http://x:9000", "a URL is not an address"),
        (":९०००", "the port '९०००' is not a number"),
    ],
)
def test_bad_listen_addresses(text, why):
    with pytest.raises(ValueError) as e:
        parse_listen(text)
    assert str(e.value) == (
        f"listen address {text!r}: {why} "
        "(expected HOST:PORT, :PORT or PORT, e.g. 127.0.0.1:9000 or [::1]:9000)"
    )


# --- the coalescing object on its own ------------------------------------------------------


def test_trigger_coalesces():
    t = Trigger()
    assert t.take(timeout=0) is None
    assert t.request("first") is True
    assert t.request("second") is False  # folded into "first"
    assert t.take() == "first"
    assert t.request("during") is True  # kept for after the running one...
    assert t.request("during 2") is False
    assert t.take(timeout=0) is None  # ...but never run alongside it
    t.done()
    assert t.take() == "during"
    t.done()
    assert not t.pending and not t.busy
    t.close()
    assert t.request("late") is False
    assert t.take() is None
