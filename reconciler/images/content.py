"""What bpfman accepts from a registry: media types, descriptors, and the bounds on each.

A registry is not trusted: every manifest, index and blob is held against the digest and size it
was asked for (:mod:`~reconciler.images.remote` does that while downloading), and every document
must be one of the types below, parse as JSON of the expected shape and stay under its bound.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from reconciler.images.errors import ImageError
from reconciler.images.reference import DIGEST
from reconciler.values import frozen

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join((*MANIFESTS, *INDEXES))

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
CONFIGS = (OCI_CONFIG, DOCKER_CONFIG)

OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYERS = (OCI_LAYER_GZIP, DOCKER_LAYER_GZIP, OCI_LAYER_TAR)

# Bounds. A bytecode image is a few kilobytes of JSON and one layer holding an ELF object of at
# most 64 MiB (the same bound as for a path); anything larger is not a bytecode image.
MAX_MANIFEST = 4 * 1024 * 1024  # the distribution spec's own limit for manifests
MAX_CONFIG = 1024 * 1024
MAX_LAYER = 64 * 1024 * 1024
MAX_INDEX_ENTRIES = 64


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@frozen
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: str | None = None  # os/arch[/variant], for index entries

    def as_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@frozen
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@frozen
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]


def check_blob(data: bytes, want: Descriptor, where: str) -> None:
    """``data`` is exactly what ``want`` describes, or ImageError."""
    if len(data) != want.size:
        raise ImageError(
            f"{where}: {want.digest} is {len(data)} bytes, the manifest says {want.size}"
        )
    got = digest_of(data)
    if got != want.digest:
        raise ImageError(f"{where}: content does not match its digest {want.digest} (it is {got})")


def _json(data: bytes, what: str, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ImageError(f"{where}: the {what} is not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ImageError(f"{where}: the {what} is not a JSON object")
    return doc


def _descriptor(raw: Any, allowed: tuple[str, ...], what: str, where: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise ImageError(f"{where}: a {what} descriptor is not an object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if media_type not in allowed:
        raise ImageError(
            f"{where}: {what} media type {media_type!r} is not one bpfman reads "
            f"({', '.join(allowed)}); is this a bytecode image?"
        )
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise ImageError(f"{where}: {what} digest {digest!r} is not sha256:<64 hex>")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ImageError(f"{where}: {what} size {size!r} is not a byte count")
    platform = None
    if isinstance(raw.get("platform"), dict):
        p = raw["platform"]
        parts = [p.get("os"), p.get("architecture"), p.get("variant")]
        platform = "/".join(str(x) for x in parts if isinstance(x, str) and x)
    return Descriptor(media_type, digest, size, platform)


def parse_document(data: bytes, media_type: str, where: str) -> Manifest | Index:
    """A manifest or an index, by its media type (from the response, checked against its own
    ``mediaType`` field where it has one)."""
    if media_type not in (*MANIFESTS, *INDEXES):
        raise ImageError(
            f"{where}: the registry answered with media type {media_type!r}, not an image "
            "manifest or index bpfman reads (OCI or Docker v2)"
        )
    doc = _json(data, "manifest", where)
    declared = doc.get("mediaType")
    if declared is not None and declared != media_type:
        raise ImageError(
            f"{where}: the manifest says it is {declared!r} but was served as {media_type!r}"
        )
    if doc.get("schemaVersion") != 2:
        raise ImageError(f"{where}: schemaVersion {doc.get('schemaVersion')!r}, expected 2")
    if media_type in INDEXES:
        entries = doc.get("manifests")
        if not isinstance(entries, list) or not entries:
            raise ImageError(f"{where}: the index lists no manifests")
        if len(entries) > MAX_INDEX_ENTRIES:
            raise ImageError(f"{where}: the index lists over {MAX_INDEX_ENTRIES} manifests")
        return Index(
            media_type, tuple(_descriptor(e, MANIFESTS, "manifest", where) for e in entries)
        )
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise ImageError(f"{where}: the manifest has no layers list")
    return Manifest(
        media_type,
        _descriptor(doc.get("config"), CONFIGS, "config", where),
        tuple(_descriptor(layer, LAYERS, "layer", where) for layer in layers),
    )


def parse_config(data: bytes, where: str) -> tuple[dict[str, str], str]:
    """The image config's labels and its platform (os/architecture[/variant])."""
    doc = _json(data, "image config", where)
    config = doc.get("config")
    labels = (config.get("Labels") if isinstance(config, dict) else None) or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise ImageError(f"{where}: the image config's labels are not strings")
    parts = [doc.get("os"), doc.get("architecture"), doc.get("variant")]
    platform = "/".join(str(x) for x in parts if isinstance(x, str) and x)
    return labels, platform
