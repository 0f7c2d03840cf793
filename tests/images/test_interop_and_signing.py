"""Images made by other tools (umoci builds, skopeo pushes, in OCI and Docker v2 form) are read;
images bpfman builds are read by skopeo; and cosign key-pair signatures, written by `bpfman image
sign`, are checked against the host's keys: accepted, refused with both sides named, or refused
for want of one. Each signature is also verified here with `cryptography` alone."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.images.registry import Registry
from tests.images.test_pull import XDP, Host, plain_host, registry_digest


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/install-deps.sh installs it)")
    return path


def umoci_image(
    tmp: Path, obj: Path, labels: dict[str, str], destination: str, form: str = "oci"
) -> None:
    """Build an image of ``obj`` with umoci and push it to ``destination`` (host/repo:tag, plain
    HTTP) with skopeo, as an OCI or a Docker v2 (``v2s2``) manifest."""
    umoci, skopeo = _tool("umoci"), _tool("skopeo")
    layout, bundle = tmp / "layout", tmp / "bundle"

    def run(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, timeout=120)

    run(umoci, "init", "--layout", str(layout))
    run(umoci, "new", "--image", f"{layout}:v1")
    run(umoci, "unpack", "--rootless", "--image", f"{layout}:v1", str(bundle))
    shutil.copy(obj, bundle / "rootfs" / obj.name)
    run(umoci, "repack", "--image", f"{layout}:v1", str(bundle))
    label_args = [a for k, v in labels.items() for a in ("--config.label", f"{k}={v}")]
    run(umoci, "config", "--image", f"{layout}:v1", "--os", "linux", "--architecture", "amd64",
        *label_args)  # fmt: skip
    fmt = ["--format", "v2s2"] if form == "v2s2" else []
    run(skopeo, "copy", *fmt, "--dest-tls-verify=false", f"oci:{layout}:v1",
        f"docker://{destination}")  # fmt: skip


@pytest.mark.parametrize("form", ["oci", "v2s2"])
def test_an_image_built_by_umoci_and_pushed_by_skopeo_is_read(registry, tmp_path, form):
    repo = registry.repository(f"umoci-{form}")
    labels = {
        "io.ebpf.programs": '{"xdp_stats":"xdp"}',
        "io.ebpf.maps": '{"xdp_stats_map":"percpu_array"}',
    }
    umoci_image(tmp_path / "build", XDP, labels, f"{registry.host}/{repo}:v1", form)
    image = plain_host(tmp_path / "host", registry).pull_json(f"{registry.host}/{repo}:v1")
    assert image["digest"] == registry_digest(registry, repo, "v1")
    assert Path(image["object"]).read_bytes() == XDP.read_bytes()
    assert image["programs"] == {"xdp_stats": "xdp"}


def test_skopeo_reads_what_bpfman_builds(registry, tmp_path):
    skopeo = _tool("skopeo")
    repo = registry.repository("ours")
    ref = f"{registry.host}/{repo}:v1"
    plain_host(tmp_path, registry).run("image", "build", "--bytecode", str(XDP), "--tag", ref,
                                       "--push")  # fmt: skip
    seen = json.loads(
        subprocess.run([skopeo, "inspect", "--tls-verify=false", f"docker://{ref}"],
                       check=True, capture_output=True, text=True).stdout
    )  # fmt: skip
    assert seen["Labels"]["io.ebpf.programs"] == '{"xdp_stats":"xdp"}'
    assert seen["Digest"] == registry_digest(registry, repo, "v1")


def _keypair(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = directory / f"{name}.pem", directory / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


@pytest.fixture
def signed(registry, tmp_path):
    """An image pushed and signed with key a; keys a and b on disk."""
    keys = tmp_path / "keys"
    keys.mkdir()
    a_priv, a_pub = _keypair(keys, "a")
    b_priv, b_pub = _keypair(keys, "b")
    repo = registry.repository("signed")
    ref = f"{registry.host}/{repo}:v1"
    builder = plain_host(tmp_path / "builder", registry)
    builder.run("image", "build", "--bytecode", str(XDP), "--tag", ref, "--push")
    builder.run("image", "sign", "--key", str(a_priv), ref)
    return registry, repo, ref, (a_priv, a_pub), (b_priv, b_pub)


def _strict(tmp: Path, registry: Registry, *keys: Path) -> Host:
    host = plain_host(tmp, registry)
    config = json.loads(host.config.read_text())
    config["signing"] = {"require": True, "keys": [str(k) for k in keys]}
    host.config.write_text(json.dumps(config))
    return host


def test_the_signature_is_cosigns_simple_signing_and_verifies_independently(signed):
    registry, repo, _, (_, a_pub), _ = signed
    digest = registry_digest(registry, repo, "v1")
    tag = digest.replace(":", "-") + ".sig"
    with registry.session() as s:
        r = s.get(f"{registry.url}/v2/{repo}/manifests/{tag}",
                  headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})  # fmt: skip
        r.raise_for_status()
        (layer,) = r.json()["layers"]
        payload = s.get(f"{registry.url}/v2/{repo}/blobs/{layer['digest']}").content
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    doc = json.loads(payload)
    assert doc["critical"]["image"]["docker-manifest-digest"] == digest
    assert doc["critical"]["identity"]["docker-reference"] == f"{registry.host}/{repo}"
    assert doc["critical"]["type"] == "cosign container image signature"
    signature = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
    public = serialization.load_pem_public_key(a_pub.read_bytes())
    public.verify(signature, payload, ec.ECDSA(hashes.SHA256()))  # raises if not


def test_an_image_signed_by_an_allowed_key_is_accepted(signed, tmp_path):
    registry, _, ref, (_, a_pub), (_, b_pub) = signed
    host = _strict(tmp_path / "host", registry, b_pub, a_pub)
    image = host.pull_json(ref)
    assert image["digest"] and image["pulled"]
    out = host.run("image", "verify", ref).stdout
    assert f"signed by {a_pub}" in out


def fingerprint(public: Path) -> str:
    """ssh-keygen's form, computed here from the PEM: SHA256 of the DER public key."""
    der = serialization.load_pem_public_key(public.read_bytes()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


def test_an_image_signed_by_another_key_is_refused_naming_both(signed, tmp_path):
    registry, _, ref, (_, a_pub), (_, b_pub) = signed
    host = _strict(tmp_path / "host", registry, b_pub)
    p = host.run("image", "pull", ref, ok=False)
    assert f"a valid signature by another key, {fingerprint(a_pub)}" in p.stderr, p.stderr
    assert f"requires a signature by {b_pub} ({fingerprint(b_pub)})" in p.stderr


def _signature_layers(registry: Registry, repo: str, digest: str) -> dict:
    with registry.session() as s:
        r = s.get(f"{registry.url}/v2/{repo}/manifests/{digest.replace(':', '-')}.sig",
                  headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})  # fmt: skip
        r.raise_for_status()
        return r.json()


