"""Cosign key-pair signatures: who signed an image, checked against the host's policy.

The layout is cosign's: the signatures of the image with digest ``sha256:<hex>`` are an OCI
image tagged ``sha256-<hex>.sig`` in the same repository; each of its layers (media type
``application/vnd.dev.cosign.simplesigning.v1+json``) is a "simple signing" payload naming the
image's repository and digest, and the layer's annotation ``dev.cosignproject.cosign/signature``
is the base64 signature of those payload bytes. Signatures are verified here with the
``cryptography`` package against the public keys the host config lists (PEM, as ``cosign
generate-key-pair`` writes ``cosign.pub``): ECDSA P-256/P-384 with SHA-256/384 (cosign's
default), Ed25519, and RSA PKCS#1 v1.5 or PSS with SHA-256.

There is no transparency log check here (as ``cosign verify --key K --insecure-ignore-tlog``):
a key-pair signature is as good as the secrecy of its private key. Keyless signatures
(Sigstore certificates and transparency-log proofs) are :mod:`~reconciler.images.keyless`'s.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path
from typing import Any

from reconciler import files
from reconciler.images import content
from reconciler.images.errors import ImageError
from reconciler.images.reference import Reference
from reconciler.images.reference import parse as parse_reference
from reconciler.values import frozen

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PUBLIC_KEY_ANNOTATION = "dev.bpfman.signing/public-key"  # PEM, written by bpfman image sign
REKOR_BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"  # cosign's, with the key in its entry
SIGNATURE_TYPE = "cosign container image signature"
MAX_PAYLOAD = 64 * 1024
MAX_SIGNATURES = 32
MAX_KEY_FILE = 64 * 1024


@frozen
class Key:
    path: str
    fingerprint: str  # SHA256:<base64> of the DER public key, as ssh-keygen shows keys
    public: Any  # a cryptography public key


@frozen
class Signature:
    descriptor: content.Descriptor  # the simple-signing payload
    signature: bytes
    # The public key the layer says made it (bpfman's annotation, or the key in cosign's Rekor
    # bundle annotation): only a claim, believed once the signature verifies with it, and then
    # only to name who signed when that key is not one the host trusts.
    claimed: Key | None = None


def signature_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".sig"


def load_key(path: Path) -> Key:
    try:
        data = files.read_regular(path, MAX_KEY_FILE)
    except FileNotFoundError:
        raise ImageError(f"signing key {path} does not exist; fix signing.keys") from None
    except (OSError, files.NotReadable) as e:
        raise ImageError(f"cannot read signing key {path}: {e}") from None
    key = key_from_pem(data, str(path))
    if key is None:
        raise ImageError(
            f"{path} is not a PEM public key (-----BEGIN PUBLIC KEY-----, as cosign.pub)"
        )
    return key


def key_from_pem(data: bytes, name: str) -> Key | None:
    """The public key in PEM ``data`` (a public key, or a certificate's), or None."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    public: Any
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            public = x509.load_pem_x509_certificate(data).public_key()
        else:
            public = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        return None
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fp = "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
    return Key(name, fp, public)


def public_pem(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _claimed_key(annotations: dict[str, Any]) -> Key | None:
    """The key a signature layer names (see :class:`Signature`), or None."""
    pem = annotations.get(PUBLIC_KEY_ANNOTATION)
    if not isinstance(pem, str):
        pem = _rekor_key(annotations.get(REKOR_BUNDLE_ANNOTATION))
    if not isinstance(pem, str) or len(pem) > MAX_KEY_FILE:
        return None
    return key_from_pem(pem.encode(), "the key the signature names")


def _rekor_key(bundle: Any) -> str | None:
    """The signer's PEM in cosign's Rekor bundle annotation: a hashedrekord entry whose
    ``spec.signature.publicKey.content`` is the base64 of the key (or certificate)."""
    if not isinstance(bundle, str) or len(bundle) > MAX_PAYLOAD:
        return None
    try:
        body = json.loads(base64.b64decode(json.loads(bundle)["Payload"]["body"]))
        encoded = body["spec"]["signature"]["publicKey"]["content"]
        return base64.b64decode(encoded).decode()
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error):
        return None


def payload(ref: Reference, digest: str) -> bytes:
    """The simple-signing payload cosign signs for ``ref``'s repository at ``digest``."""
    doc = {
        "critical": {
            "identity": {"docker-reference": ref.name},
            "image": {"docker-manifest-digest": digest},
            "type": SIGNATURE_TYPE,
        },
        "optional": None,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def verify_with(key: Key, data: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    public = key.public
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            algorithm = hashes.SHA384() if public.curve.key_size >= 384 else hashes.SHA256()
            public.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(signature, data)
        elif isinstance(public, rsa.RSAPublicKey):
            try:
                public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
                public.verify(signature, data, pss, hashes.SHA256())
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def parse_signatures(manifest: bytes, where: str) -> list[Signature]:
    """Each simple-signing layer of a signature manifest."""
    try:
        doc = json.loads(manifest)
    except (ValueError, RecursionError):
        raise ImageError(f"{where}: the signature manifest is not JSON") from None
    layers = doc.get("layers") if isinstance(doc, dict) else None
    if not isinstance(layers, list):
        raise ImageError(f"{where}: the signature manifest has no layers")
    out = []
    for layer in layers[:MAX_SIGNATURES]:
        if not isinstance(layer, dict) or layer.get("mediaType") != SIMPLE_SIGNING:
            continue
        annotations = layer.get("annotations") or {}
        encoded = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
        digest, size = layer.get("digest"), layer.get("size")
        if not isinstance(encoded, str) or not isinstance(digest, str):
            continue
        if not isinstance(size, int) or size < 0 or size > MAX_PAYLOAD:
            continue
        try:
            sig = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        descriptor = content.Descriptor(SIMPLE_SIGNING, digest, size)
        out.append(Signature(descriptor, sig, _claimed_key(annotations)))
    return out


def payload_problem(data: bytes, ref: Reference, digest: str) -> str | None:
    """Why a validly signed payload does not vouch for this image, or None."""
    try:
        doc = json.loads(data)
        critical = doc["critical"]
        signed_digest = critical["image"]["docker-manifest-digest"]
        identity = critical["identity"]["docker-reference"]
        kind = critical["type"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return "its payload is not a cosign simple-signing document"
    if kind != SIGNATURE_TYPE:
        return f"its payload is of type {kind!r}"
    if signed_digest != digest:
        return f"it signs {signed_digest}, not {digest}"
    try:
        signed_name = parse_reference(identity).name if isinstance(identity, str) else None
    except ImageError:
        signed_name = None
    if signed_name != ref.name:
        return f"it signs the repository {identity}, not {ref.name}"
    return None


# cosign's own private key files (cosign generate-key-pair): PEM whose body is a JSON document
# of go-securesystemslib's "encrypted" package: the PKCS#8 DER key in a NaCl secretbox under a
# key derived from the password with scrypt.
COSIGN_KEY_TYPES = (b"ENCRYPTED SIGSTORE PRIVATE KEY", b"ENCRYPTED COSIGN PRIVATE KEY")
# The scrypt strengths cosign and its library write; others are refused rather than run (a
# hostile file could otherwise ask for any amount of memory and time).
_SCRYPT_N = (32768, 65536, 131072)


def load_private_key(data: bytes, password: bytes | None) -> Any:
    """A private key from PEM: PKCS#8 (encrypted or not) or cosign's encrypted format."""
    from cryptography.hazmat.primitives import serialization

    for kind in COSIGN_KEY_TYPES:
        if b"-----BEGIN " + kind + b"-----" in data:
            der = _cosign_decrypt(data, kind, password)
            return serialization.load_der_private_key(der, None)
    try:
        return serialization.load_pem_private_key(data, password)
    except (ValueError, TypeError) as e:
        raise ImageError(
            f"not a PEM private key this can read ({e}); an encrypted one needs --password-file "
            "(PKCS#8 PEM, e.g. openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256, "
            "or cosign generate-key-pair's cosign.key)"
        ) from None


def _cosign_decrypt(data: bytes, kind: bytes, password: bytes | None) -> bytes:
    begin, end = b"-----BEGIN " + kind + b"-----", b"-----END " + kind + b"-----"
    try:
        body = data.split(begin, 1)[1].split(end, 1)[0]
        doc = json.loads(base64.b64decode(b"".join(body.split())))
        kdf, cipher = doc["kdf"], doc["cipher"]
        params = kdf["params"]
        n, r, p = params["N"], params["r"], params["p"]
        salt = base64.b64decode(kdf["salt"])
        nonce = base64.b64decode(cipher["nonce"])
        sealed = base64.b64decode(doc["ciphertext"])
    except (IndexError, ValueError, KeyError, TypeError, RecursionError, binascii.Error):
        raise ImageError("a cosign key file whose contents are damaged") from None
    if kdf.get("name") != "scrypt" or cipher.get("name") != "nacl/secretbox":
        raise ImageError(f"a cosign key encrypted with {kdf.get('name')}/{cipher.get('name')}")
    if n not in _SCRYPT_N or r != 8 or p != 1 or len(nonce) != 24:
        raise ImageError(f"a cosign key with unsupported scrypt parameters (N={n}, r={r}, p={p})")
    import nacl.exceptions
    import nacl.secret

    key = hashlib.scrypt(password or b"", salt=salt, n=n, r=r, p=p, maxmem=256 << 20, dklen=32)
    try:
        return bytes(nacl.secret.SecretBox(key).decrypt(sealed, nonce))
    except nacl.exceptions.CryptoError:
        raise ImageError(
            "the password does not open this cosign key"
            + ("" if password else " (give it with --password-file or COSIGN_PASSWORD)")
        ) from None
