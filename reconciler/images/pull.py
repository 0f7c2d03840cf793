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
from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import Any

from reconciler.images import content, keyless, layout, signing
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
    signed_by: str | None = None  # the key (path and fingerprint) or identity that signed


@frozen
class Trust:
    """Whose signatures a host (or ``bpfman image verify``) accepts."""

    keys: tuple[signing.Key, ...] = ()
    identities: tuple[keyless.Identity, ...] = ()
    trusted_root: Path | None = None  # None: Sigstore's public-good root

    @classmethod
    def of(cls, settings: RegistrySettings) -> Trust:
        keys = tuple(signing.load_key(k) for k in settings.signing_keys)
        return cls(keys, settings.signing_identities, settings.trusted_root)

    def describe(self) -> str:
        named = [f"{k.path} ({k.fingerprint})" for k in self.keys]
        named += [i.describe() for i in self.identities]
        return " or ".join(named)


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
            signed_by = self.verify(ref, image.digest, Trust.of(self.settings), policy)
            image = dataclasses.replace(image, signed_by=signed_by)
        return image

    def verify(self, ref: Reference, digest: str, trust: Trust, policy: str) -> str:
        """Who signed ``digest`` among those ``trust`` accepts: a key (``path (fingerprint)``)
        or a keyless identity; ImageError naming what was found and what is required when no
        one did. Signatures come from the cache, or the registry unless the policy is Never."""
        where = str(ref)
        if not trust.keys and not trust.identities:
            raise ImageError(
                f"{where}: the host requires signed images but lists no key or identity to "
                "check them with; add signing.keys or signing.identities to the host config"
            )
        reasons: list[str] = []
        found = 0
        if trust.keys:
            for payload, sig, claimed in self._signatures(ref, digest, policy):
                found += 1
                signer = next((k for k in trust.keys if signing.verify_with(k, payload, sig)), None)
                if signer is None:
                    if claimed is not None and signing.verify_with(claimed, payload, sig):
                        reasons.append(f"a valid signature by another key, {claimed.fingerprint}")
                    else:
                        reasons.append("a key-pair signature that none of signing.keys verifies")
                    continue
                problem = signing.payload_problem(payload, ref, digest)
                if problem is not None:
                    reasons.append(f"a signature by {signer.path} not for this image: {problem}")
                    continue
                return f"{signer.path} ({signer.fingerprint})"
        if trust.identities:
            root = keyless.trusted_root(trust.trusted_root)
            for bundle in self._bundles(ref, digest, policy):
                found += 1
                try:
                    who = keyless.verify(bundle, digest, root)
                except ImageError as e:
                    reasons.append(str(e))
                    continue
                if any(identity.accepts(who) for identity in trust.identities):
                    return who.describe()
                reasons.append(f"a valid keyless signature by {who.describe()}")
        if not found:
            places = []
            if trust.keys:
                places.append(f"no {signing.signature_tag(digest)}")
            if trust.identities:
                places.append("no Sigstore bundle among its referrers")
            raise ImageError(
                f"{where}: {digest} is not signed ({' and '.join(places)} in its repository) "
                f"and this host requires a signature by {trust.describe()}; sign it with "
                + ("bpfman image sign --key or cosign sign --key" if trust.keys else "cosign sign")
            )
        raise ImageError(
            f"{where}: {digest} has {'; '.join(reasons)}; this host requires a signature by "
            + trust.describe()
        )

    def _signatures(
        self, ref: Reference, digest: str, policy: str
    ) -> list[tuple[bytes, bytes, signing.Key | None]]:
        """(payload, signature, claimed key) of every simple-signing layer stored for
        ``digest``."""
        tag = signing.signature_tag(digest)
        where = f"{ref}'s signature"
        manifest, remote = self._attached(
            ref, tag, policy, lambda r: r.manifest(ref.repository, tag)
        )
        if manifest is None:
            return []
        out = []
        for found in signing.parse_signatures(manifest, where):
            data, remote = self._blob(ref, found.descriptor, signing.MAX_PAYLOAD, remote)
            if data is not None:
                out.append((data, found.signature, found.claimed))
        return out

    def _bundles(self, ref: Reference, digest: str, policy: str) -> list[bytes]:
        """Every Sigstore bundle attached to ``digest`` (through the referrers API, or the
        referrers tag where the registry has no such API)."""
        tag = keyless.referrers_tag(digest)
        where = f"{ref}'s referrers"

        def listing(remote: Remote) -> tuple[bytes, str, str]:
            found = remote.referrers(ref.repository, digest)
            if found is not None:
                return found, content.OCI_INDEX, content.digest_of(found)
            return remote.manifest(ref.repository, tag)

        index, remote = self._attached(ref, tag, policy, listing)
        if index is None:
            return []
        out = []
        for desc in keyless.bundle_manifests(index, where):
            manifest = self.store.read(desc.digest, content.MAX_MANIFEST)
            if manifest is None:
                if policy == "Never":
                    continue
                remote = remote or self._remote(ref.registry)
                try:
                    manifest, _, _ = remote.manifest(ref.repository, desc.digest)
                except NotFound:
                    continue
                self.store.put(manifest, desc.digest)
            layer = keyless.bundle_layer(manifest, digest, where)
            if layer is None:
                continue
            data, remote = self._blob(ref, layer, keyless.MAX_BUNDLE, remote)
            if data is not None:
                out.append(data)
        return out

    def _attached(
        self,
        ref: Reference,
        tag: str,
        policy: str,
        fetch: Callable[[Remote], tuple[bytes, str, str]],
    ) -> tuple[bytes | None, Remote | None]:
        """What is attached to an image under ``tag`` (a signature manifest, a referrers
        list): from the cache unless the policy is Always, else fetched and remembered."""
        key = f"{ref.name}:{tag}"
        cached = None if policy == "Always" else self.store.resolved(key)
        data = self.store.read(cached, content.MAX_MANIFEST) if cached is not None else None
        if data is not None or policy == "Never":
            return data, None
        remote = self._remote(ref.registry)
        try:
            data, _, digest = fetch(remote)
        except NotFound:
            return None, remote
        self.store.put(data, digest)
        self.store.remember(key, digest)
        return data, remote

    def _blob(
        self, ref: Reference, desc: Descriptor, limit: int, remote: Remote | None
    ) -> tuple[bytes | None, Remote | None]:
        data = self.store.read(desc.digest, limit)
        if data is None:
            remote = remote or self._remote(ref.registry)
            remote.blob(ref.repository, desc, self.store, limit)
            data = self.store.read(desc.digest, limit)
        return data, remote

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
