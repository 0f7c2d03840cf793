"""The watcher's webhook receiver: a push notification from a git host makes the watcher fetch now.

The receiver only authenticates requests and asks for a fetch; it never runs git and never
touches the kernel. Everything a stranger can send is bounded (body size, read time, number of
connections), because ``--webhook-listen`` may face a network the operator does not control.

    server = WebhookServer("127.0.0.1:9000", "/etc/bpfman/webhook-secret", on_trigger=fetch_now)
    server.start()          # background threads; ``server.address`` is the bound (host, port)
    ...
    server.stop()

Requests: ``POST /hook`` (or ``POST /``) with either

- ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body, keyed with the secret>``
  (GitHub, Gitea, Forgejo), or
- ``X-Gitlab-Token: <the secret>`` (GitLab).

Answers (short plain text, always ``Connection: close``): 202 accepted, 401 bad or missing
signature, 404 another path, 405 another method, 411 no ``Content-Length`` (chunked bodies are
refused), 413 body over ``max_body``, 400/408 a malformed or too slow request. Each request is
counted under one outcome (see ``OUTCOMES``) for the metrics, and logged in one line on the
``bpfman.watch.webhook`` logger; secrets and signature headers are never logged.

Floods: ``on_trigger`` runs in one dispatcher thread, one call at a time, through a
:class:`Trigger` that holds at most one pending request. Requests that arrive while a call runs
fold into a single further call after it, so a push during a fetch is never lost and a flood
costs at most one extra fetch.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from reconciler.files import NotReadable, read_regular
from reconciler.watch import listen

log = logging.getLogger("bpfman.watch.webhook")

DEFAULT_HOST = listen.DEFAULT_HOST
PATHS = ("/hook", "/")
MAX_BODY = 1 << 20  # GitHub caps payloads at 25 MB, but a push event is a few KiB
MAX_SECRET = 4096
READ_TIMEOUT = 10.0  # seconds per read of the request, and in all for the body
MAX_CONNECTIONS = 64

# Outcomes a request is counted under. "busy" is a connection refused because MAX_CONNECTIONS
# are open (it never became a request).
OUTCOMES = (
    "accepted",
    "unauthorized",
    "too_large",
    "bad_method",
    "not_found",
    "bad_request",
    "busy",
)

_EVENT = re.compile(r"[A-Za-z0-9 _.-]{1,64}")


class WebhookError(ValueError):
    """The webhook receiver cannot start: a bad listen address, secret file or bind."""


def parse_listen(text: str) -> tuple[str, int]:
    """:func:`reconciler.watch.listen.parse_listen`, failing with WebhookError."""
    return listen.parse_listen(text, WebhookError)


def read_secret(path: str | Path) -> bytes:
    """The shared secret in ``path``, without its trailing newline (editors and ``echo`` add
    one that the git host's copy does not have). WebhookError when it cannot serve."""
    where = f"webhook secret file {path}"
    try:
        data = read_regular(path, MAX_SECRET)
    except FileNotFoundError:
        raise WebhookError(f"{where}: does not exist") from None
    except NotReadable as e:
        raise WebhookError(f"{where}: {e}") from None
    except OSError as e:
        raise WebhookError(f"{where}: {e.strerror or e}") from None
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise WebhookError(f"{where}: is empty")
    try:
        if os.stat(path).st_mode & 0o077:
            log.warning("%s is readable by other users than its owner", where)
    except OSError:
        pass
    return data


class Trigger:
    """Coalesced requests for one action: at most one pending, at most one in flight.

    Producers call :meth:`request`; the one consumer loops on :meth:`take` ... :meth:`done`.
    A request made while the action runs is kept (pending), so what changed during a fetch is
    fetched by the next one; any more requests until then add nothing."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: str | None = None
        self._busy = False
        self._closed = False

    def request(self, reason: str) -> bool:
        """Ask for the action; False when one was already pending (this one folds into it)."""
        with self._cond:
            if self._closed or self._pending is not None:
                return False
            self._pending = reason
            self._cond.notify_all()
            return True

    def take(self, timeout: float | None = None) -> str | None:
        """Wait for a pending request and mark it in flight; its reason, or None on timeout or
        after :meth:`close`. Each reason taken must be followed by :meth:`done`."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._closed or (self._pending is not None and not self._busy), timeout
            )
            if self._closed or self._pending is None or self._busy:
                return None
            reason, self._pending, self._busy = self._pending, None, True
            return reason

    def done(self) -> None:
        """The action taken last has finished."""
        with self._cond:
            self._busy = False
            self._cond.notify_all()

    def close(self) -> None:
        """Wake the consumer for good; later requests are dropped."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def pending(self) -> bool:
        with self._cond:
            return self._pending is not None

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy


class WebhookServer:
    """The HTTP receiver. The listen address and secret are checked here, so that bad ones stop
    the watcher at start-up (WebhookError); :meth:`start` binds and serves in the background.

    ``on_trigger(reason)`` is called from one dispatcher thread, never concurrently: it should
    do the fetch (or wait for it), since that is what makes requests during a fetch coalesce.
    ``on_request(outcome)`` is called once per request from the handler threads, with one of
    ``OUTCOMES``; :attr:`counts` holds the same tallies."""

    def __init__(
        self,
        listen: str,
        secret_file: str | Path,
        on_trigger: Callable[[str], None],
        on_request: Callable[[str], None] | None = None,
        *,
        max_body: int = MAX_BODY,
        read_timeout: float = READ_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        if max_body < 0 or read_timeout <= 0 or max_connections < 1:
            raise ValueError("webhook: max_body, read_timeout and max_connections must be positive")
        self._listen = parse_listen(listen)
        self._secret = read_secret(secret_file)
        self.on_trigger = on_trigger
        self.on_request = on_request
        self.max_body = max_body
        self.read_timeout = read_timeout
        self.trigger = Trigger()
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._httpd: _HTTPServer | None = None
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> tuple[str, int]:
        """The bound host and port (the real port when 0 was asked for)."""
        if self._httpd is None:
            return self._listen
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def counts(self) -> dict[str, int]:
        """Requests so far by outcome."""
        with self._counts_lock:
            return dict(self._counts)

    def start(self) -> None:
        host, port = self._listen
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            httpd = _HTTPServer((host, port), _Handler, self, family)
        except OSError as e:
            raise WebhookError(
                f"webhook: cannot listen on {_join(host, port)}: {e.strerror or e}"
            ) from None
        self._httpd = httpd
        self._threads = [
            # serve_forever polls for stop() this often: a few cheap wakeups a second, for a
            # stop() that does not keep a SIGTERM waiting.
            threading.Thread(
                target=httpd.serve_forever, args=(0.1,), name="webhook-http", daemon=True
            ),
            threading.Thread(target=self._dispatch, name="webhook-trigger", daemon=True),
        ]
        for t in self._threads:
            t.start()
        log.info("webhook listening on http://%s%s", _join(*self.address), PATHS[0])

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, and wait up to ``timeout`` for a running ``on_trigger`` to return;
        a pending trigger is dropped. Connections being read end at their read timeout."""
        self.trigger.close()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        for t in self._threads:
            t.join(timeout)
        self._threads = []

    def __enter__(self) -> WebhookServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _dispatch(self) -> None:
        while (reason := self.trigger.take()) is not None:
            try:
                self.on_trigger(reason)
            except Exception:
                # The watcher reports its own fetch errors; this keeps the receiver alive.
                log.exception("webhook trigger failed")
            finally:
                self.trigger.done()

    def _count(self, outcome: str) -> None:
        with self._counts_lock:
            self._counts[outcome] += 1
        if self.on_request is not None:
            try:
                self.on_request(outcome)
            except Exception:
                log.exception("webhook request counter failed")


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a handler stuck reading must not keep the process alive
    request_queue_size = 128  # socketserver's 5 resets connections of a burst of pushes

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        owner: WebhookServer,
        family: socket.AddressFamily,
    ) -> None:
        self.address_family = family
        self.owner = owner
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the bound name up in DNS (getfqdn), which can stall.
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        # One thread per connection: without a cap, idle connections would be threads without end.
        if not self.owner._slots.acquire(blocking=False):
            log.warning("webhook: connection from %s refused, too many open", client_address[0])
            self.owner._count("busy")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.owner._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.owner._slots.release()


