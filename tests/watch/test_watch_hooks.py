"""Webhooks reach a running watcher: a signed push triggers a reconcile, a bad signature gets 401
and triggers nothing; the counts show in the metrics. Real HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.cli.conftest import tracepoint_manifest
from tests.watch.test_watch_dir import TP_O, Watch, eventually, source, watch  # noqa: F401

pytestmark = pytest.mark.kernel

SECRET = b"s3cret-for-tests"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, body: bytes, signature: str | None) -> int:
    headers = {"Content-Type": "application/json", "X-GitHub-Event": "push"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    req = urllib.request.Request(f"http://127.0.0.1:{port}/hook", body, headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_signed_pushes_trigger_a_reconcile_and_bad_ones_do_not(
    watch: Watch,  # noqa: F811
    tmp_path: Path,
) -> None:
    src = source(tmp_path)
    (src / "fw.yaml").write_text(tracepoint_manifest("tp", TP_O.name, "syscalls/sys_enter_getpid"))
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET + b"\n")
    secret.chmod(0o600)
    hook, metrics = free_port(), free_port()
    watch.start(
        "--interval",
        "3600",
        "--webhook-listen",
        f"127.0.0.1:{hook}",
        "--webhook-secret-file",
        str(secret),
        "--metrics-listen",
        str(metrics),
        str(src),
    )
    eventually(lambda: "result=applied" in watch.text(), "the first reconcile")
    n = len(watch.reconciles())

    body = b'{"ref": "refs/heads/main"}'
    assert post(hook, body, "sha256=" + "0" * 64) == 401
    assert post(hook, body, None) == 401
    good = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    assert post(hook, body, good) == 202
    eventually(lambda: len(watch.reconciles()) > n, "a reconcile after the push")
    assert 'reason="webhook github push"' in watch.reconciles()[-1]
    assert len(watch.reconciles()) == n + 1  # the two bad ones triggered nothing
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10).read()
    assert b'bpfman_webhook_requests_total{outcome="unauthorized"} 2.0' in text
    assert b'bpfman_webhook_requests_total{outcome="accepted"} 1.0' in text
    assert SECRET.decode() not in watch.text()
    assert watch.stop() == 0


def test_a_webhook_needs_a_secret(watch: Watch, tmp_path: Path) -> None:  # noqa: F811
    p = subprocess.run(
        watch.cli("watch", "--webhook-listen", "0", str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1
    assert p.stderr.startswith("Error: --webhook-listen needs --webhook-secret-file")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--metrics-listen", "::1:9100"], "Error: --metrics-listen: listen address '::1:9100'"),
        (["--metrics-listen", "host:http"], "is not a number"),
        (["--webhook-listen", "1.2.3.4.5:80", "--webhook-secret-file", "/dev/null"], "IPv4"),
    ],
)
def test_bad_listen_addresses_are_start_up_errors(
    watch: Watch,  # noqa: F811
    tmp_path: Path,
    flags: list[str],
    message: str,
) -> None:
    p = subprocess.run(
        watch.cli("watch", *flags, str(tmp_path)), capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 1, p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr
