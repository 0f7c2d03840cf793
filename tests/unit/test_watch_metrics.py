"""The watcher's metrics, scraped over real HTTP from a server on 127.0.0.1 and parsed with
prometheus_client's own parser."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler import __version__
from reconciler.watch import status as ws
from reconciler.watch.metrics import MetricsServer, WatchMetrics, parse_listen
from reconciler.watch.status import Counts, WatchStatus


@pytest.fixture
def metrics() -> WatchMetrics:
    return WatchMetrics()


@pytest.fixture
def server(metrics: WatchMetrics) -> Iterator[MetricsServer]:
    s = MetricsServer(metrics, "127.0.0.1", 0)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _get(server: MetricsServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _scrape(server: MetricsServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, by name and labels."""
    code, text = _get(server, "/metrics")
    assert code == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_before_any_reconcile(server: MetricsServer) -> None:
    samples = _scrape(server)
    assert samples[("bpfman_reconciles_total", (("result", "applied"),))] == 0
    assert samples[("bpfman_reconciles_total", (("result", "failed"),))] == 0
    assert samples[("bpfman_drift_repairs_total", ())] == 0
    assert samples[("bpfman_source_fetch_errors_total", ())] == 0
    assert samples[("bpfman_webhook_requests_total", (("outcome", "unauthorized"),))] == 0
    assert samples[("bpfman_reconcile_duration_seconds_count", ())] == 0
    assert samples[("bpfman_last_success_timestamp_seconds", ())] == 0
    info = [k for k in samples if k[0] == "bpfman_build_info"]
    assert len(info) == 1 and ("version", __version__) in info[0][1]
    assert samples[info[0]] == 1


def test_metrics_after_updates(metrics: WatchMetrics, server: MetricsServer) -> None:
    metrics.observe_reconcile("applied", 0.3, now=1_700_000_000.0)
    metrics.observe_reconcile("no-changes", 0.02, now=1_700_000_060.0)
    metrics.observe_reconcile("failed", 7.0)
    metrics.set_managed_programs({"xdp": 3, "tc": 1})
    metrics.add_drift_repairs(2)
    metrics.add_drift_repairs(0)
    metrics.source_fetch_failed()
    metrics.webhook_request("accepted")
    metrics.webhook_request("unauthorized")
    metrics.webhook_request("unauthorized")
    samples = _scrape(server)
    assert samples[("bpfman_reconciles_total", (("result", "applied"),))] == 1
    assert samples[("bpfman_reconciles_total", (("result", "no-changes"),))] == 1
    assert samples[("bpfman_reconciles_total", (("result", "failed"),))] == 1
    assert samples[("bpfman_reconcile_duration_seconds_count", ())] == 3
    assert samples[("bpfman_reconcile_duration_seconds_sum", ())] == pytest.approx(7.32)
    assert samples[("bpfman_reconcile_duration_seconds_bucket", (("le", "0.05"),))] == 1
    assert samples[("bpfman_reconcile_duration_seconds_bucket", (("le", "0.5"),))] == 2
    assert samples[("bpfman_reconcile_duration_seconds_bucket", (("le", "+Inf"),))] == 3
    # A failure after the successes leaves the last success where it was.
    assert samples[("bpfman_last_success_timestamp_seconds", ())] == 1_700_000_060.0
    assert samples[("bpfman_managed_programs", (("kind", "xdp"),))] == 3
    assert samples[("bpfman_managed_programs", (("kind", "tc"),))] == 1
    assert samples[("bpfman_drift_repairs_total", ())] == 2
    assert samples[("bpfman_source_fetch_errors_total", ())] == 1
    assert samples[("bpfman_webhook_requests_total", (("outcome", "accepted"),))] == 1
    assert samples[("bpfman_webhook_requests_total", (("outcome", "unauthorized"),))] == 2

    # A kind that is no longer managed drops to 0.
    metrics.set_managed_programs({"xdp": 1})
    samples = _scrape(server)
    assert samples[("bpfman_managed_programs", (("kind", "xdp"),))] == 1
    assert samples[("bpfman_managed_programs", (("kind", "tc"),))] == 0


