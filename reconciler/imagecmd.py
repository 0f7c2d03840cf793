"""``bpfman image pull|inspect|build``: bytecode images by hand.

Pulling and inspecting use the same code, cache and host settings (``images:`` in the host
config) as plans will; building writes bpfman-format images (labels derived from the ELF) into
the cache, and with ``--push`` to a registry, without docker.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

from reconciler import invocation
from reconciler.errors import UserError
from reconciler.images import ImageError, content, layout, reference
from reconciler.images.content import Descriptor
from reconciler.images.pull import PulledImage, Puller, policy_name
from reconciler.images.remote import Remote
from reconciler.images.settings import RegistrySettings
from reconciler.images.store import Store
from reconciler.spec.host import HostError
from reconciler.terminal import print_json


def settings_and_store(args: argparse.Namespace) -> tuple[RegistrySettings, Store]:
    try:
        settings = invocation.host(args).config().images
    except HostError as e:
        raise invocation.host_error(e) from None
    root = settings.cache_dir or Path(args.state_dir) / "images"
    return settings, Store(root)


def cmd_image(args: argparse.Namespace, _color: bool) -> int:
    try:
        commands = {
            "pull": _pull,
            "inspect": _inspect,
            "build": _build,
            "sign": _sign,
            "verify": _verify,
            "prune": _prune,
        }
        return commands[args.image_command](args)
    except ImageError as e:
        raise UserError(str(e)) from None


def _pull(args: argparse.Namespace) -> int:
    settings, store = settings_and_store(args)
    image = Puller(settings, store).pull(reference.parse(args.ref), policy_name(args.pull_policy))
    if args.json:
        print_json(_document(image))
    else:
        how = "pulled" if image.pulled else "in the cache"
        print(f"{image.reference} ({how})")
        print(f"  digest:   {image.digest}")
        print(f"  platform: {image.platform}")
        print(f"  object:   {image.object_path}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    settings, store = settings_and_store(args)
    image = Puller(settings, store).pull(reference.parse(args.ref), policy_name(args.pull_policy))
    doc = _document(image)
    from reconciler.spec.elf import ElfError, read_bpf_object

    try:
        elf = read_bpf_object(image.object_path)
        doc["elf"] = {
            "byteOrder": elf.byte_order,
            "functions": {f.name: f.section for f in elf.programs()},
            "maps": list(elf.maps),
        }
    except ElfError as e:
        doc["elf"] = {"error": str(e)}
    if args.json:
        print_json(doc)
        return 0
    print(f"{image.reference}")
    print(f"  digest:    {image.digest}")
    if image.manifest_digest != image.digest:
        print(f"  manifest:  {image.manifest_digest} (for {image.platform})")
    if image.platforms:
        print(f"  platforms: {', '.join(image.platforms)}")
    print(f"  platform:  {image.platform}")
    print(f"  layer:     {image.layer_digest}")
    print("  programs (labels):")
    for name, kind in sorted(image.programs.items()):
        print(f"    {name}: {kind}")
    print("  maps (labels):")
    for name, kind in sorted(image.maps.items()):
        print(f"    {name}: {kind}")
    elf_doc = doc["elf"]
    if "error" in elf_doc:
        print(f"  ELF: {elf_doc['error']}")
    else:
        print(f"  ELF ({elf_doc['byteOrder']}-endian):")
        for name, section in sorted(elf_doc["functions"].items()):
            print(f'    {name} in SEC("{section}")')
    for key, value in sorted(image.labels.items()):
        if key not in (layout.PROGRAMS_LABEL, layout.MAPS_LABEL):
            print(f"  label {key}={value}")
    return 0


def _document(image: PulledImage) -> dict[str, Any]:
    return {
        "reference": str(image.reference),
        "digest": image.digest,
        "manifestDigest": image.manifest_digest,
        "platform": image.platform,
        "platforms": list(image.platforms),
        "layerDigest": image.layer_digest,
        "programs": image.programs,
        "maps": image.maps,
        "labels": image.labels,
        "object": str(image.object_path),
        "pulled": image.pulled,
        "signedBy": image.signed_by,
    }


def program_type(section: str) -> str | None:
    from reconciler.kinds import sections

    return sections.label_type(section)


def _labels_of(path: Path) -> tuple[bytes, dict[str, str], dict[str, str]]:
    """The object's bytes, and its programs and maps as the labels give them."""
    from reconciler.spec.elf import ElfError, parse_bpf_object

    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        elf = parse_bpf_object(data)
    except ElfError as e:
        raise UserError(f"{path}: {e}") from None
    programs = {}
    for f in elf.programs():
        kind = program_type(f.section)
        if kind is None:
            raise UserError(
                f'{path}: {f.name} is in SEC("{f.section}"), which is no program type a '
                "bytecode image names (xdp, tc, tcx, tracepoint, kprobe, uprobe, fentry, fexit)"
            )
        programs[f.name] = kind
    if not programs:
        raise UserError(f"{path}: no programs in this object")
    maps = {name: _map_type(path, name) for name in elf.maps}
    return data, programs, maps