@pytest.mark.parametrize("claim", ["none", "cosign-rekor-bundle", "a-lie"])
def test_the_signer_of_an_untrusted_signature_is_named_only_when_proven(signed, tmp_path, claim):
    """Which key signed is taken from the layer (bpfman's annotation, or the key in the Rekor
    entry cosign attaches) only when the signature verifies with it."""
    registry, repo, ref, (_, a_pub), (_, b_pub) = signed
    digest = registry_digest(registry, repo, "v1")
    manifest = _signature_layers(registry, repo, digest)
    annotations = manifest["layers"][0]["annotations"]
    del annotations["dev.bpfman.signing/public-key"]
    if claim == "cosign-rekor-bundle":
        body = {"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {"signature": {
            "content": annotations["dev.cosignproject.cosign/signature"],
            "publicKey": {"content": base64.b64encode(a_pub.read_bytes()).decode()}}}}  # fmt: skip
        annotations["dev.sigstore.cosign/bundle"] = json.dumps(
            {
                "SignedEntryTimestamp": "",
                "Payload": {
                    "body": base64.b64encode(json.dumps(body).encode()).decode(),
                    "integratedTime": 0,
                },
            }  # fmt: skip
        )
    elif claim == "a-lie":  # names key c, which did not make this signature
        _, c_pub = _keypair(tmp_path, "c")
        annotations["dev.bpfman.signing/public-key"] = c_pub.read_text()
    registry.push_manifest(repo, digest.replace(":", "-") + ".sig", json.dumps(manifest).encode())
    p = _strict(tmp_path / "host", registry, b_pub).run("image", "pull", ref, ok=False)
    if claim == "cosign-rekor-bundle":
        assert f"a valid signature by another key, {fingerprint(a_pub)}" in p.stderr, p.stderr
    else:
        assert "a key-pair signature that none of signing.keys verifies" in p.stderr, p.stderr