def test_registries_are_private() -> None:
    a, b = WatchMetrics(), WatchMetrics()  # the global registry would refuse duplicates
    a.source_fetch_failed()
    assert b"bpfman_source_fetch_errors_total 0.0" in b.exposition()
    assert b"python_gc" not in a.exposition()  # no default process/platform collectors


def test_healthz(server: MetricsServer) -> None:
    assert _get(server, "/healthz") == (200, "ok\n")


def test_readyz_after_first_success(metrics: WatchMetrics, server: MetricsServer) -> None:
    code, body = _get(server, "/readyz")
    assert code == 503 and "no successful reconcile" in body
    metrics.observe_reconcile("failed", 1.0)
    assert _get(server, "/readyz")[0] == 503
    metrics.observe_reconcile("applied", 1.0)
    assert _get(server, "/readyz") == (200, "ready\n")
    # A transient failure later does not make the watcher unready: it retries.
    metrics.observe_reconcile("failed", 1.0)
    assert _get(server, "/readyz")[0] == 200


def test_readyz_when_stalled(metrics: WatchMetrics, server: MetricsServer) -> None:
    st = WatchStatus()
    st.record_attempt("good")
    st.record_success("good", counts=Counts(added=1), programs_by_kind={"xdp": 1})
    metrics.observe_reconcile(st.last_result or "", 0.1)
    metrics.sync_status(st)
    assert _get(server, "/readyz")[0] == 200

    st.record_failure(
        "bad", "hosts/a.yaml:3: spec.x: expected an integer", reason=ws.VALIDATION_FAILED
    )
    metrics.observe_reconcile(st.last_result or "", 0.1)
    metrics.sync_status(st)
    code, body = _get(server, "/readyz")
    assert code == 503
    assert "stalled: ValidationFailed: hosts/a.yaml:3" in body
    assert _get(server, "/healthz")[0] == 200  # alive though not ready

    st.record_success("fixed")
    metrics.observe_reconcile(st.last_result or "", 0.1)
    metrics.sync_status(st)
    assert _get(server, "/readyz")[0] == 200
    assert _scrape(server)[("bpfman_managed_programs", (("kind", "xdp"),))] == 1


def test_suspended_plan_is_ready_without_a_success_timestamp(
    metrics: WatchMetrics, server: MetricsServer
) -> None:
    metrics.observe_reconcile("planned", 0.1)
    assert _get(server, "/readyz")[0] == 200
    assert _scrape(server)[("bpfman_last_success_timestamp_seconds", ())] == 0


def test_head_and_unknown_paths(server: MetricsServer) -> None:
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("HEAD", "/metrics")
        r = conn.getresponse()
        assert r.status == 200 and r.read() == b""
        assert int(r.getheader("Content-Length") or 0) > 0
    finally:
        conn.close()
    assert _get(server, "/nope")[0] == 404
    assert _get(server, "/metrics?x=1")[0] == 200


def test_server_binds_loopback_by_default(metrics: WatchMetrics) -> None:
    s = MetricsServer(metrics)
    with s:
        assert s.address[0] == "127.0.0.1"
        assert s.address[1] > 0
    with pytest.raises(RuntimeError):
        _ = s.address
    s.stop()  # stopping twice is harmless


def test_address_in_use_fails_at_start(metrics: WatchMetrics, server: MetricsServer) -> None:
    other = MetricsServer(metrics, *server.address)
    with pytest.raises(OSError):
        other.start()
    other.stop()


def test_server_restarts_after_stop(metrics: WatchMetrics) -> None:
    s = MetricsServer(metrics)
    s.start()
    s.stop()
    s.start()
    try:
        assert _get(s, "/healthz")[0] == 200
    finally:
        s.stop()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("9100", ("127.0.0.1", 9100)),
        (":9100", ("127.0.0.1", 9100)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:9100", ("::1", 9100)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["", "host:", "host:http", "1.2.3.4:70000", "::1:9100"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


def test_webhook_outcomes_are_the_receivers() -> None:
    from reconciler.watch import metrics, webhook

    assert metrics.WEBHOOK_OUTCOMES == webhook.OUTCOMES