def _map_type(path: Path, name: str) -> str:
    """The map's type as libbpf reads it (open only: nothing is loaded)."""
    from reconciler.kernel.sys import bpf
    from reconciler.kernel.sys.bpfobject import LibbpfObject

    try:
        with LibbpfObject(str(path)) as obj:
            for decl in obj.declared_maps():
                if decl.name == name:
                    return bpf.map_type_name(decl.shape.type)
    except OSError:
        pass
    return "unknown"


def _build(args: argparse.Namespace) -> int:
    settings, store = settings_and_store(args)
    target = reference.parse(args.tag)
    if target.digest is not None:
        raise UserError(f"--tag {args.tag}: a built image gets its digest; give a tag only")
    items: list[tuple[str, Path]] = []
    if args.bytecode:
        items.append((layout.host_platform(), Path(args.bytecode)))
    for spec in args.platform:
        plat, sep, file = spec.partition("=")
        if not sep or plat.count("/") not in (1, 2) or not file:
            raise UserError(
                f"--platform {spec!r}: write OS/ARCH=FILE, e.g. linux/arm64=prog_bpfel.o"
            )
        items.append((plat, Path(file)))
    if not items:
        raise UserError("image build needs --bytecode FILE or --platform OS/ARCH=FILE")
    if len({p for p, _ in items}) != len(items):
        raise UserError("image build: one object per platform")
    parts: list[tuple[bytes, str]] = []  # layers and configs
    manifests: list[tuple[Descriptor, bytes, str]] = []
    for plat, path in items:
        data, programs, maps = _labels_of(path)
        layer, diff_id = layout.build_layer(path.name, data)
        layer_desc = Descriptor(content.OCI_LAYER_GZIP, content.digest_of(layer), len(layer))
        config = layout.build_config(plat, programs, maps, diff_id)
        config_desc = Descriptor(content.OCI_CONFIG, content.digest_of(config), len(config))
        manifest = layout.build_manifest(config_desc, layer_desc)
        desc = Descriptor(content.OCI_MANIFEST, content.digest_of(manifest), len(manifest))
        parts += [(layer, layer_desc.digest), (config, config_desc.digest)]
        manifests.append((desc, manifest, plat))
    if len(items) == 1 and args.bytecode:
        top, top_type = manifests[0][1], content.OCI_MANIFEST
    else:
        top = layout.build_index([(desc, plat) for desc, _, plat in manifests])
        top_type = content.OCI_INDEX
    digest = content.digest_of(top)
    for data, d in [*parts, *((m, desc.digest) for desc, m, _ in manifests), (top, digest)]:
        store.put(data, d)
    store.remember(f"{target.name}:{target.tag}", digest)
    if args.push:
        assert target.tag is not None
        # A push goes to the registry the tag names: mirrors are for pulling.
        remote = Remote(dataclasses.replace(settings, mirrors={}), target.registry)
        for data, d in parts:
            remote.push_blob(target.repository, data, d)
        if top_type == content.OCI_INDEX:
            for desc, data, _ in manifests:
                remote.push_manifest(target.repository, desc.digest, data, content.OCI_MANIFEST)
        remote.push_manifest(target.repository, target.tag, top, top_type)
    print(f"{target.name}:{target.tag}@{digest}" + (" (pushed)" if args.push else ""))
    return 0


def _sign(args: argparse.Namespace) -> int:
    """Sign the digest ``REF`` resolves to now with a private key, cosign's way, and push the
    signature next to the image (added to the signatures already there)."""
    from reconciler.images import signing

    settings, store = settings_and_store(args)
    # Through the mirror, if any: a signature of quay.io/... belongs where this host pulls it.
    settings = dataclasses.replace(settings, require_signature=False)
    ref = reference.parse(args.ref)
    image = Puller(settings, store).pull(ref, "Always" if ref.digest is None else "IfNotPresent")
    key = _private_key(Path(args.key), args.password_file)
    body = signing.payload(ref, image.digest)
    signature = _sign_bytes(key, body)
    remote = Remote(settings, ref.registry)
    remote.push_blob(ref.repository, body, content.digest_of(body))
    config = b"{}"
    remote.push_blob(ref.repository, config, content.digest_of(config))
    tag = signing.signature_tag(image.digest)
    layers = []
    try:
        old, _, _ = remote.manifest(ref.repository, tag)
        layers = [layer for layer in json.loads(old).get("layers", []) if isinstance(layer, dict)]
    except (ImageError, ValueError):
        pass
    layer: dict[str, Any] = {
        "mediaType": signing.SIMPLE_SIGNING,
        "digest": content.digest_of(body),
        "size": len(body),
        "annotations": {
            signing.SIGNATURE_ANNOTATION: base64.b64encode(signature).decode(),
            # Who signed, so that a host trusting another key can say whose this is.
            signing.PUBLIC_KEY_ANNOTATION: signing.public_pem(key.public_key()),
        },
    }
    mine = layer["annotations"][signing.SIGNATURE_ANNOTATION]
    layers = [
        x for x in layers if (x.get("annotations") or {}).get(signing.SIGNATURE_ANNOTATION) != mine
    ] + [layer]
    manifest = {
        "schemaVersion": 2,
        "mediaType": content.OCI_MANIFEST,
        "config": {
            "mediaType": content.OCI_CONFIG,
            "digest": content.digest_of(config),
            "size": len(config),
        },
        "layers": layers,
    }
    data = json.dumps(manifest, separators=(",", ":")).encode()
    remote.push_manifest(ref.repository, tag, data, content.OCI_MANIFEST)
    print(f"signed {ref.name}@{image.digest} ({tag})")
    return 0


