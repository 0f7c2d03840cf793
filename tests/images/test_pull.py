"""`bpfman image build|pull|inspect` against real registries (tests/images/registry.py): what is
pulled is compared with the object that was pushed and with what the registry itself reports;
every tampering is refused and leaves nothing in the cache."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.images.registry import Registry

REPO = Path(__file__).resolve().parents[2]
BPFMAN = str(REPO / ".venv" / "bin" / "bpfman")
BYTECODE = REPO / "manifests" / "examples" / "bytecode"
XDP = BYTECODE / "xdp_counter.o"
TCX = BYTECODE / "tcx_counter.o"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class Host:
    """One host's bpfman: its own state dir (and image cache) and host config."""

    def __init__(self, tmp: Path, **images: object) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.state = tmp / "state"
        self.config = tmp / "config.yaml"
        self.configure(**images)

    def configure(self, **images: object) -> None:
        self.config.write_text(json.dumps({"images": images}) if images else "")

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BPFMAN_", "REQUESTS_"))}
        p = subprocess.run(
            [BPFMAN, "--state-dir", str(self.state), "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        if ok and p.returncode != 0:
            raise AssertionError(f"bpfman {' '.join(args)} failed:\n{p.stdout}{p.stderr}")
        if not ok:
            assert p.returncode == 1, p.stdout + p.stderr
            assert p.stderr.count("Error:") == 1, p.stderr
        return p

    def pull_json(self, ref: str, *flags: str) -> dict:
        return json.loads(self.run("image", "pull", ref, "--json", *flags).stdout)

    def cached(self) -> set[str]:
        blobs = self.state / "images" / "blobs" / "sha256"
        return {f"sha256:{p.name}" for p in blobs.iterdir()} if blobs.is_dir() else set()

    def objects(self) -> list[Path]:
        d = self.state / "images" / "objects" / "sha256"
        return sorted(d.iterdir()) if d.is_dir() else []


def plain_host(tmp: Path, registry: Registry, **more: object) -> Host:
    return Host(tmp, insecure_registries=[registry.host], **more)


def registry_digest(registry: Registry, repository: str, ref: str) -> str:
    """What the registry itself says the manifest's digest is."""
    accept = ", ".join(
        [
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
        ]
    )
    with registry.session() as s:
        r = s.get(f"{registry.url}/v2/{repository}/manifests/{ref}", headers={"Accept": accept})
        r.raise_for_status()
        return r.headers["Docker-Content-Digest"]


def test_an_image_built_and_pushed_is_pulled_back_byte_for_byte(registry, tmp_path):
    repo = registry.repository("xdp")
    ref = f"{registry.host}/{repo}:v1"
    builder = plain_host(tmp_path / "builder", registry)
    out = builder.run("image", "build", "--bytecode", str(XDP), "--tag", ref, "--push").stdout
    digest = out.strip().rsplit("@", 1)[1].split()[0]
    assert registry_digest(registry, repo, "v1") == digest

    host = plain_host(tmp_path / "host", registry)
    image = host.pull_json(ref)
    assert image["digest"] == digest and image["pulled"]
    assert Path(image["object"]).read_bytes() == XDP.read_bytes()
    assert image["programs"] == {"xdp_stats": "xdp"}
    assert image["maps"] == {"xdp_stats_map": "percpu_array"}
    # Again, with the default policy of inspect (IfNotPresent): from the cache, no network.
    registry.stop()
    again = json.loads(host.run("image", "inspect", ref, "--json").stdout)
    assert again["digest"] == digest and not again["pulled"]
    assert again["elf"]["functions"] == {"xdp_stats": "xdp"}


def _layer(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(out.getvalue())


def _config(labels: dict[str, str], arch: str = "amd64") -> bytes:
    return json.dumps({"architecture": arch, "os": "linux", "config": {"Labels": labels}}).encode()


LABELS = {"io.ebpf.programs": '{"xdp_stats":"xdp"}', "io.ebpf.maps": '{"xdp_stats_map":"hash"}'}


def test_an_image_made_by_another_tool_is_read(registry, tmp_path):
    """Pushed with plain HTTP requests, as any image builder would, with other files beside the
    object and an older-style name."""
    repo = registry.repository("other")
    layer = _layer({"./README": b"hi", "./bpf_x86_bpfel.o": XDP.read_bytes()})
    digest, _ = registry.push_image(repo, "v1", [(layer, OCI_LAYER)], config=_config(LABELS))
    image = plain_host(tmp_path, registry).pull_json(f"{registry.host}/{repo}:v1")
    assert image["digest"] == digest
    assert Path(image["object"]).read_bytes() == XDP.read_bytes()


def test_a_multi_platform_image_gives_this_hosts_object(registry, tmp_path):
    repo = registry.repository("multi")
    ref = f"{registry.host}/{repo}:v1"
    host = plain_host(tmp_path, registry)
    host.run(
        "image", "build", "--platform", f"linux/amd64={XDP}", "--platform", f"linux/arm64={TCX}",
        "--tag", ref, "--push",
    )  # fmt: skip
    image = json.loads(
        host.run("image", "inspect", ref, "--json", "--pull-policy", "Always").stdout
    )
    assert sorted(image["platforms"]) == ["linux/amd64", "linux/arm64"]
    assert image["digest"] == registry_digest(registry, repo, "v1")
    assert image["manifestDigest"] != image["digest"]
    assert Path(image["object"]).read_bytes() == XDP.read_bytes()

    only_arm = f"{registry.host}/{repo}:arm"
    host.run("image", "build", "--platform", f"linux/arm64={TCX}", "--tag", only_arm, "--push")
    p = plain_host(tmp_path / "other", registry).run("image", "pull", only_arm, ok=False)
    assert "no image for this host's platform linux/amd64 (the index has: linux/arm64)" in p.stderr


def _push_xdp(registry: Registry, repo: str, tag: str = "v1") -> tuple[str, str, bytes]:
    """(manifest digest, layer digest, manifest bytes)"""
    layer = _layer({"prog.o": XDP.read_bytes()})
    digest, raw = registry.push_image(repo, tag, [(layer, OCI_LAYER)], config=_config(LABELS))
    return digest, json.loads(raw)["layers"][0]["digest"], raw


def test_a_blob_altered_on_the_registry_is_refused_and_nothing_is_kept(registry, tmp_path):
    repo = registry.repository("tamper")
    _, layer_digest, _ = _push_xdp(registry, repo)
    path = registry.blob_path(layer_digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    host = plain_host(tmp_path, registry)
    p = host.run("image", "pull", f"{registry.host}/{repo}:v1", ok=False)
    assert "does not match its digest" in p.stderr and layer_digest in p.stderr
    assert layer_digest not in host.cached() and host.objects() == []
    assert not list((host.state / "images" / "tmp").iterdir())


@pytest.mark.parametrize("how", ["truncated", "grown"])
def test_a_blob_of_the_wrong_size_is_refused(registry, tmp_path, how):
    repo = registry.repository(how)
    _, layer_digest, _ = _push_xdp(registry, repo)
    path = registry.blob_path(layer_digest)
    data = path.read_bytes()
    path.write_bytes(data[:-100] if how == "truncated" else data + b"x" * 100)
    host = plain_host(tmp_path, registry)
    p = host.run("image", "pull", f"{registry.host}/{repo}:v1", ok=False)
    said = "the download ended after" if how == "truncated" else "sent more than"
    assert said in p.stderr
    assert layer_digest not in host.cached() and host.objects() == []


def test_a_manifest_that_is_not_what_was_asked_for_is_refused(registry, tmp_path):
    repo = registry.repository("manifest")
    digest, _, raw = _push_xdp(registry, repo)
    host = plain_host(tmp_path, registry)
    # The registry serves altered manifest bytes, by tag (its own header then disagrees) and by
    # digest (the content is not the digest asked for).
    path = registry.blob_path(digest)
    path.write_bytes(raw.replace(b'"schemaVersion":2', b'"schemaVersion":2 '))
    by_tag = host.run("image", "pull", f"{registry.host}/{repo}:v1", ok=False)
    assert "refusing it" in by_tag.stderr
    by_digest = host.run("image", "pull", f"{registry.host}/{repo}@{digest}", ok=False)
    assert "not the one asked for" in by_digest.stderr
    assert host.cached() == set()


def test_oversized_parts_and_unexpected_media_types_are_refused_before_download(registry, tmp_path):
    repo = registry.repository("bounds")
    layer = _layer({"prog.o": XDP.read_bytes()})
    layer_digest = registry.push_blob(repo, layer)
    config_digest = registry.push_blob(repo, _config(LABELS))
    host = plain_host(tmp_path, registry)

    def push(tag: str, layer_desc: dict) -> str:
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(_config(LABELS)),
            },
            "layers": [layer_desc],
        }
        registry.push_manifest(repo, tag, json.dumps(manifest).encode())
        return host.run("image", "pull", f"{registry.host}/{repo}:{tag}", ok=False).stderr

    big = push("big", {"mediaType": OCI_LAYER, "digest": layer_digest, "size": 1 << 30})
    assert "over the 67108864 byte bound" in big
    odd = push(
        "odd",
        {"mediaType": "application/vnd.example.binary", "digest": layer_digest, "size": len(layer)},
    )
    assert "layer media type 'application/vnd.example.binary'" in odd
    assert host.cached() == set()


def test_a_moved_tag_is_seen_by_always_and_not_by_if_not_present(registry, tmp_path):
    repo = registry.repository("moved")
    ref = f"{registry.host}/{repo}:v1"
    first, _, _ = _push_xdp(registry, repo)
    host = plain_host(tmp_path, registry)
    assert host.pull_json(ref)["digest"] == first
    layer = _layer({"tcx.o": TCX.read_bytes()})
    labels = {"io.ebpf.programs": '{"tcx_stats":"tcx"}'}
    moved, _ = registry.push_image(repo, "v1", [(layer, OCI_LAYER)], config=_config(labels))
    assert moved != first
    assert host.pull_json(ref, "--pull-policy", "IfNotPresent")["digest"] == first
    assert host.pull_json(ref, "--pull-policy", "Always")["digest"] == moved
    assert host.pull_json(ref, "--pull-policy", "Never")["digest"] == moved
    # A pinned digest always means that image, whatever the tag says now.
    pinned = host.pull_json(f"{registry.host}/{repo}:v1@{first}", "--pull-policy", "Always")
    assert Path(pinned["object"]).read_bytes() == XDP.read_bytes()


def test_a_registry_that_is_down(registry, tmp_path):
    repo = registry.repository("down")
    ref = f"{registry.host}/{repo}:v1"
    digest, _, _ = _push_xdp(registry, repo)
    warm = plain_host(tmp_path / "warm", registry)
    warm.pull_json(ref)
    registry.stop()
    assert warm.pull_json(ref, "--pull-policy", "IfNotPresent")["digest"] == digest
    assert "cannot reach registry" in warm.run("image", "pull", ref, ok=False).stderr
    cold = plain_host(tmp_path / "cold", registry)
    p = cold.run("image", "pull", ref, "--pull-policy", "IfNotPresent", ok=False)
    assert f"cannot reach registry {registry.host}" in p.stderr
    never = cold.run("image", "pull", ref, "--pull-policy", "Never", ok=False)
    assert "not in the image cache and its pull policy is Never" in never.stderr


def test_a_mirror_serves_images_named_by_their_upstream_registry(registry, tmp_path):
    repo = "bpfman-bytecode/xdp-pass"
    digest, _, _ = _push_xdp(registry, repo, "latest")
    host = plain_host(tmp_path, registry, mirrors={"quay.io": registry.host})
    image = host.pull_json("quay.io/bpfman-bytecode/xdp-pass:latest")
    assert image["digest"] == digest
    assert image["reference"] == "quay.io/bpfman-bytecode/xdp-pass:latest"


def test_plain_http_only_for_registries_the_host_lists(registry, tmp_path):
    repo = registry.repository("insecure")
    _push_xdp(registry, repo)
    p = Host(tmp_path).run("image", "pull", f"{registry.host}/{repo}:v1", ok=False)
    assert "images.insecure_registries" in p.stderr


def _auth_file(path: Path, registry: Registry, password: str | None = None) -> Path:
    user, real = registry.auth or ("", "")
    token = base64.b64encode(f"{user}:{password or real}".encode()).decode()
    path.write_text(json.dumps({"auths": {registry.host: {"auth": token}}}))
    return path


def test_tls_with_a_private_ca_and_basic_auth(tls_registry, tmp_path):
    registry = tls_registry
    repo = registry.repository("tls")
    ref = f"{registry.host}/{repo}:v1"
    digest, _, _ = _push_xdp(registry, repo)
    auth = _auth_file(tmp_path / "auth.json", registry)
    host = Host(tmp_path / "good", ca_bundle=str(registry.ca_file), auth_file=str(auth))
    assert host.pull_json(ref)["digest"] == digest

    no_ca = Host(tmp_path / "no-ca", auth_file=str(auth)).run("image", "pull", ref, ok=False)
    assert "TLS verification failed" in no_ca.stderr and "images.ca_bundle" in no_ca.stderr
    no_auth = Host(tmp_path / "no-auth", ca_bundle=str(registry.ca_file))
    p = no_auth.run("image", "pull", ref, ok=False)
    assert "asks for a user and password" in p.stderr
    wrong = _auth_file(tmp_path / "wrong.json", registry, password="not-it")
    bad = Host(tmp_path / "bad", ca_bundle=str(registry.ca_file), auth_file=str(wrong))
    p = bad.run("image", "pull", ref, ok=False)
    assert "refused access (401)" in p.stderr and registry.password not in p.stderr
    assert bad.cached() == set()


def test_build_and_push_to_a_registry_with_auth(tls_registry, tmp_path):
    registry = tls_registry
    repo = registry.repository("push")
    ref = f"{registry.host}/{repo}:v1"
    auth = _auth_file(tmp_path / "auth.json", registry)
    host = Host(tmp_path, ca_bundle=str(registry.ca_file), auth_file=str(auth))
    out = host.run("image", "build", "--bytecode", str(XDP), "--tag", ref, "--push").stdout
    assert out.strip().endswith("(pushed)")
    assert registry_digest(registry, repo, "v1") in out


def test_a_host_config_with_a_wrong_images_setting_is_an_error(tmp_path):
    host = Host(tmp_path)
    host.config.write_text("images:\n  mirror: {quay.io: x}\n")
    p = host.run("image", "pull", "quay.io/x/y:v1", ok=False)
    assert "mirror" in p.stderr and str(host.config) in p.stderr


DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def test_a_docker_manifest_list_is_read_as_an_index(registry, tmp_path):
    repo = registry.repository("dockerlist")
    layer = _layer({"prog.o": XDP.read_bytes()})
    config = _config(LABELS)
    layer_digest = registry.push_blob(repo, layer)
    config_digest = registry.push_blob(repo, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "digest": layer_digest,
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    child = registry.push_manifest(repo, "amd64", manifest, DOCKER_MANIFEST)
    entry = {"mediaType": DOCKER_MANIFEST, "digest": child, "size": len(manifest)}
    listing = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_LIST,
            "manifests": [
                {**entry, "platform": {"os": "linux", "architecture": "s390x"}},
                {**entry, "platform": {"os": "linux", "architecture": "amd64"}},
            ],
        }
    ).encode()
    top = registry.push_manifest(repo, "v1", listing, DOCKER_LIST)
    image = plain_host(tmp_path, registry).pull_json(f"{registry.host}/{repo}:v1")
    assert image["digest"] == top and image["manifestDigest"] == child
    assert sorted(image["platforms"]) == ["linux/amd64", "linux/s390x"]
    assert Path(image["object"]).read_bytes() == XDP.read_bytes()


def test_pulls_at_once_into_one_cache_are_safe(registry, tmp_path):
    repo = registry.repository("concurrent")
    ref = f"{registry.host}/{repo}:v1"
    digest, _, _ = _push_xdp(registry, repo)
    host = plain_host(tmp_path, registry)
    argv = [BPFMAN, "--state-dir", str(host.state), "--config", str(host.config), "image",
            "pull", ref, "--json"]  # fmt: skip
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(6)]  # fmt: skip
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    for out, _ in outs:
        image = json.loads(out)
        assert image["digest"] == digest
        assert Path(image["object"]).read_bytes() == XDP.read_bytes()
    assert not list((host.state / "images" / "tmp").iterdir())


