"""A registry connection closed under a request: an idempotent request is sent once more on a
new connection (what a kept-alive connection closed while idle by a registry, a proxy or a load
balancer needs); other requests, refusals and a second reset are errors as before. Against a
real HTTP server on 127.0.0.1 that resets the connections it is told to."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest
import requests

from reconciler.images import remote
from reconciler.images.settings import RegistrySettings


class Server:
    """Answers ``200 ok`` to each request, except that the connections numbered in ``resets``
    (from 1) are reset (RST) once their request has been read."""

    def __init__(self, resets: set[int]) -> None:
        self.resets, self.connections = resets, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v2/"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.recv(65536)
                if self.connections in self.resets:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    continue
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    s = requests.Session()
    s.mount("http://", remote._timeout_adapter(5.0))
    yield s
    s.close()


def test_a_get_whose_connection_is_reset_is_sent_once_more(session) -> None:
    server = Server({1})
    try:
        assert session.get(server.url).text == "ok"
        assert server.connections == 2
    finally:
        server.close()


def test_a_second_reset_is_the_error(session) -> None:
    server = Server({1, 2})
    try:
        with pytest.raises(requests.ConnectionError) as e:
            session.get(server.url)
        assert remote.was_reset(e.value) and server.connections == 2
    finally:
        server.close()


def test_a_post_is_never_sent_twice(session) -> None:
    server = Server({1})
    try:
        with pytest.raises(requests.ConnectionError):
            session.post(server.url, data=b"x")
        assert server.connections == 1
    finally:
        server.close()


def test_a_refused_connection_is_not_a_reset(session) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(requests.ConnectionError) as e:
        session.get(f"http://127.0.0.1:{port}/v2/")
    assert not remote.was_reset(e.value)


def test_the_first_probe_of_a_registry_is_sent_once_more_too() -> None:
    server = Server({1})
    try:
        host = server.url.split("/")[2]
        r = remote.Remote(RegistrySettings(insecure_registries=(host,), timeout=5.0), host)
        assert r._request_raw(server.url).text == "ok"
        assert server.connections == 2
    finally:
        server.close()