class _Refuse(Exception):
    def __init__(self, status: int, outcome: str, text: str) -> None:
        super().__init__(text)
        self.status, self.outcome, self.text = status, outcome, text


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # so that ``Expect: 100-continue`` can be refused early
    server_version = "bpfman-webhook"
    sys_version = ""

    @property
    def owner(self) -> WebhookServer:
        return cast(_HTTPServer, self.server).owner

    def setup(self) -> None:
        # What parse_request would set, for answering a request that never got that far.
        self.command, self.path, self.requestline, self.request_version = "", "", "", "HTTP/1.0"
        super().setup()
        self.connection.settimeout(self.owner.read_timeout)  # no read may block for ever

    def handle_one_request(self) -> None:
        # Every method comes here (not do_GET, do_POST...), so that each gets an answer and
        # a count: 405 for all but POST instead of http.server's 501.
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if len(self.raw_requestline) > 65536:
                self.requestline, self.request_version, self.command = "", "", ""
                raise _Refuse(414, "bad_request", "request line too long")
            if self.parse_request():
                self._handle()
        except _Refuse as r:
            self._answer(r.status, r.outcome, r.text)
        except TimeoutError:
            self._answer(408, "bad_request", "timed out")
        except OSError:
            self.close_connection = True
        self.close_connection = True

    def handle_expect_100(self) -> bool:
        return True  # sent by _handle once the headers pass, never for a body we would refuse

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own refusals (a malformed request line or header) come here.
        self._answer(code, "bad_request", message or "bad request")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # _log writes the one line per request

    def _handle(self) -> None:
        owner = self.owner
        if self.command != "POST":
            raise _Refuse(405, "bad_method", "only POST")
        if urlsplit(self.path).path not in PATHS:
            raise _Refuse(404, "not_found", "not found")
        length = self._content_length()
        expect = self.headers.get("Expect", "").lower() == "100-continue"
        if expect and self.request_version == "HTTP/1.1":
            self.send_response_only(100)
            self.end_headers()
            self.wfile.flush()
        body = self._read_body(length)
        source = self._authenticate(body)
        event = self.headers.get("X-GitHub-Event" if source == "github" else "X-Gitlab-Event", "")
        event = event if _EVENT.fullmatch(event) else "event"
        new = owner.trigger.request(f"webhook {source} {event}")
        self._answer(202, "accepted", "accepted" if new else "accepted, a fetch is already due")

    def _content_length(self) -> int:
        if "Transfer-Encoding" in self.headers:
            raise _Refuse(
                411, "bad_request", "chunked bodies are not accepted; send Content-Length"
            )
        values = self.headers.get_all("Content-Length") or []
        if not values:
            raise _Refuse(411, "bad_request", "Content-Length required")
        if len(values) > 1 or not (values[0].isascii() and values[0].strip().isdigit()):
            raise _Refuse(400, "bad_request", "bad Content-Length")
        length = int(values[0])
        if length > self.owner.max_body:
            raise _Refuse(413, "too_large", f"body over {self.owner.max_body} bytes")
        return length

    def _read_body(self, length: int) -> bytes:
        # The socket timeout bounds each read; the deadline bounds them all, against a client
        # that trickles a byte at a time.
        deadline = time.monotonic() + self.owner.read_timeout
        chunks, left = [], length
        while left:
            chunk = self.rfile.read1(min(left, 65536))
            if not chunk:
                raise _Refuse(400, "bad_request", "body shorter than Content-Length")
            chunks.append(chunk)
            left -= len(chunk)
            if left and time.monotonic() > deadline:
                raise _Refuse(408, "bad_request", "body too slow")
        return b"".join(chunks)

    def _authenticate(self, body: bytes) -> str:
        """``github`` or ``gitlab``, whichever header proved the sender knows the secret."""
        secret = self.owner._secret
        signature = self.headers.get("X-Hub-Signature-256")
        if signature is not None:
            expected = b"sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
            if hmac.compare_digest(expected, _latin1(signature.strip().lower())):
                return "github"
            raise _Refuse(401, "unauthorized", "bad signature")
        token = self.headers.get("X-Gitlab-Token")
        if token is not None:
            if hmac.compare_digest(secret, _latin1(token)):
                return "gitlab"
            raise _Refuse(401, "unauthorized", "bad token")
        raise _Refuse(401, "unauthorized", "X-Hub-Signature-256 or X-Gitlab-Token required")

    def _answer(self, status: int, outcome: str, text: str) -> None:
        self._log(status, outcome, text)
        self.owner._count(outcome)
        body = (text + "\n").encode()
        self.close_connection = True
        if self.request_version not in ("HTTP/1.0", "HTTP/1.1"):
            self.request_version = "HTTP/1.0"  # not 0.9, which would get the body alone
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            if status == 405:
                self.send_header("Allow", "POST")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            return
        if status in (411, 413):
            self._linger()

    def _linger(self) -> None:
        # Closing a socket with unread data makes the kernel send a reset, which can destroy
        # our answer before the client reads it. So stop writing, and discard (never keep) a
        # little of what the client still sends, for a moment.
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(min(1.0, self.owner.read_timeout))
            for _ in range(16):
                if not self.connection.recv(4096):
                    break
        except OSError:
            pass

    def _log(self, status: int, outcome: str, text: str) -> None:
        path = urlsplit(getattr(self, "path", "") or "").path[:100]
        level = logging.INFO if outcome == "accepted" else logging.WARNING
        log.log(
            level,
            "webhook %s %s %s from %s: %d %s (%s)",
            _printable(getattr(self, "command", "") or "-"),
            _printable(path) or "-",
            _printable(getattr(self, "request_version", "") or ""),
            self.client_address[0],
            status,
            outcome,
            _printable(text),  # http.server's messages quote the request line
        )


def _latin1(value: str) -> bytes:
    # Header values arrive decoded as Latin-1, so this gives back the bytes that were sent.
    return value.encode("latin-1", "replace")


def _printable(text: str) -> str:
    """``text`` safe for one log line (a request line is the client's to choose)."""
    return "".join(c if c.isprintable() else "?" for c in text[:100])
