"""A private Sigstore instance for tests: a Fulcio-like CA, a CT log and a transparency log, all
keys held here, and bundles made the way cosign v3 makes image signatures.

Nothing here verifies anything: the code under test runs the real ``sigstore`` verifier against
the trusted root written by :meth:`PrivateSigstore.write_trusted_root`. What this builds is what
the public services would hand a signer:

- a root CA certificate (Fulcio's role) and, per signature, a short-lived leaf certificate with
  the OIDC issuer extensions and the identity as its subject alternative name, carrying an
  embedded signed certificate timestamp from the CT log key;
- a DSSE envelope around an in-toto statement whose subject is the image's manifest digest and
  whose predicate type is cosign's image-signature type;
- a transparency log entry (``dsse`` 0.0.1) for it: the canonical body, a one-leaf Merkle tree,
  a signed checkpoint, and the signed entry timestamp.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import struct
from pathlib import Path

import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
SCT_LIST = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
IN_TOTO = "application/vnd.in-toto+json"
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(body)) + body


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _log_id(key: ec.EllipticCurvePublicKey) -> bytes:
    return hashlib.sha256(_spki(key)).digest()


def _sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


class PrivateSigstore:
    """Keys and a root certificate; :meth:`bundle` signs an image digest as an identity."""

    def __init__(self, name: str = "bpfman test sigstore") -> None:
        self.name = name
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        self.rekor_key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bpfman tests"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key())
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )

    # -- the trusted root a verifier is given -------------------------------------------------

    def trusted_root(self) -> dict:
        start = {"start": "2020-01-01T00:00:00Z"}

        def log(key: ec.EllipticCurvePrivateKey, url: str) -> dict:
            public = key.public_key()
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": _b64(_spki(public)),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": start,
                },
                "logId": {"keyId": _b64(_log_id(public))},
            }

        ca_der = self.ca_cert.public_bytes(serialization.Encoding.DER)
        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(self.rekor_key, "https://rekor.invalid")],
            "certificateAuthorities": [
                {
                    "subject": {"organization": "bpfman tests", "commonName": self.name},
                    "uri": "https://fulcio.invalid",
                    "certChain": {"certificates": [{"rawBytes": _b64(ca_der)}]},
                    "validFor": start,
                }
            ],
            "ctlogs": [log(self.ct_key, "https://ctfe.invalid")],
            "timestampAuthorities": [],
        }

    def write_trusted_root(self, path: Path) -> Path:
        path.write_text(json.dumps(self.trusted_root(), indent=1))
        return path

    # -- a signature ---------------------------------------------------------------------------

    def _leaf(
        self, key: ec.EllipticCurvePrivateKey, subject: str, issuer: str, when: dt.datetime
    ) -> x509.Certificate:
        """A Fulcio-style leaf for ``subject`` (an email, or a URI such as a CI workflow) at
        ``issuer``, with an embedded SCT over its precertificate."""
        san: x509.GeneralName = (
            x509.UniformResourceIdentifier(subject)
            if "://" in subject
            else x509.RFC822Name(subject)
        )
        serial = x509.random_serial_number()

        def build(sct_list: bytes) -> x509.Certificate:
            return (
                x509.CertificateBuilder()
                .subject_name(x509.Name([]))
                .issuer_name(self.ca_cert.subject)
                .public_key(key.public_key())
                .serial_number(serial)
                .not_valid_before(when - dt.timedelta(seconds=30))
                .not_valid_after(when + dt.timedelta(minutes=10))
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=True,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=False,
                        crl_sign=False,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)
                .add_extension(
                    x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
                )
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                    critical=False,
                )
                .add_extension(x509.SubjectAlternativeName([san]), critical=True)
                .add_extension(x509.UnrecognizedExtension(ISSUER_V1, issuer.encode()), False)
                .add_extension(
                    x509.UnrecognizedExtension(ISSUER_V2, _der(0x0C, issuer.encode())), False
                )
                .add_extension(
                    x509.UnrecognizedExtension(SCT_LIST, _der(0x04, sct_list)), critical=False
                )
                .sign(self.ca_key, hashes.SHA256())
            )

        def sct_list(sct: bytes) -> bytes:
            item = struct.pack("!H", len(sct)) + sct
            return struct.pack("!H", len(item)) + item

        ct_public = self.ct_key.public_key()
        millis = int(when.timestamp()) * 1000  # whole seconds: exact through a float
        unsigned = bytes(1) + _log_id(ct_public) + struct.pack("!QH", millis, 0)
        pre = build(sct_list(unsigned + bytes([4, 3]) + struct.pack("!H", 0)))
        tbs = pre.tbs_precertificate_bytes
        issuer_key_hash = hashlib.sha256(_spki(self.ca_key.public_key())).digest()
        signed = (
            struct.pack("!BBQH", 0, 0, millis, 1)
            + issuer_key_hash
            + len(tbs).to_bytes(3, "big")
            + tbs
            + struct.pack("!H", 0)
        )
        signature = _sign(self.ct_key, signed)
        sct = unsigned + bytes([4, 3]) + struct.pack("!H", len(signature)) + signature
        return build(sct_list(sct))

    def bundle(
        self,
        digest: str,
        subject: str,
        issuer: str,
        *,
        predicate_type: str = SIGN_PREDICATE,
        repository: str = "",
    ) -> bytes:
        """A cosign v3 style bundle: ``subject`` at ``issuer`` signs the image ``digest``."""
        when = dt.datetime.now(dt.UTC).replace(microsecond=0)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._leaf(key, subject, issuer, when)
        algorithm, hexdigest = digest.split(":", 1)
        statement = {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": repository, "digest": {algorithm: hexdigest}}],
            "predicateType": predicate_type,
            "predicate": {},
        }
        payload = json.dumps(statement, separators=(",", ":")).encode()
        pae = f"DSSEv1 {len(IN_TOTO)} {IN_TOTO} {len(payload)} ".encode() + payload
        signature = _sign(key, pae)
        envelope = {
            "payload": _b64(payload),
            "payloadType": IN_TOTO,
            "signatures": [{"sig": _b64(signature), "keyid": ""}],
        }
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        body = rfc8785.dumps(
            {
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {
                    "envelopeHash": {
                        "algorithm": "sha256",
                        "value": hashlib.sha256(rfc8785.dumps(envelope)).hexdigest(),
                    },
                    "payloadHash": {
                        "algorithm": "sha256",
                        "value": hashlib.sha256(payload).hexdigest(),
                    },
                    "signatures": [{"signature": _b64(signature), "verifier": _b64(cert_pem)}],
                },
            }
        )
        return json.dumps(self._with_log_entry(cert, envelope, body, when)).encode()

    def _with_log_entry(
        self, cert: x509.Certificate, envelope: dict, body: bytes, when: dt.datetime
    ) -> dict:
        rekor_public = self.rekor_key.public_key()
        log_id = _log_id(rekor_public)
        integrated = int(when.timestamp())
        root = hashlib.sha256(b"\x00" + body).digest()  # a tree of one leaf
        note = f"{self.name} - 1\n1\n{_b64(root)}\n"
        note_sig = _sign(self.rekor_key, note.encode())
        checkpoint = f"{note}\n\u2014 {self.name.replace(' ', '-')} {_b64(log_id[:4] + note_sig)}\n"
        promise = rfc8785.dumps(
            {
                "body": _b64(body),
                "integratedTime": integrated,
                "logID": log_id.hex(),
                "logIndex": 0,
            }
        )
        return {
            "mediaType": BUNDLE_V03,
            "verificationMaterial": {
                "certificate": {"rawBytes": _b64(cert.public_bytes(serialization.Encoding.DER))},
                "tlogEntries": [
                    {
                        "logIndex": "0",
                        "logId": {"keyId": _b64(log_id)},
                        "kindVersion": {"kind": "dsse", "version": "0.0.1"},
                        "integratedTime": str(integrated),
                        "inclusionPromise": {
                            "signedEntryTimestamp": _b64(_sign(self.rekor_key, promise))
                        },
                        "inclusionProof": {
                            "logIndex": "0",
                            "rootHash": _b64(root),
                            "treeSize": "1",
                            "hashes": [],
                            "checkpoint": {"envelope": checkpoint},
                        },
                        "canonicalizedBody": _b64(body),
                    }
                ],
            },
            "dsseEnvelope": envelope,
        }
