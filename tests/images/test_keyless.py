"""Keyless (Sigstore) signatures, verified by the real ``sigstore`` verifier against a private
trust root (tests/images/sigstore_ca.py: a CA, a CT log and a transparency log of our own).

Bundles are attached the way cosign v3 attaches them, as OCI artifacts whose subject is the image,
listed under the referrers tag (Debian's registry has no referrers API). Accepted when the signer
is an allowed identity; refused, naming the identity found and the one required, when it is not;
refused when the bundle's CA is not the trusted root's, when it signs another image, when it is
an attestation rather than a signature, or when it is damaged; unsigned images refused only with
``require``."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from tests.images.registry import Registry
from tests.images.sigstore_ca import BUNDLE_V03, PrivateSigstore
from tests.images.test_pull import XDP, Host, plain_host, registry_digest

ISSUER = "https://token.actions.example"
RELEASE = "https://github.com/example/ebpf/.github/workflows/release.yml@refs/tags/v1.2.0"
EMPTY = "application/vnd.oci.empty.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def attach(registry: Registry, repo: str, digest: str, bundle: bytes) -> str:
    """Attach ``bundle`` to the image ``digest`` as cosign v3 does on a registry without the
    referrers API: an artifact manifest with the image as subject, listed in the index tagged
    ``sha256-<hex>``. Returns the artifact manifest's digest."""
    layer = registry.push_blob(repo, bundle)
    config = registry.push_blob(repo, b"{}")
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": BUNDLE_V03,
        "config": {"mediaType": EMPTY, "digest": config, "size": 2},
        "layers": [{"mediaType": BUNDLE_V03, "digest": layer, "size": len(bundle)}],
        "subject": {"mediaType": MANIFEST, "digest": digest, "size": 0},
        "annotations": {"dev.sigstore.bundle.content": "dsse-envelope"},
    }
    raw = json.dumps(manifest, separators=(",", ":")).encode()
    artifact = "sha256:" + hashlib.sha256(raw).hexdigest()
    registry.push_manifest(repo, artifact, raw)
    tag = digest.replace(":", "-")
    with registry.session() as s:
        r = s.get(f"{registry.url}/v2/{repo}/manifests/{tag}", headers={"Accept": INDEX})
        entries = r.json()["manifests"] if r.status_code == 200 else []
    entries.append(
        {"mediaType": MANIFEST, "digest": artifact, "size": len(raw), "artifactType": BUNDLE_V03}
    )
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}
    registry.push_manifest(repo, tag, json.dumps(index).encode(), INDEX)
    return artifact


@pytest.fixture
def sigstore_ca(tmp_path) -> tuple[PrivateSigstore, Path]:
    ca = PrivateSigstore()
    return ca, ca.write_trusted_root(tmp_path / "trusted_root.json")


@pytest.fixture
def image(registry, tmp_path) -> tuple[Registry, str, str, str]:
    repo = registry.repository("keyless")
    ref = f"{registry.host}/{repo}:v1"
    plain_host(tmp_path / "builder", registry).run(
        "image", "build", "--bytecode", str(XDP), "--tag", ref, "--push"
    )
    return registry, repo, ref, registry_digest(registry, repo, "v1")


def strict(tmp: Path, registry: Registry, root: Path | None, *identities: dict) -> Host:
    host = plain_host(tmp, registry)
    config = json.loads(host.config.read_text())
    config["signing"] = {"require": True, "identities": list(identities)}
    if root is not None:
        config["signing"]["trusted_root"] = str(root)
    host.config.write_text(json.dumps(config))
    return host


def test_an_image_signed_by_an_allowed_identity_is_accepted(image, sigstore_ca, tmp_path):
    registry, repo, ref, digest = image
    ca, root = sigstore_ca
    attach(registry, repo, digest, ca.bundle(digest, RELEASE, ISSUER))
    exact = strict(tmp_path / "exact", registry, root, {"issuer": ISSUER, "subject": RELEASE})
    pulled = exact.pull_json(ref)
    assert pulled["digest"] == digest and Path(pulled["object"]).read_bytes() == XDP.read_bytes()
    assert pulled["signedBy"] == f"{RELEASE} (issuer {ISSUER})"
    pattern = r"https://github\.com/example/ebpf/\.github/workflows/release\.yml@refs/tags/v.*"
    by_regexp = strict(
        tmp_path / "regexp", registry, root, {"issuer": ISSUER, "subjectRegExp": pattern}
    )
    assert by_regexp.pull_json(ref)["digest"] == digest
    # And by the command line alone, as cosign verify is asked.
    out = plain_host(tmp_path / "cli", registry).run(
        "image", "verify", ref, "--certificate-identity", RELEASE,
        "--certificate-oidc-issuer", ISSUER, "--trusted-root", str(root), "--json",
    ).stdout  # fmt: skip
    assert json.loads(out)["signedBy"] == f"{RELEASE} (issuer {ISSUER})"
    # The cache keeps the referrers list and the bundle: with the registry gone, a pull by
    # IfNotPresent (a manifest's default) still verifies.
    registry.stop()
    cached = exact.pull_json(ref, "--pull-policy", "IfNotPresent")
    assert cached["signedBy"] == f"{RELEASE} (issuer {ISSUER})" and not cached["pulled"]


def test_a_valid_signature_by_another_identity_is_refused_naming_both(image, sigstore_ca, tmp_path):
    registry, repo, ref, digest = image
    ca, root = sigstore_ca
    attach(registry, repo, digest, ca.bundle(digest, "mallory@example.org", ISSUER))
    attach(registry, repo, digest, ca.bundle(digest, RELEASE, "https://accounts.example"))
    host = strict(tmp_path / "host", registry, root, {"issuer": ISSUER, "subject": RELEASE})
    p = host.run("image", "pull", ref, ok=False)
    assert f"a valid keyless signature by mallory@example.org (issuer {ISSUER})" in p.stderr
    assert f"a valid keyless signature by {RELEASE} (issuer https://accounts.example)" in p.stderr
    assert f"requires a signature by {RELEASE} (issuer {ISSUER})" in p.stderr, p.stderr
    # A regexp must match the whole subject: a prefix of an allowed one is not enough.
    sneaky = strict(
        tmp_path / "prefix", registry, root, {"issuer": ISSUER, "subjectRegExp": "mallory"}
    )
    p = sneaky.run("image", "pull", ref, ok=False)
    assert "a valid keyless signature by mallory" in p.stderr


def test_a_bundle_from_an_untrusted_ca_is_refused(image, sigstore_ca, tmp_path):
    registry, repo, ref, digest = image
    _, root = sigstore_ca
    impostor = PrivateSigstore("impostor")  # same identity, its own CA and logs
    attach(registry, repo, digest, impostor.bundle(digest, RELEASE, ISSUER))
    host = strict(tmp_path / "host", registry, root, {"issuer": ISSUER, "subject": RELEASE})
    p = host.run("image", "pull", ref, ok=False)
    assert "a Sigstore bundle that does not verify (" in p.stderr, p.stderr
    assert "certificate chain" in p.stderr
    # Not Sigstore's public-good root either (the default when no trusted_root is set).
    default = strict(tmp_path / "public", registry, None, {"issuer": ISSUER, "subject": RELEASE})
    assert "does not verify" in default.run("image", "pull", ref, ok=False).stderr


@pytest.mark.parametrize("damage", ["other-image", "attestation", "envelope", "log-entry", "junk"])
def test_a_bundle_that_does_not_vouch_for_this_image_is_refused(
    image, sigstore_ca, tmp_path, damage
):
    registry, repo, ref, digest = image
    ca, root = sigstore_ca
    if damage == "other-image":
        bundle = ca.bundle("sha256:" + "0" * 64, RELEASE, ISSUER)
        expected = f"not for this image: its subject is not {digest}"
    elif damage == "attestation":
        bundle = ca.bundle(digest, RELEASE, ISSUER, predicate_type="https://slsa.dev/provenance/v1")
        expected = "not an image signature"
    else:
        doc = json.loads(ca.bundle(digest, RELEASE, ISSUER))
        if damage == "envelope":  # the payload swapped after signing
            doc["dsseEnvelope"]["payload"] = base64.b64encode(b'{"_type": "x"}').decode()
        elif damage == "log-entry":  # the log's proof no longer matches its root
            proof = doc["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
            proof["rootHash"] = base64.b64encode(bytes(32)).decode()
        else:
            doc = {"mediaType": BUNDLE_V03, "verificationMaterial": [1, 2, 3]}
        bundle = json.dumps(doc).encode()
        expected = "a Sigstore bundle that does not verify ("
    attach(registry, repo, digest, bundle)
    host = strict(tmp_path / "host", registry, root, {"issuer": ISSUER, "subject": RELEASE})
    p = host.run("image", "pull", ref, ok=False)
    assert expected in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_unsigned_images_are_refused_only_with_require(image, sigstore_ca, tmp_path):
    registry, _, ref, digest = image
    _, root = sigstore_ca
    assert plain_host(tmp_path / "lax", registry).pull_json(ref)["digest"] == digest
    host = strict(tmp_path / "host", registry, root, {"issuer": ISSUER, "subject": RELEASE})
    p = host.run("image", "pull", ref, ok=False)
    assert "is not signed (no Sigstore bundle among its referrers" in p.stderr, p.stderr
    assert f"requires a signature by {RELEASE} (issuer {ISSUER}); sign it with cosign" in p.stderr


def test_a_key_or_an_identity_either_is_enough(image, sigstore_ca, tmp_path):
    """signing.keys and signing.identities together: a signature by either passes."""
    from tests.images.test_interop_and_signing import _keypair

    registry, repo, ref, digest = image
    ca, root = sigstore_ca
    private, public = _keypair(tmp_path, "k")
    attach(registry, repo, digest, ca.bundle(digest, RELEASE, ISSUER))
    host = strict(tmp_path / "host", registry, root, {"issuer": ISSUER, "subject": RELEASE})
    config = json.loads(host.config.read_text())
    config["signing"]["keys"] = [str(public)]
    host.config.write_text(json.dumps(config))
    assert host.pull_json(ref)["signedBy"] == f"{RELEASE} (issuer {ISSUER})"
    plain_host(tmp_path / "signer", registry).run("image", "sign", "--key", str(private), ref)
    assert host.pull_json(ref, "--pull-policy", "Always")["signedBy"].startswith(str(public))


@pytest.mark.parametrize(
    "signing,expected",
    [
        ({"identities": [{"issuer": ISSUER}]}, "exactly one of subject or subjectRegExp"),
        (
            {"identities": [{"issuer": ISSUER, "subject": "a", "subjectRegExp": "a"}]},
            "exactly one of subject or subjectRegExp",
        ),
        ({"identities": [{"issuer": ISSUER, "subjectRegExp": "(["}]}, "is not a regular"),
        ({"trusted_root": "relative.json"}, "an absolute path"),
    ],
)
def test_a_bad_signing_policy_is_one_clear_error(registry, tmp_path, signing, expected):
    host = plain_host(tmp_path / "host", registry)
    config = json.loads(host.config.read_text())
    config["signing"] = {"require": True, **signing}
    host.config.write_text(json.dumps(config))
    p = host.run("image", "pull", f"{registry.host}/x/y:v1", ok=False)
    assert expected in p.stderr and str(host.config) in p.stderr, p.stderr


def test_a_trusted_root_that_is_not_one_is_named(image, tmp_path):
    registry, _, ref, _ = image
    bad = tmp_path / "root.json"
    bad.write_text('{"mediaType": "something else"}')
    host = strict(tmp_path / "host", registry, bad, {"issuer": ISSUER, "subject": RELEASE})
    p = host.run("image", "pull", ref, ok=False)
    assert f"the trusted root {bad} is not a Sigstore trusted root" in p.stderr, p.stderr