def _private_key(path: Path, password_file: str | None) -> Any:
    from reconciler.images import signing

    try:
        data = path.read_bytes()
        password = Path(password_file).read_bytes().rstrip(b"\n") if password_file else None
    except OSError as e:
        raise UserError(f"cannot read {e.filename}: {e.strerror}") from None
    if password is None and "COSIGN_PASSWORD" in os.environ:  # as cosign itself reads it
        password = os.environ["COSIGN_PASSWORD"].encode()
    try:
        return signing.load_private_key(data, password)
    except ImageError as e:
        raise UserError(f"{path}: {e}") from None


def _sign_bytes(key: Any, data: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = hashes.SHA384() if key.curve.key_size >= 384 else hashes.SHA256()
        return key.sign(data, ec.ECDSA(algorithm))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    raise UserError("the key must be ECDSA (P-256 or P-384), Ed25519 or RSA")


def _verify(args: argparse.Namespace) -> int:
    """Check REF's signature against --key files or keyless --certificate-identity flags, or
    else the host config's signing: section."""
    from reconciler.images import signing
    from reconciler.images.keyless import Identity
    from reconciler.images.pull import Trust

    settings, store = settings_and_store(args)
    puller = Puller(dataclasses.replace(settings, require_signature=False), store)
    ref = reference.parse(args.ref)
    policy = policy_name(args.pull_policy)
    subject, regexp = args.certificate_identity, args.certificate_identity_regexp
    if (subject or regexp) and not args.certificate_oidc_issuer:
        raise UserError("--certificate-identity needs --certificate-oidc-issuer (who issued it)")
    if args.certificate_oidc_issuer and not (subject or regexp):
        raise UserError(
            "--certificate-oidc-issuer needs --certificate-identity or "
            "--certificate-identity-regexp (who signed)"
        )
    if regexp is not None:
        try:
            re.compile(regexp)
        except re.error as e:
            raise UserError(f"--certificate-identity-regexp {regexp!r}: {e}") from None
    if args.key or args.certificate_oidc_issuer:
        identities = (
            (Identity(args.certificate_oidc_issuer, subject, regexp),)
            if args.certificate_oidc_issuer
            else ()
        )
        trust = Trust(
            tuple(signing.load_key(Path(k)) for k in args.key),
            identities,
            Path(args.trusted_root) if args.trusted_root else settings.trusted_root,
        )
    else:
        trust = Trust.of(settings)
    image = puller.pull(ref, policy)
    signer = puller.verify(ref, image.digest, trust, policy)
    if args.json:
        print_json({"reference": str(ref), "digest": image.digest, "signedBy": signer})
    else:
        print(f"{ref}@{image.digest}: signed by {signer}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    """Drop every cached image no state record (and no manifest of SOURCE, if given) names."""
    from reconciler.images.prune import closure
    from reconciler.spec import ManifestError, load_manifests
    from reconciler.spec.programs import spec_keys

    _, store = settings_and_store(args)
    ctx = invocation.context(args)
    tops = {
        str(r.attributes["image_digest"])
        for r in ctx.store.load().values()
        if isinstance(r.attributes.get("image_digest"), str)
    }
    named = 0
    if args.source:
        try:
            manifests = load_manifests(Path(args.source), None)
        except ManifestError as e:
            raise invocation.manifest_error(e) from None
        for m in manifests:
            image = m.spec[spec_keys(m.kind)["bytecode"]].get("image")
            if image is None:
                continue
            named += 1
            ref = reference.parse(image["url"])
            digest = ref.digest or store.resolved(f"{ref.name}:{ref.tag or 'latest'}")
            if digest is not None:
                tops.add(digest)
    keep = closure(store, tops)
    removed = sorted(store.digests() - keep) if args.dry_run else store.prune(keep)
    if args.json:
        print_json({"kept": sorted(keep & store.digests()), "removed": removed})
        return 0
    what = "would remove" if args.dry_run else "removed"
    kept = len(keep & store.digests())
    print(f"{what} {len(removed)} blob(s); kept {kept} for {len(tops)} image(s)")
    return 0
