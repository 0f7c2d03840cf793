"""Keyless (Sigstore) image signatures, and who a host accepts them from.

The layout is cosign v3's: a signature of the image with manifest digest ``sha256:<hex>`` is a
Sigstore bundle (``application/vnd.dev.sigstore.bundle.v0.3+json``) stored as an OCI artifact
whose ``subject`` is that image. Registries list such artifacts through the referrers API
(``/v2/<name>/referrers/<digest>``); where a registry has no such API, the list is an index
tagged ``sha256-<hex>`` (the referrers tag schema). The bundle holds a DSSE envelope around an
in-toto statement whose subject is the image's digest and whose predicate type is
``https://sigstore.dev/cosign/sign/v1``, a short-lived certificate naming who signed (the OIDC
issuer and the subject: an email, or a CI workflow's URI) and the transparency log's proof.

Bundles are checked by the ``sigstore`` library's own verifier against a trusted root (the CA
that issued the certificate, the CT log that timestamped it, the transparency log that recorded
the signature); only then is the certificate's identity held against the host's list. A valid
signature by an identity not on the list is a refusal that names both.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import files
from reconciler.images.errors import ImageError
from reconciler.values import frozen

if TYPE_CHECKING:  # the host config names identities on every start; content is for pulls
    from reconciler.images import content

BUNDLE_TYPE_PREFIX = "application/vnd.dev.sigstore.bundle"
IN_TOTO = "application/vnd.in-toto+json"
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
STATEMENT_TYPES = ("https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1")
MAX_BUNDLE = 256 * 1024  # a bundle is a few kilobytes: a certificate, an envelope, a proof
MAX_TRUSTED_ROOT = 4 * 1024 * 1024
MAX_REFERRERS = 64

# Fulcio's certificate extensions naming the OIDC issuer (the second is DER, the first raw).
_ISSUER_V1 = "1.3.6.1.4.1.57264.1.1"
_ISSUER_V2 = "1.3.6.1.4.1.57264.1.8"
_OTHERNAME = "1.3.6.1.4.1.57264.1.7"
# Sigstore's public-good root as the sigstore package ships it (its TUF bootstrap copy).
_PUBLIC_GOOD = "https%3A%2F%2Ftuf-repo-cdn.sigstore.dev/trusted_root.json"


@frozen
class Identity:
    """Who may sign: an OIDC ``issuer`` and either the exact ``subject`` or a ``subject_regexp``
    the whole subject must match (anchored, unlike cosign's --certificate-identity-regexp)."""

    issuer: str
    subject: str | None = None
    subject_regexp: str | None = None

    def accepts(self, signer: Signer) -> bool:
        if signer.issuer != self.issuer:
            return False
        if self.subject is not None:
            return self.subject in signer.subjects
        pattern = re.compile(self.subject_regexp or "")
        return any(pattern.fullmatch(s) for s in signer.subjects)

    def describe(self) -> str:
        who = self.subject if self.subject is not None else f"/{self.subject_regexp}/"
        return f"{who} (issuer {self.issuer})"


@frozen
class Signer:
    """The identity a verified certificate names."""

    issuer: str
    subjects: tuple[str, ...]

    def describe(self) -> str:
        return f"{', '.join(self.subjects) or 'no subject'} (issuer {self.issuer or 'none'})"


def referrers_tag(digest: str) -> str:
    """The referrers-schema tag listing the artifacts whose subject is ``digest``."""
    return digest.replace(":", "-")


def bundle_manifests(index: bytes, where: str) -> list[content.Descriptor]:
    """The Sigstore bundle artifacts an index of referrers lists (others are skipped: SBOMs,
    attestations of other kinds, legacy signatures)."""
    from reconciler.images import content

    try:
        doc = json.loads(index)
    except (ValueError, RecursionError):
        raise ImageError(f"{where}: the list of referrers is not JSON") from None
    entries = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ImageError(f"{where}: the list of referrers has no manifests")
    out = []
    for entry in entries[:MAX_REFERRERS]:
        if not isinstance(entry, dict):
            continue
        kind, digest, size = entry.get("artifactType"), entry.get("digest"), entry.get("size")
        if not isinstance(kind, str) or not kind.startswith(BUNDLE_TYPE_PREFIX):
            continue
        if entry.get("mediaType") != content.OCI_MANIFEST or not isinstance(digest, str):
            continue
        if not isinstance(size, int) or not 0 <= size <= content.MAX_MANIFEST:
            continue
        out.append(content.Descriptor(content.OCI_MANIFEST, digest, size))
    return out


def bundle_layer(manifest: bytes, digest: str, where: str) -> content.Descriptor | None:
    """The bundle blob of a referrer manifest whose subject is ``digest``, or None."""
    from reconciler.images import content

    try:
        doc = json.loads(manifest)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    subject = doc.get("subject")
    if not isinstance(subject, dict) or subject.get("digest") != digest:
        return None  # listed under this image but about another: not a signature of it
    layers = doc.get("layers")
    if not isinstance(layers, list) or not layers or not isinstance(layers[0], dict):
        return None
    layer = layers[0]
    kind, blob, size = layer.get("mediaType"), layer.get("digest"), layer.get("size")
    if not isinstance(kind, str) or not kind.startswith(BUNDLE_TYPE_PREFIX):
        return None
    if not isinstance(blob, str) or not isinstance(size, int) or not 0 <= size <= MAX_BUNDLE:
        return None
    return content.Descriptor(kind, blob, size)


@functools.cache
def trusted_root(path: Path | None) -> Any:
    """The sigstore ``TrustedRoot`` in ``path`` (signing.trusted_root), or Sigstore's
    public-good one as the installed sigstore package ships it."""
    from sigstore.models import TrustedRoot
    from sigstore_models.trustroot.v1 import TrustedRoot as Inner

    where = f"the trusted root {path}" if path else "Sigstore's public-good trusted root"
    try:
        if path is None:
            import importlib.resources

            data = (importlib.resources.files("sigstore") / "_store" / _PUBLIC_GOOD).read_bytes()
        else:
            data = files.read_regular(path, MAX_TRUSTED_ROOT)
    except FileNotFoundError:
        raise ImageError(f"{where} does not exist; fix signing.trusted_root") from None
    except (OSError, files.NotReadable) as e:
        raise ImageError(f"cannot read {where}: {e}") from None
    try:
        return TrustedRoot(Inner.from_json(data))
    except Exception as e:  # noqa: BLE001 - the file is input: any parse failure is its fault
        raise ImageError(
            f"{where} is not a Sigstore trusted root (trusted_root.json, "
            f"application/vnd.dev.sigstore.trustedroot+json): {_short(e)}"
        ) from None


def verify(bundle: bytes, digest: str, root: Any) -> Signer:
    """Who signed the image ``digest`` with ``bundle``, after the sigstore verifier has checked
    the certificate chain, its timestamp, the log's proofs and the signature; ImageError with
    the reason otherwise."""
    from sigstore.models import Bundle
    from sigstore.verify import Verifier

    class Capture:
        """Identity is judged after the whole bundle verifies, so that a refusal can say
        'a valid signature by X' rather than guess from an unverified certificate."""

        cert: Any = None

        def verify(self, cert: Any) -> None:
            self.cert = cert

    capture = Capture()
    try:
        parsed = Bundle.from_json(bundle)
        kind, payload = Verifier(trusted_root=root).verify_dsse(parsed, capture)
    except Exception as e:  # noqa: BLE001 - a bundle is untrusted input: any failure refuses it
        raise ImageError(f"a Sigstore bundle that does not verify ({_short(e)})") from None
    problem = _statement_problem(kind, payload, digest)
    if problem is not None:
        raise ImageError(f"a Sigstore bundle not for this image: {problem}")
    return signer_of(capture.cert)


def _statement_problem(kind: str, payload: bytes, digest: str) -> str | None:
    if kind != IN_TOTO:
        return f"it signs a {kind!r} payload, not an in-toto statement"
    try:
        statement = json.loads(payload)
    except (ValueError, RecursionError):
        return "its statement is not JSON"
    if not isinstance(statement, dict) or statement.get("_type") not in STATEMENT_TYPES:
        return "its payload is not an in-toto statement"
    if statement.get("predicateType") != SIGN_PREDICATE:
        return f"it is a {statement.get('predicateType')!r} attestation, not an image signature"
    algorithm, _, hexdigest = digest.partition(":")
    subjects = statement.get("subject")
    for subject in subjects if isinstance(subjects, list) else []:
        digests = subject.get("digest") if isinstance(subject, dict) else None
        if isinstance(digests, dict) and digests.get(algorithm) == hexdigest:
            return None
    return f"its subject is not {digest}"


def signer_of(cert: Any) -> Signer:
    from cryptography import x509

    subjects: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        subjects += san.get_values_for_type(x509.RFC822Name)
        subjects += san.get_values_for_type(x509.UniformResourceIdentifier)
        subjects += [
            on.value.decode(errors="replace")
            for on in san.get_values_for_type(x509.OtherName)
            if on.type_id.dotted_string == _OTHERNAME
        ]
    except x509.ExtensionNotFound:
        pass
    return Signer(_issuer_of(cert), tuple(subjects))


def _issuer_of(cert: Any) -> str:
    from cryptography import x509

    for ext in cert.extensions:
        if ext.oid.dotted_string == _ISSUER_V2 and isinstance(
            ext.value, x509.UnrecognizedExtension
        ):
            raw = ext.value.value
            # DER UTF8String: tag 0x0c, a length (short or long form), the text.
            if len(raw) >= 2 and raw[0] == 0x0C:
                skip = 2 + (raw[1] & 0x7F if raw[1] & 0x80 else 0)
                return raw[skip:].decode(errors="replace")
    for ext in cert.extensions:
        if ext.oid.dotted_string == _ISSUER_V1 and isinstance(
            ext.value, x509.UnrecognizedExtension
        ):
            return bytes(ext.value.value).decode(errors="replace")
    return ""


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."
