"""bpfman's bytecode image format, read and written.

An image is a plain container image: its config's labels ``io.ebpf.programs`` and
``io.ebpf.maps`` hold JSON objects mapping program and map names to their types, and its one
layer (tar, usually gzip-compressed) holds the ELF object at its root. A multi-platform image is
an index with one such image per platform; the host's is chosen. Images of the older format
(labels ``io.ebpf.program_name`` and ``io.ebpf.program_type``, and ``io.ebpf.filename``) are
read too.
"""

from __future__ import annotations

import gzip
import io
import json
import platform as _platform
import struct
import sys
import tarfile
from typing import Any

from reconciler.images import content
from reconciler.images.content import Descriptor, Index
from reconciler.images.errors import ImageError

PROGRAMS_LABEL = "io.ebpf.programs"
MAPS_LABEL = "io.ebpf.maps"
_OLD_NAME, _OLD_TYPE, _OLD_FILE = "io.ebpf.program_name", "io.ebpf.program_type", "io.ebpf.filename"
MAX_OBJECT = 64 * 1024 * 1024  # as for bytecode given by path
MAX_UNPACKED = 2 * MAX_OBJECT  # everything a layer may expand to (a gzip bomb stops here)
MAX_MEMBERS = 256
EM_BPF = 247
_ARCHES = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm/v7",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "i686": "386",
}


def host_platform() -> str:
    """This host as an image platform: linux/amd64, linux/arm64, ..."""
    machine = _platform.machine()
    return f"linux/{_ARCHES.get(machine, machine)}"


def choose(index: Index, where: str, want: str | None = None) -> Descriptor:
    """The index's manifest for this host's platform (or ``want``)."""
    want = want or host_platform()
    for entry in index.manifests:
        if entry.platform == want or (entry.platform or "").startswith(want + "/"):
            return entry
    have = ", ".join(sorted(e.platform or "unnamed" for e in index.manifests))
    raise ImageError(
        f"{where}: no image for this host's platform {want} (the index has: {have}); build "
        f"and push one for {want}, e.g. with bpfman image build --platform {want}=FILE"
    )


def programs_and_maps(labels: dict[str, str], where: str) -> tuple[dict[str, str], dict[str, str]]:
    """The programs (name -> type) and maps (name -> type) the labels declare."""
    if PROGRAMS_LABEL in labels:
        programs = _name_map(labels[PROGRAMS_LABEL], PROGRAMS_LABEL, where)
        maps = _name_map(labels.get(MAPS_LABEL, "{}"), MAPS_LABEL, where)
        return programs, maps
    if _OLD_NAME in labels and _OLD_TYPE in labels:
        return {labels[_OLD_NAME]: labels[_OLD_TYPE]}, {}
    raise ImageError(
        f"{where}: not a bpfman bytecode image: its config has no {PROGRAMS_LABEL} label (a "
        "JSON object of program names and types); build it with bpfman image build"
    )


def _name_map(text: str, label: str, where: str) -> dict[str, str]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise ImageError(f"{where}: label {label} is not JSON: {text[:100]!r}") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ImageError(f"{where}: label {label} must be a JSON object of names to type names")
    return value


class _Bounded(io.RawIOBase):
    """A stream that refuses to yield more than ``limit`` bytes in all."""

    def __init__(self, inner: Any, limit: int, where: str) -> None:
        self.inner, self.left, self.where = inner, limit, where

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(min(len(buffer), self.left + 1))
        if len(data) > self.left:
            raise ImageError(f"{self.where}: the layer unpacks to over {MAX_UNPACKED} bytes")
        self.left -= len(data)
        buffer[: len(data)] = data
        return len(data)


