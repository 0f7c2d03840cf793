"""What the image cache must keep: every part of the images still named, and their signatures.

An image is named by a state record (what is loaded now, ``image_digest``) or by a manifest of
the source given to ``bpfman image prune`` (its digest, or what its tag last resolved to). Kept
with it: an index's platform manifests, each manifest's config and layers (and the object taken
out of them), the signature manifest and the list of referrers cached for that digest (and the
payloads and Sigstore bundles below them), and the tags that
point at any of these. Everything else in the cache goes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from reconciler.images import content
from reconciler.images.reference import DIGEST
from reconciler.images.store import Store

_ATTACHED = re.compile(r"sha256-[0-9a-f]{64}(\.sig)?")


def closure(store: Store, tops: Iterable[str]) -> set[str]:
    keep: set[str] = set()
    refs = store.references()
    # What is attached to an image by tag: its cosign signature (sha256-<hex>.sig) and its list
    # of referrers (sha256-<hex>, Sigstore bundles among them).
    attached: dict[str, list[str]] = {}
    for ref, digest in refs.items():
        tag = ref.rsplit(":", 1)[1]
        if _ATTACHED.fullmatch(tag):
            attached.setdefault(tag.removesuffix(".sig"), []).append(digest)
    todo = list(tops)
    while todo:
        digest = todo.pop()
        if digest in keep or not DIGEST.fullmatch(digest):
            continue
        keep.add(digest)
        todo.extend(attached.get(digest.replace(":", "-"), ()))
        data = store.read(digest, content.MAX_MANIFEST)
        if data is None:
            continue
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):
            continue  # a layer or payload: nothing below it
        if not isinstance(doc, dict):
            continue
        for key in ("manifests", "layers"):
            for entry in doc.get(key) or []:
                if isinstance(entry, dict) and isinstance(entry.get("digest"), str):
                    todo.append(entry["digest"])
        config = doc.get("config")
        if isinstance(config, dict) and isinstance(config.get("digest"), str):
            todo.append(config["digest"])
    return keep
