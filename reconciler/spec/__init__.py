"""The manifest layer: YAML files in, a typed, validated desired state out.

    manifests = load_manifests(root)          # every host-independent check, all files at once
    attachments = expand(manifests, root, default_primary_interface)
    state = load_desired(root)                # both

Every user mistake becomes a :class:`ManifestError` whose ``problems`` each read
``FILE:LINE: FIELD.PATH: what is wrong and what would be valid``; nothing is returned partially.
"""

from __future__ import annotations

from pathlib import Path

from reconciler.spec.expand import PrimaryInterface, default_primary_interface, expand_manifests
from reconciler.spec.loader import (
    Document,
    find_manifest_files,
    format_path,
    load_file,
    source_base,
)
from reconciler.spec.model import (
    DesiredAttachment,
    DesiredState,
    Manifest,
    ManifestError,
    Origin,
    Problem,
)
from reconciler.spec.schema import API_VERSION, KINDS, validate_document
from reconciler.spec.semantic import SemanticChecker, check_duplicates

__all__ = [
    "API_VERSION",
    "KINDS",
    "DesiredAttachment",
    "DesiredState",
    "Manifest",
    "ManifestError",
    "Origin",
    "Problem",
    "default_primary_interface",
    "expand",
    "load_desired",
    "load_manifests",
]


def load_manifests(root: Path) -> list[Manifest]:
    """Load and check every manifest under ``root`` (a directory, or a single YAML file).

    Parses all files, validates each document against its kind's schema (filling in defaults),
    then checks names, bytecode files and the functions in them. Problems from all files are
    collected and raised together as one ManifestError, in file and line order.
    """
    if not root.exists():
        raise ManifestError([f"{root}: no such file or directory"])
    base = source_base(root)
    problems: list[Problem] = []
    docs: list[Document] = []
    for path in find_manifest_files(root):
        found, file_problems = load_file(path, base)
        docs.extend(found)
        problems.extend(file_problems)

    checker = SemanticChecker()
    valid: list[Document] = []
    for doc in docs:
        schema_problems = validate_document(doc)
        problems.extend(schema_problems)
        if not schema_problems:
            semantic_problems = checker.check(doc)
            problems.extend(semantic_problems)
            if not semantic_problems:
                valid.append(doc)
    problems.extend(check_duplicates(docs))
    if problems:
        raise ManifestError(_ordered(problems))
    return [_manifest(doc) for doc in valid]


def expand(
    manifests: list[Manifest], root: Path, primary_interface: PrimaryInterface
) -> list[DesiredAttachment]:
    """One DesiredAttachment per attach point, in manifest order.

    ``primary_interface`` is asked (once, and only if a manifest says
    ``primarynodeinterface: true``) for the interface of the default route.
    """
    return expand_manifests(manifests, root, primary_interface)


def load_desired(
    root: Path, primary_interface: PrimaryInterface = default_primary_interface
) -> DesiredState:
    """``load_manifests`` then ``expand``: the desired state of this host."""
    manifests = load_manifests(root)
    return DesiredState(manifests, expand(manifests, root, primary_interface), source=str(root))


def _manifest(doc: Document) -> Manifest:
    metadata = doc.data["metadata"]
    return Manifest(
        kind=doc.data["kind"],
        name=metadata["name"],
        origin=doc.origin,
        spec=doc.data["spec"],
        labels=dict(metadata.get("labels") or {}),
        annotations=dict(metadata.get("annotations") or {}),
        lines={format_path(path): line for path, line in doc.lines.items()},
    )


def _ordered(problems: list[Problem]) -> list[str]:
    """Sorted by file and line (stable within a line), each reported once."""
    seen: set[str] = set()
    out = []
    for problem in sorted(problems, key=lambda p: (p.origin.file, p.origin.line)):
        text = str(problem)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out
