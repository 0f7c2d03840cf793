"""The image cache: blobs by digest, and what each tag resolved to when it was last pulled.

Layout under the cache directory (``<state-dir>/images`` unless the host config says otherwise)::

    blobs/sha256/<hex>      manifests, indexes, configs and layers, exactly as downloaded
    objects/sha256/<hex>.o  the ELF object taken out of the layer with that digest
    refs/<hex>.json         {"reference": ..., "digest": ...}: a tag's last resolution
    tmp/                    downloads in progress

A blob enters ``blobs/`` only by rename, after its digest and size were checked, so a crash or a
kill mid-download leaves at most a file in ``tmp/`` that nothing reads (and the next store
removes). Two pulls at once write their own temporary files and rename identical content over
each other, which is harmless. Blobs are checked again when read: the cache is a copy, the
digest is the truth.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

from reconciler.images.content import digest_of
from reconciler.images.errors import ImageError
from reconciler.images.reference import DIGEST
from reconciler.state import write_atomic

_STALE_TMP_S = 3600  # a temporary file this old belongs to a pull that died


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._swept = False

    def _dir(self, *parts: str) -> Path:
        d = self.root.joinpath(*parts)
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        return d

    def blob_path(self, digest: str) -> Path:
        if not DIGEST.fullmatch(digest):
            raise ImageError(f"not a sha256 digest: {digest!r}")
        return self.root / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def has(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read(self, digest: str, limit: int) -> bytes | None:
        """The blob, checked against its digest; None when it is not here (a damaged one is
        removed, and counts as not here)."""
        path = self.blob_path(digest)
        try:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            return None
        if len(data) > limit or digest_of(data) != digest:
            path.unlink(missing_ok=True)
            return None
        return data

    def temporary(self) -> tuple[int, Path]:
        """A new temporary file for a download: (fd, path)."""
        tmp = self._dir("tmp")
        if not self._swept:  # once per store: what died before this process is old news
            self._swept = True
            self._sweep(tmp)
        name = f"{os.getpid()}-{time.monotonic_ns()}-{os.urandom(4).hex()}"
        path = tmp / name
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), path

    def commit(self, tmp: Path, digest: str) -> Path:
        """Move a checked download into place."""
        final = self.blob_path(digest)
        self._dir("blobs", "sha256")
        os.replace(tmp, final)
        return final

    def put(self, data: bytes, digest: str) -> None:
        """Keep ``data`` (already checked against ``digest``)."""
        self._write(data, self.blob_path(digest))

    def object_path(self, layer_digest: str) -> Path:
        return self.root / "objects" / "sha256" / (layer_digest.removeprefix("sha256:") + ".o")

    def put_object(self, layer_digest: str, data: bytes) -> Path:
        final = self.object_path(layer_digest)
        self._write(data, final)
        return final

    def _write(self, data: bytes, final: Path) -> None:
        """``data`` into ``final`` by way of a temporary file: never a torn file there."""
        fd, tmp = self.temporary()
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _ref_path(self, reference: str) -> Path:
        return self.root / "refs" / (hashlib.sha256(reference.encode()).hexdigest() + ".json")

    def resolved(self, reference: str) -> str | None:
        """The digest ``reference`` (a tag) resolved to when last pulled, if known."""
        try:
            doc = json.loads(self._ref_path(reference).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or doc.get("reference") != reference:
            return None
        digest = doc.get("digest")
        return digest if isinstance(digest, str) and DIGEST.fullmatch(digest) else None

    def remember(self, reference: str, digest: str) -> None:
        self._dir("refs")
        doc = json.dumps({"reference": reference, "digest": digest}) + "\n"
        write_atomic(self._ref_path(reference), doc, ".ref-")

    def references(self) -> dict[str, str]:
        """Every remembered reference and its digest."""
        out: dict[str, str] = {}
        for path in sorted((self.root / "refs").glob("*.json")):
            try:
                doc = json.loads(path.read_text())
                out[str(doc["reference"])] = str(doc["digest"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out

    def digests(self) -> set[str]:
        blobs = self.root / "blobs" / "sha256"
        return {f"sha256:{p.name}" for p in blobs.iterdir()} if blobs.is_dir() else set()

    def prune(self, keep: Iterable[str]) -> list[str]:
        """Remove every blob, object and remembered tag not in ``keep`` (digests, the closure
        already taken by the caller); returns the digests removed."""
        kept = set(keep)
        removed = sorted(self.digests() - kept)
        for digest in removed:
            self.blob_path(digest).unlink(missing_ok=True)
            self.object_path(digest).unlink(missing_ok=True)
        objects = self.root / "objects" / "sha256"
        if objects.is_dir():
            for p in objects.iterdir():
                if f"sha256:{p.name.removesuffix('.o')}" not in kept:
                    p.unlink(missing_ok=True)
        for reference, digest in self.references().items():
            if digest not in kept:
                self._ref_path(reference).unlink(missing_ok=True)
        return removed

    def _sweep(self, tmp: Path) -> None:
        now = time.time()
        for p in tmp.iterdir():
            with contextlib.suppress(OSError):
                if now - p.lstat().st_mtime > _STALE_TMP_S:
                    p.unlink()
