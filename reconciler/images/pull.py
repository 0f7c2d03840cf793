"""Getting an image's bytecode onto this host, by pull policy.

``IfNotPresent`` (the default) uses the cache when it holds the reference (a digest, or a tag
pulled before) and needs no network then; ``Always`` asks the registry what a tag points to
now; ``Never`` uses only the cache. Whatever the policy, every part is checked against its
digest before use, and the result names the digest the reference resolved to, so that a saved
plan can ask for exactly that digest later.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import field
from pathlib import Path
from typing import Any

from reconciler.images import content, layout, signing
from reconciler.images.content import Descriptor, Index, Manifest
from reconciler.images.errors import ImageError, NotFound
from reconciler.images.reference import Reference
from reconciler.images.remote import Remote
from reconciler.images.settings import RegistrySettings
from reconciler.images.store import Store
from reconciler.values import frozen

POLICIES = ("Always", "IfNotPresent", "Never")


@frozen
class PulledImage:
    reference: Reference  # as asked for
    digest: str  # what the reference resolved to (the index's digest for a multi-platform one)
    manifest_digest: str  # the platform's own manifest
    platform: str
    programs: dict[str, str] = field(default_factory=dict)
    maps: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    layer_digest: str = ""
    object_path: Path = Path()
    platforms: tuple[str, ...] = ()  # every platform of an index
    pulled: bool = False  # whether the registry was contacted
    signed_by: str | None = None  # the key (path and fingerprint) whose signature was verified


def policy_name(text: str | None) -> str:
    """A pull policy as written (any case), checked."""
    if text is None:
        return "IfNotPresent"
    for name in POLICIES:
        if text.lower() == name.lower():
            return name
    raise ImageError(f"unknown image pull policy {text!r}; use one of {', '.join(POLICIES)}")


class Puller:
    def __init__(self, settings: RegistrySettings, store: Store) -> None:
        self.settings, self.store = settings, store
        self._remotes: dict[str, Remote] = {}

    def _remote(self, registry: str) -> Remote:
        if registry not in self._remotes:
            self._remotes[registry] = Remote(self.settings, registry)
        return self._remotes[registry]

    def pull(self, ref: Reference, policy: str = "IfNotPresent") -> PulledImage:
        """The image, by ``policy``; when the host requires signatures, verified too (ImageError
        otherwise, naming what was found and what is required)."""
        image = self._pull(ref, policy)
        if self.settings.require_signature:
            keys = [signing.load_key(k) for k in self.settings.signing_keys]
            signed_by = self.verify(ref, image.digest, keys, policy)
            image = dataclasses.replace(image, signed_by=signed_by)
        return image

    def verify(self, ref: Reference, digest: str, keys: list[signing.Key], policy: str) -> str:
        """Which of ``keys`` signed ``digest`` (``path (fingerprint)``); ImageError when none
        did. The signatures come from the cache, or the registry unless the policy is Never."""
        where = str(ref)
        if not keys:
            raise ImageError(
                f"{where}: the host requires signed images but lists no key to check them "
                "with; add public keys to signing.keys in the host config"
            )
        found = self._signatures(ref, digest, policy)
        if not found:
            raise ImageError(
                f"{where}: {digest} is not signed (no {signing.signature_tag(digest)} in its "
                "repository) and this host requires a signature by "
                + ", ".join(f"{k.path} ({k.fingerprint})" for k in keys)
                + "; sign it with bpfman image sign --key or cosign sign --key"
            )
        reasons = []
        for payload, sig in found:
            signer = next((k for k in keys if signing.verify_with(k, payload, sig)), None)
            if signer is None:
                reasons.append("a signature by a key this host does not trust")
                continue
            problem = signing.payload_problem(payload, ref, digest)
            if problem is not None:
                reasons.append(f"a signature by {signer.path} not for this image: {problem}")
                continue
            return f"{signer.path} ({signer.fingerprint})"
        raise ImageError(
            f"{where}: {digest} has {'; '.join(reasons)}; this host requires a signature by "
            + ", ".join(f"{k.path} ({k.fingerprint})" for k in keys)
        )

    def _signatures(self, ref: Reference, digest: str, policy: str) -> list[tuple[bytes, bytes]]:
        """(payload, signature) of every simple-signing layer stored for ``digest``."""
        tag = signing.signature_tag(digest)
        key = f"{ref.name}:{tag}"
        sig_digest = None if policy == "Always" else self.store.resolved(key)
        manifest = (
            self.store.read(sig_digest, content.MAX_MANIFEST) if sig_digest is not None else None
        )
        remote = None
        if manifest is None:
            if policy == "Never":
                return []
            remote = self._remote(ref.registry)
            try:
                manifest, _, sig_digest = remote.manifest(ref.repository, tag)
            except NotFound:
                return []
        out = []
        where = f"{ref}'s signature"
        for desc, sig in signing.parse_signatures(manifest, where):
            data = self.store.read(desc.digest, signing.MAX_PAYLOAD)
            if data is None:
                if remote is None:
                    remote = self._remote(ref.registry)
                remote.blob(ref.repository, desc, self.store, signing.MAX_PAYLOAD)
                data = self.store.read(desc.digest, signing.MAX_PAYLOAD)
            if data is not None:
                out.append((data, sig))
        if remote is not None and sig_digest is not None:  # fetched now: keep it for later
            self.store.put(manifest, sig_digest)
            self.store.remember(key, sig_digest)
        return out

    def _pull(self, ref: Reference, policy: str) -> PulledImage:
        where = str(ref)
        digest = ref.digest or (None if policy == "Always" else self.store.resolved(_tag_key(ref)))
        if digest is not None and policy != "Always":
            local = self._local(ref, digest)
            if local is not None:
                return local
        if policy == "Never":
            raise ImageError(
                f"{where} is not in the image cache and its pull policy is Never; pull it "
                "first (bpfman image pull) or use IfNotPresent"
            )
        return self._fetch(ref, where)

    def _local(self, ref: Reference, digest: str) -> PulledImage | None:
        """The image from the cache alone, or None when any part is missing."""
        top = self.store.read(digest, content.MAX_MANIFEST)
        if top is None:
            return None
        where = str(ref)
        doc = content.parse_document(top, _media_type(top), where)
        platforms: tuple[str, ...] = ()
        manifest_digest = digest
        if isinstance(doc, Index):
            platforms = tuple(e.platform or "" for e in doc.manifests)
            entry = layout.choose(doc, where)
            data = self.store.read(entry.digest, content.MAX_MANIFEST)
            if data is None:
                return None
            doc = content.parse_document(data, entry.media_type, where)
            manifest_digest = entry.digest
        if not isinstance(doc, Manifest):
            raise ImageError(f"{where}: an index inside an index is not a bytecode image")
        layer = _one_layer(doc, where)
        config = self.store.read(doc.config.digest, content.MAX_CONFIG)
        if config is None or not self.store.has(layer.digest):
            return None
        return self._finish(ref, digest, manifest_digest, config, layer, platforms, False)

    def _fetch(self, ref: Reference, where: str) -> PulledImage:
        """Everything is checked before anything is kept: the documents first (types, one
        layer, sizes within bounds), then each blob as it arrives; a refusal at any point
        removes what this pull had added to the cache."""
        remote = self._remote(ref.registry)
        top, media_type, digest = remote.manifest(ref.repository, ref.lookup)
        doc = content.parse_document(top, media_type, where)
        documents = [(top, digest)]
        platforms: tuple[str, ...] = ()
        manifest_digest = digest
        if isinstance(doc, Index):
            platforms = tuple(e.platform or "" for e in doc.manifests)
            entry = layout.choose(doc, where)
            data, child_type, child_digest = remote.manifest(ref.repository, entry.digest)
            content.check_blob(data, entry, where)
            doc = content.parse_document(data, child_type or entry.media_type, where)
            documents.append((data, child_digest))
            manifest_digest = child_digest
        if not isinstance(doc, Manifest):
            raise ImageError(f"{where}: an index inside an index is not a bytecode image")
        layer = _one_layer(doc, where)
        for part, bound in ((doc.config, content.MAX_CONFIG), (layer, content.MAX_LAYER)):
            if part.size > bound:
                raise ImageError(
                    f"{where}: {part.digest} is {part.size} bytes, over the {bound} byte bound "
                    "for this part of a bytecode image"
                )
        added: list[str] = []
        try:
            for part, bound in ((doc.config, content.MAX_CONFIG), (layer, content.MAX_LAYER)):
                if not self.store.has(part.digest):
                    remote.blob(ref.repository, part, self.store, bound)
                    added.append(part.digest)
            config = self.store.read(doc.config.digest, content.MAX_CONFIG)
            if config is None:
                raise ImageError(f"{where}: the config {doc.config.digest} could not be kept")
            image = self._finish(ref, digest, manifest_digest, config, layer, platforms, True)
        except BaseException:
            for d in added:
                self.store.blob_path(d).unlink(missing_ok=True)
                self.store.object_path(d).unlink(missing_ok=True)
            raise
        for data, d in documents:
            self.store.put(data, d)
        if ref.digest is None:
            self.store.remember(_tag_key(ref), digest)
        return image

    def _finish(
        self,
        ref: Reference,
        digest: str,
        manifest_digest: str,
        config: bytes,
        layer: Descriptor,
        platforms: tuple[str, ...],
        pulled: bool,
    ) -> PulledImage:
        where = str(ref)
        labels, platform = content.parse_config(config, where)
        programs, maps = layout.programs_and_maps(labels, where)
        obj = self.store.object_path(layer.digest)
        if not obj.is_file():
            data = self.store.read(layer.digest, content.MAX_LAYER)
            if data is None:
                raise ImageError(f"{where}: the cached layer {layer.digest} is damaged; pull again")
            elf = layout.extract_object(data, layer.media_type, labels, where)
            layout.check_object(elf, where)
            obj = self.store.put_object(layer.digest, elf)
        else:
            with open(obj, "rb") as f:  # the header says what it is; the rest is the kernel's
                layout.check_object(f.read(64), where)
        return PulledImage(
            reference=ref,
            digest=digest,
            manifest_digest=manifest_digest,
            platform=platform,
            programs=programs,
            maps=maps,
            labels=labels,
            layer_digest=layer.digest,
            object_path=obj,
            platforms=platforms,
            pulled=pulled,
        )


def _tag_key(ref: Reference) -> str:
    return f"{ref.name}:{ref.tag or 'latest'}"


def _one_layer(doc: Manifest, where: str) -> Descriptor:
    if len(doc.layers) != 1:
        raise ImageError(
            f"{where}: a bytecode image has exactly one layer holding the ELF object; this one "
            f"has {len(doc.layers)}"
        )
    return doc.layers[0]


def _media_type(data: bytes) -> str:
    """The media type of a cached manifest or index (checked when it was downloaded)."""
    try:
        doc: Any = json.loads(data)
    except (ValueError, RecursionError):
        return ""
    if not isinstance(doc, dict):
        return ""
    declared = doc.get("mediaType")
    if isinstance(declared, str):
        return declared
    return content.OCI_INDEX if "manifests" in doc else content.OCI_MANIFEST
