"""The watcher's Prometheus metrics and its ``--metrics-listen`` HTTP endpoint.

The metrics live in a private registry, not prometheus_client's global one: the process
collectors and anything another import registers there would otherwise be exposed too, and
tests can make as many independent :class:`WatchMetrics` as they like.

The server answers three paths and never touches the kernel (it only reads what the reconcile
loop recorded):

- ``/metrics``: the text exposition format;
- ``/healthz``: 200 while the process serves requests at all;
- ``/readyz``: 200 once a reconcile has succeeded in this process and while the status is not
  Stalled, else 503 with the reason in the body.

    metrics = WatchMetrics()
    server = MetricsServer(metrics, *parse_listen("127.0.0.1:9100"))
    server.start()
    metrics.observe_reconcile("applied", 0.42)
    metrics.sync_status(status)
    server.stop()
"""

from __future__ import annotations

import logging
import platform
import socket
import socketserver
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from reconciler import __version__
from reconciler.watch import listen, webhook
from reconciler.watch.status import (
    APPLIED,
    FAILED,
    NO_CHANGES,
    PLANNED,
    REFUSED,
    STALLED,
    SUCCESS_RESULTS,
    TRUE,
    WatchStatus,
)

log = logging.getLogger(__name__)

DEFAULT_HOST = listen.DEFAULT_HOST  # metrics reveal what runs on the host: loopback unless asked
# From a no-op reconcile (milliseconds) to a large apply with verifier work (minutes).
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# Label values created up front, so that rate() and absent() work before the first of each.
RESULTS = (APPLIED, NO_CHANGES, PLANNED, FAILED, REFUSED)
# As the webhook receiver counts them: every label exists (at 0) before the first request.
WEBHOOK_OUTCOMES = webhook.OUTCOMES


class WatchMetrics:
    """The metrics of one watcher, and what ``/readyz`` answers from."""

    def __init__(self, version: str = __version__) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reconcile_duration = Histogram(
            "bpfman_reconcile_duration_seconds",
            "Time one reconcile took, from taking the lock to recording the result.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.reconciles = Counter(
            "bpfman_reconciles", "Reconciles by result.", ["result"], registry=r
        )
        self.managed_programs = Gauge(
            "bpfman_managed_programs", "Programs bpfman manages, by kind.", ["kind"], registry=r
        )
        self.drift_repairs = Counter(
            "bpfman_drift_repairs", "Changes made outside bpfman that it repaired.", registry=r
        )
        self.last_success = Gauge(
            "bpfman_last_success_timestamp_seconds",
            "When the last successful reconcile ended (seconds since the epoch).",
            registry=r,
        )
        self.source_fetch_errors = Counter(
            "bpfman_source_fetch_errors", "Failures to fetch or read the source.", registry=r
        )
        self.webhook_requests = Counter(
            "bpfman_webhook_requests", "Webhook requests by outcome.", ["outcome"], registry=r
        )
        self.build_info = Gauge(
            "bpfman_build_info",
            "Always 1; the labels say which bpfman and Python run.",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(version=version, python=platform.python_version()).set(1)
        for result in RESULTS:
            self.reconciles.labels(result=result)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhook_requests.labels(outcome=outcome)
        self._kinds: set[str] = set()
        # /readyz's inputs, read by server threads while the loop writes them.
        self._lock = threading.Lock()
        self._succeeded = False
        self._stalled: str | None = None

    # --- what the reconcile loop reports ---------------------------------------------------

    def observe_reconcile(
        self, result: str, duration_seconds: float | None = None, *, now: float | None = None
    ) -> None:
        """One reconcile ended with ``result`` (a ``last_result`` value of the status).

        ``planned`` (suspended, nothing applied) makes the watcher ready, as it works as
        configured, but is not a success for the timestamp: nothing reached the kernel."""
        self.reconciles.labels(result=result).inc()
        if duration_seconds is not None:
            self.reconcile_duration.observe(duration_seconds)
        if result in SUCCESS_RESULTS:
            self.last_success.set(time.time() if now is None else now)
        if result in SUCCESS_RESULTS or result == PLANNED:
            with self._lock:
                self._succeeded = True
                if result in SUCCESS_RESULTS:
                    self._stalled = None

    def set_managed_programs(self, by_kind: Mapping[str, int]) -> None:
        """The programs managed now. A kind no longer present drops to 0 rather than keeping
        its last value."""
        for kind in self._kinds - set(by_kind):
            self.managed_programs.labels(kind=kind).set(0)
        for kind, n in by_kind.items():
            self.managed_programs.labels(kind=kind).set(n)
        self._kinds |= set(by_kind)

    def add_drift_repairs(self, n: int = 1) -> None:
        if n > 0:
            self.drift_repairs.inc(n)

    def source_fetch_failed(self) -> None:
        self.source_fetch_errors.inc()

    def webhook_request(self, outcome: str) -> None:
        self.webhook_requests.labels(outcome=outcome).inc()

    def set_stalled(self, reason: str | None) -> None:
        """Stalled (``/readyz`` answers 503 with ``reason``), or not (None)."""
        with self._lock:
            self._stalled = reason

    def sync_status(self, status: WatchStatus) -> None:
        """Take what the status says after a transaction: programs by kind and Stalled."""
        self.set_managed_programs(status.programs_by_kind)
        c = status.condition(STALLED)
        if c.status == TRUE:
            self.set_stalled(f"{c.reason}: {c.message}" if c.message else c.reason)
        else:
            self.set_stalled(None)

    def readiness(self) -> tuple[bool, str]:
        with self._lock:
            if not self._succeeded:
                return False, "no successful reconcile yet"
            if self._stalled is not None:
                return False, f"stalled: {self._stalled}"
            return True, "ready"

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# --- the HTTP side --------------------------------------------------------------------------


def parse_listen(text: str) -> tuple[str, int]:
    """``--metrics-listen``'s address: :func:`reconciler.watch.listen.parse_listen`."""
    return listen.parse_listen(text)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck scrape must not keep the process from exiting

    def __init__(self, address: tuple[str, int], metrics: WatchMetrics) -> None:
        self.metrics = metrics
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN (a DNS query that can stall startup
        # for seconds); the name is only used in CGI environments.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server_version = f"bpfman/{__version__}"
    timeout = 10  # a client that connects and sends nothing does not hold a thread forever

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        metrics = cast(_Server, self.server).metrics
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._send(200, metrics.exposition(), CONTENT_TYPE_LATEST, body)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8", body)
        elif path == "/readyz":
            ready, reason = metrics.readiness()
            code = 200 if ready else 503
            self._send(code, reason.encode() + b"\n", "text/plain; charset=utf-8", body)
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain", body)

    def _send(self, code: int, data: bytes, content_type: str, body: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        # Scrapes every few seconds would drown the one-line-per-reconcile log.
        log.debug("metrics %s: " + format, self.address_string(), *args)


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port``, served by a thread.

    ``port`` 0 picks a free port; ``address`` says which once started. The socket is bound
    in :meth:`start`, so an address in use is an OSError there, not later in a thread."""

    def __init__(self, metrics: WatchMetrics, host: str = DEFAULT_HOST, port: int = 0) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError("the metrics server is not started")
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> None:
        if self._server is not None:
            return
        cls = _Server6 if ":" in self.host else _Server
        self._server = cls((self.host, self.port), self.metrics)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="bpfman-metrics",
            daemon=True,
        )
        self._thread.start()
        log.info("metrics on %s/metrics", self.url)

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
