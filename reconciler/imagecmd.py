"""``bpfman image pull|inspect|build``: bytecode images by hand.

Pulling and inspecting use the same code, cache and host settings (``images:`` in the host
config) as plans will; building writes bpfman-format images (labels derived from the ELF) into
the cache, and with ``--push`` to a registry, without docker.
"""

from __future__ import annotations

import argparse
import dataclasses
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

# libbpf's section prefixes, longest first, and the program type bpfman's labels give them
# (upstream's names: xdp, tc, tcx, tracepoint, kprobe, uprobe, fentry, fexit).
_SECTION_TYPES = (
    ("uretprobe", "uprobe"),
    ("kretprobe", "kprobe"),
    ("tracepoint", "tracepoint"),
    ("classifier", "tc"),
    ("uprobe", "uprobe"),
    ("kprobe", "kprobe"),
    ("fentry", "fentry"),
    ("fexit", "fexit"),
    ("tcx/", "tcx"),
    ("xdp", "xdp"),
    ("tp/", "tracepoint"),
    ("tc", "tc"),
)


def settings_and_store(args: argparse.Namespace) -> tuple[RegistrySettings, Store]:
    try:
        settings = invocation.host(args).config().images
    except HostError as e:
        raise invocation.host_error(e) from None
    root = settings.cache_dir or Path(args.state_dir) / "images"
    return settings, Store(root)


def cmd_image(args: argparse.Namespace, _color: bool) -> int:
    try:
        return {"pull": _pull, "inspect": _inspect, "build": _build}[args.image_command](args)
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
    }


def program_type(section: str) -> str | None:
    for prefix, kind in _SECTION_TYPES:
        if section.startswith(prefix):
            return kind
    return None


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
