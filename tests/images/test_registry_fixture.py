"""The registry fixtures themselves: distribution API by hand, TLS, basic auth, blobs on disk."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import requests

from tests.images.registry import OCI_CONFIG, OCI_MANIFEST, Registry

LAYER_TYPE = "application/vnd.bpfman.test.layer.v1"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload(s: requests.Session, reg: Registry, repo: str, data: bytes) -> str:
    r = s.post(f"{reg.url}/v2/{repo}/blobs/uploads/", timeout=10)
    assert r.status_code == 202, r.text
    # distribution answers with a path; other registries may send an absolute URL.
    location = requests.compat.urljoin(reg.url, r.headers["Location"])
    r = s.put(location, params={"digest": sha256(data)}, data=data, timeout=10)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == sha256(data)
    return sha256(data)


def test_push_and_pull_an_oci_image_by_hand(registry: Registry) -> None:
    assert registry.url == f"http://{registry.host}"
    assert registry.host.startswith("127.0.0.1:")
    assert registry.ca_file is None and registry.auth is None
    s, repo = registry.session(), registry.repository()
    layer, config = b"\x7fELF pretend bytecode", b"{}"
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": upload(s, registry, repo, config),
                "size": 2,
            },
            "layers": [
                {
                    "mediaType": LAYER_TYPE,
                    "digest": upload(s, registry, repo, layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    r = s.put(
        f"{registry.url}/v2/{repo}/manifests/v1",
        data=manifest,
        headers={"Content-Type": OCI_MANIFEST},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == sha256(manifest)

    for ref in ("v1", sha256(manifest)):
        # distribution 2.8 hides OCI manifests from clients that do not name the media type.
        r = s.get(
            f"{registry.url}/v2/{repo}/manifests/{ref}",
            headers={"Accept": OCI_MANIFEST},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        assert r.content == manifest
        assert r.headers["Docker-Content-Digest"] == sha256(manifest)
        assert r.headers["Content-Type"] == OCI_MANIFEST

    r = s.get(f"{registry.url}/v2/{repo}/blobs/{sha256(layer)}", timeout=10)
    assert r.content == layer
    assert registry.blob_path(sha256(layer)).read_bytes() == layer


def test_tampered_blob_is_served_as_is(registry: Registry) -> None:
    repo = registry.repository()
    digest = registry.push_blob(repo, b"honest bytes")
    registry.blob_path(digest).write_bytes(b"tampered!")
    r = registry.session().get(f"{registry.url}/v2/{repo}/blobs/{digest}", timeout=10)
    assert r.status_code == 200
    assert r.content == b"tampered!"
    assert r.headers["Docker-Content-Digest"] == digest


def test_tls_registry_needs_its_ca_and_credentials(tls_registry: Registry) -> None:
    reg = tls_registry
    assert reg.url == f"https://{reg.host}"
    assert reg.ca_file is not None and reg.username and reg.password
    repo = reg.repository()
    digest, manifest = reg.push_image(repo, "v1", [(b"bytecode", LAYER_TYPE)])

    with reg.session(authenticated=False) as anon:
        r = anon.get(f"{reg.url}/v2/", timeout=10)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Basic ")
        r = anon.get(f"{reg.url}/v2/{repo}/manifests/v1", timeout=10)
        assert r.status_code == 401
        r = anon.get(f"{reg.url}/v2/", auth=(reg.username, "wrong"), timeout=10)
        assert r.status_code == 401

    with requests.Session() as untrusting:
        untrusting.trust_env = False
        with pytest.raises(requests.exceptions.SSLError):
            untrusting.get(f"{reg.url}/v2/", auth=reg.auth, timeout=10)

    port = reg.host.rsplit(":", 1)[1]
    with reg.session() as s:
        # The certificate names both 127.0.0.1 and localhost.
        for base in (reg.url, f"https://localhost:{port}"):
            r = s.get(
                f"{base}/v2/{repo}/manifests/{digest}",
                headers={"Accept": OCI_MANIFEST},
                timeout=10,
            )
            assert r.status_code == 200, r.text
            assert r.content == manifest
            assert r.headers["Docker-Content-Digest"] == digest


def test_stop_kills_the_registry(tmp_path: Path) -> None:
    reg = Registry.start(tmp_path / "reg")
    proc = reg._proc
    assert proc is not None and proc.poll() is None
    reg.stop()
    reg.stop()
    assert proc.returncode is not None
    assert "listening on" in reg.log()