def test_a_registry_with_bearer_tokens(token_registry, tmp_path):
    registry, server = token_registry
    user = (server.username, server.password)
    auth = tmp_path / "auth.json"
    token = base64.b64encode(":".join(user).encode()).decode()
    auth.write_text(json.dumps({"auths": {registry.host: {"auth": token}}}))
    private = f"{registry.host}/team/xdp:v1"
    public = f"{registry.host}/public/xdp:v1"
    host = plain_host(tmp_path / "host", registry, auth_file=str(auth))
    for ref in (private, public):
        host.run("image", "build", "--bytecode", str(XDP), "--tag", ref, "--push")
    # The registry's challenge names the actions in no fixed order ("pull,push" or "push,pull").
    granted = {
        (who, scope.rsplit(":", 1)[0], frozenset(scope.rsplit(":", 1)[1].split(",")))
        for who, scope in server.issued
    }
    assert (server.username, "repository:team/xdp", frozenset({"pull", "push"})) in granted

    fresh = plain_host(tmp_path / "fresh", registry, auth_file=str(auth))
    assert Path(fresh.pull_json(private)["object"]).read_bytes() == XDP.read_bytes()
    anonymous = plain_host(tmp_path / "anonymous", registry)
    assert anonymous.pull_json(public)["digest"]
    p = anonymous.run("image", "pull", private, ok=False)
    assert "refused access (401)" in p.stderr, p.stderr
    wrong = tmp_path / "wrong.json"
    wrong.write_text(
        json.dumps({"auths": {registry.host: {"auth": base64.b64encode(b"tokenuser:no").decode()}}})
    )
    p = plain_host(tmp_path / "wrong", registry, auth_file=str(wrong)).run(
        "image", "pull", private, ok=False
    )
    assert "refused to authenticate" in p.stderr and "images.auth_file" in p.stderr, p.stderr
    assert server.password not in p.stderr