def extract_object(layer: bytes, media_type: str, labels: dict[str, str], where: str) -> bytes:
    """The ELF object at the root of the layer: the only one, or the one ``io.ebpf.filename``
    names. Only regular files at the root are considered; nothing is written anywhere."""
    raw: Any = io.BytesIO(layer)
    if media_type != content.OCI_LAYER_TAR:
        raw = gzip.GzipFile(fileobj=raw)
    stream = io.BufferedReader(_Bounded(raw, MAX_UNPACKED, where))
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for count, member in enumerate(tar, 1):
                if count > MAX_MEMBERS:
                    raise ImageError(f"{where}: the layer has over {MAX_MEMBERS} entries")
                name = member.name.removeprefix("./")
                if not member.isreg() or "/" in name or not name:
                    continue
                if member.size > MAX_OBJECT:
                    raise ImageError(f"{where}: {name} is over {MAX_OBJECT} bytes")
                f = tar.extractfile(member)
                data = f.read() if f is not None else b""
                if data[:4] == b"\x7fELF":
                    found[name] = data
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as e:
        raise ImageError(f"{where}: the layer is not a valid tar archive ({e})") from None
    wanted = labels.get(_OLD_FILE)
    if wanted is not None:
        if wanted not in found:
            raise ImageError(f"{where}: the layer has no ELF file {wanted} at its root")
        return found[wanted]
    if len(found) != 1:
        have = ", ".join(sorted(found)) or "none"
        raise ImageError(
            f"{where}: a bytecode image holds one ELF object at the root of its layer; this "
            f"one has {len(found)} ({have})"
        )
    return next(iter(found.values()))


def check_object(data: bytes, where: str) -> None:
    """An eBPF ELF object for this host's byte order."""
    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise ImageError(f"{where}: the object in the image is not an ELF file")
    if data[4] != 2:
        raise ImageError(f"{where}: the object in the image is not a 64-bit ELF file")
    order = {1: "little", 2: "big"}.get(data[5])
    if order is None:
        raise ImageError(f"{where}: the object in the image has an unknown byte order")
    (machine,) = struct.unpack_from("<H" if order == "little" else ">H", data, 18)
    if machine != EM_BPF:
        raise ImageError(f"{where}: the object in the image is not eBPF (e_machine {machine})")
    if order != sys.byteorder:
        raise ImageError(
            f"{where}: the object in the image is {order}-endian and this host is "
            f"{sys.byteorder}-endian; push one compiled for this host (clang -target "
            f"bpf{'el' if sys.byteorder == 'little' else 'eb'})"
        )


def build_layer(name: str, data: bytes) -> tuple[bytes, str]:
    """A gzip'd tar with ``data`` as ``name`` at its root, byte for byte reproducible:
    (layer, digest of the uncompressed tar for the config's diff_ids)."""
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))
    plain = tar_bytes.getvalue()
    return gzip.compress(plain, mtime=0), content.digest_of(plain)


def build_config(
    platform: str, programs: dict[str, str], maps: dict[str, str], diff_id: str
) -> bytes:
    os_name, _, arch = platform.partition("/")
    arch, _, variant = arch.partition("/")
    doc: dict[str, Any] = {
        "architecture": arch,
        "os": os_name,
        "config": {
            "Labels": {
                PROGRAMS_LABEL: json.dumps(programs, sort_keys=True, separators=(",", ":")),
                MAPS_LABEL: json.dumps(maps, sort_keys=True, separators=(",", ":")),
            }
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    if variant:
        doc["variant"] = variant
    return _canonical(doc)


def build_manifest(config: Descriptor, layer: Descriptor) -> bytes:
    return _canonical(
        {
            "schemaVersion": 2,
            "mediaType": content.OCI_MANIFEST,
            "config": config.as_json(),
            "layers": [layer.as_json()],
        }
    )


def build_index(entries: list[tuple[Descriptor, str]]) -> bytes:
    manifests = []
    for desc, platform in entries:
        os_name, _, arch = platform.partition("/")
        arch, _, variant = arch.partition("/")
        p = {"architecture": arch, "os": os_name, **({"variant": variant} if variant else {})}
        manifests.append({**desc.as_json(), "platform": p})
    return _canonical({"schemaVersion": 2, "mediaType": content.OCI_INDEX, "manifests": manifests})


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