def test_unsigned_images_pass_only_without_require(registry, tmp_path):
    _, a_pub = _keypair(tmp_path, "a")
    repo = registry.repository("unsigned")
    ref = f"{registry.host}/{repo}:v1"
    plain_host(tmp_path / "b", registry).run("image", "build", "--bytecode", str(XDP), "--tag",
                                             ref, "--push")  # fmt: skip
    assert plain_host(tmp_path / "lax", registry).pull_json(ref)["digest"]
    p = _strict(tmp_path / "strict", registry, a_pub).run("image", "pull", ref, ok=False)
    assert "is not signed (no sha256-" in p.stderr and str(a_pub) in p.stderr


def test_a_signature_of_another_image_copied_over_is_refused(signed, tmp_path):
    registry, repo, ref, (a_priv, a_pub), _ = signed
    other = f"{registry.host}/{repo}:other"
    builder = plain_host(tmp_path / "b2", registry)
    builder.run("image", "build", "--bytecode", str(Path(__file__).resolve().parents[2]
                / "tests/bpf/xdp_pass.o"), "--tag", other, "--push")  # fmt: skip
    # Put the first image's signature manifest under the other image's signature tag.
    first = registry_digest(registry, repo, "v1")
    second = registry_digest(registry, repo, "other")
    with registry.session() as s:
        raw = s.get(
            f"{registry.url}/v2/{repo}/manifests/{first.replace(':', '-')}.sig",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        ).content
    registry.push_manifest(repo, second.replace(":", "-") + ".sig", raw)
    p = _strict(tmp_path / "host", registry, a_pub).run("image", "pull", other, ok=False)
    assert f"not for this image: it signs {first}, not {second}" in p.stderr, p.stderr


def _cosign_key(directory: Path, password: bytes) -> tuple[Path, Path]:
    """A key pair in cosign generate-key-pair's files: cosign.key is the PKCS#8 key sealed in a
    NaCl secretbox under scrypt(password), JSON in an ENCRYPTED SIGSTORE PRIVATE KEY PEM."""
    import hashlib as _hashlib
    import os

    import nacl.secret

    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt, nonce = os.urandom(32), os.urandom(24)
    secret = _hashlib.scrypt(password, salt=salt, n=32768, r=8, p=1, maxmem=256 << 20, dklen=32)
    sealed = nacl.secret.SecretBox(secret).encrypt(der, nonce).ciphertext
    doc = {
        "kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1},
                "salt": base64.b64encode(salt).decode()},
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(sealed).decode(),
    }  # fmt: skip
    body = base64.encodebytes(json.dumps(doc).encode()).decode()
    private, public = directory / "cosign.key", directory / "cosign.pub"
    private.write_text(
        f"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n{body}"
        "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def test_a_cosign_key_file_signs_with_its_password(registry, tmp_path):
    private, public = _cosign_key(tmp_path, b"s3cret")
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    repo = registry.repository("cosignkey")
    ref = f"{registry.host}/{repo}:v1"
    builder = plain_host(tmp_path / "builder", registry)
    builder.run("image", "build", "--bytecode", str(XDP), "--tag", ref, "--push")
    p = builder.run("image", "sign", "--key", str(private), ref, ok=False)
    assert "--password-file or COSIGN_PASSWORD" in p.stderr and str(private) in p.stderr
    password.write_text("wrong\n")
    p = builder.run("image", "sign", "--key", str(private), "--password-file", str(password), ref,
                    ok=False)  # fmt: skip
    assert "the password does not open this cosign key" in p.stderr
    password.write_text("s3cret\n")
    builder.run("image", "sign", "--key", str(private), "--password-file", str(password), ref)
    out = _strict(tmp_path / "host", registry, public).run("image", "verify", ref).stdout
    assert f"signed by {public} ({fingerprint(public)})" in out