def test_a_registry_that_stops_answering_fails_the_pull_instead_of_hanging_it(tmp_path):
    """It answers /v2/ and then nothing: with images.timeout the pull fails, saying so (a plan,
    or the watcher's reconcile, would otherwise wait forever)."""
    import http.server
    import threading

    stop = threading.Event()

    class Stalls(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/v2/":
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            stop.wait(60)  # never answers the manifest within the client's timeout

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalls)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = f"127.0.0.1:{server.server_address[1]}"
        h = Host(tmp_path / "host", insecure_registries=[host], timeout=1)
        p = h.run("image", "pull", f"{host}/stalled/xdp:v1", ok=False)
        assert "timed out" in p.stderr and host in p.stderr, p.stderr
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def test_an_unreachable_registry_is_asked_once_per_command_not_once_per_image(tmp_path):
    """A plan naming many images of one registry that does not answer fails each at once after
    the first wait, and says what to do."""
    import socket
    import threading

    from reconciler.images import ImageError
    from reconciler.images.pull import Puller
    from reconciler.images.reference import parse
    from reconciler.images.settings import RegistrySettings
    from reconciler.images.store import Store

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []

    def accept() -> None:  # takes connections and never answers
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    host = f"127.0.0.1:{listener.getsockname()[1]}"
    try:
        settings = RegistrySettings(insecure_registries=(host,), timeout=0.5)
        puller = Puller(settings, Store(tmp_path / "cache"))
        messages = []
        for name in ("a", "b", "c"):
            with pytest.raises(ImageError) as e:
                puller.pull(parse(f"{host}/bpf/{name}:v1"), "Always")
            messages.append(str(e.value))
        assert len(accepted) == 1
        assert all("it did not answer in time" in m and "images.mirrors" in m for m in messages)
    finally:
        listener.close()
        for s in accepted:
            s.close()
