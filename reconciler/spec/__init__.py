"""The manifest layer: YAML files in, a typed, validated desired state out.

    manifests = load_manifests(root)          # every host-independent check, all files at once
    state = expand(manifests, root, host)     # node selection and attach points on this host
    state = load_desired(root, host)          # both (the real host: reconciler.hostfacts.Host)

Manifests are untrusted: files are read only inside ``root``, and with ``allowed_bytecode_dirs``
given (the CLI always gives it) bytecode only inside the source root or under those directories
(:mod:`reconciler.spec.paths`).

Every user mistake becomes a :class:`ManifestError` whose ``problems`` each read
``FILE:LINE: FIELD.PATH: what is wrong and what would be valid``; nothing is returned partially.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

from reconciler.spec import globaldata, owners
from reconciler.spec.expand import expand_manifests
from reconciler.spec.fanout import fan_out
from reconciler.spec.host import HostError, HostFacts
from reconciler.spec.loader import (
    Document,
    ParseMemo,
    WalkError,
    find_sources,
    format_path,
    load_file,
    source_base,
)
from reconciler.spec.model import (
    DesiredAttachment,
    DesiredState,
    LoadReport,
    Manifest,
    ManifestError,
    Origin,
    Problem,
)
from reconciler.spec.paths import BytecodePolicy, real, resolving
from reconciler.spec.programs import spec_keys
from reconciler.spec.schema import API_VERSION, KINDS, validate_document
from reconciler.spec.semantic import SemanticChecker, check_duplicates

__all__ = [
    "API_VERSION",
    "KINDS",
    "DesiredAttachment",
    "DesiredState",
    "HostError",
    "HostFacts",
    "LoadReport",
    "Manifest",
    "ManifestError",
    "Origin",
    "ParseMemo",
    "Problem",
    "expand",
    "load_desired",
    "load_manifests",
]


def load_manifests(
    root: Path,
    allowed_bytecode_dirs: Iterable[Path | str] | None = None,
    *,
    source_root: Path | None = None,
    report: LoadReport | None = None,
    memo: ParseMemo | None = None,
    digests: dict[str, bytes] | None = None,
) -> list[Manifest]:
    """Load and check every manifest under ``root`` (a directory, or a single YAML file).

    Parses all files, validates each document against its kind's schema (filling in defaults),
    then checks names, bytecode files, the functions and global variables in them, and resolves
    map owners. None of this depends on the host. Problems from all files are collected and
    raised together as one ManifestError, in file and line order.

    Bytecode is confined when ``allowed_bytecode_dirs`` is given (``()``: no absolute directory
    allowed): every path, symlinks resolved, must lie inside ``source_root`` (default ``root``;
    the whole checkout when ``root`` is a ``--path`` below it) or under one of those directories.
    None leaves bytecode unconfined, for trusted callers (tests). Manifest files are always
    confined to ``root``, and refused unread when over the size limit. ``memo``: the files a
    previous load parsed (a process that reads the source again, ``loader.ParseMemo``); each
    file is still read, confined and checked, only unchanged bytes are not parsed again.
    ``digests`` gets the SHA-256 of each manifest file's bytes as they were read, by path: the
    plan cache remembers a plan with the digests of what it was made from, not of a later read.
    """
    if memo is not None:
        memo.round()
    with resolving():
        return _load_manifests(root, allowed_bytecode_dirs, source_root, report, memo, digests)


def _load_manifests(
    root: Path,
    allowed_bytecode_dirs: Iterable[Path | str] | None,
    source_root: Path | None,
    report: LoadReport | None,
    memo: ParseMemo | None = None,
    digests: dict[str, bytes] | None = None,
) -> list[Manifest]:
    if not root.exists():
        raise ManifestError([f"{root}: no such file or directory"])
    base = source_base(root)
    policy = (
        None
        if allowed_bytecode_dirs is None
        else BytecodePolicy.of(source_root or root, allowed_bytecode_dirs)
    )
    problems: list[Problem] = []
    docs: list[Document] = []
    try:
        paths, kustomized = find_sources(root)
    except WalkError as e:  # a part of the source that cannot be read: plan nothing
        raise ManifestError([str(e)]) from None
    checker = SemanticChecker(policy)
    valid: list[Document] = []

    def read(path: Path) -> tuple[list[Document], list[Problem], list[bool], dict[str, bytes]]:
        # The digest travels back with the documents: a forked child's dicts stay its own.
        seen: dict[str, bytes] = {}
        found, file_problems = load_file(
            path, base, base, memo=memo, digests=seen if digests is not None else None
        )
        checked = [_check(doc, checker) for doc in found]
        problems = [*file_problems, *(p for c in checked for p in c)]
        return found, problems, [not c for c in checked], seen

    for found, file_problems, ok, seen in fan_out(read, paths):
        if digests is not None:
            digests.update(seen)
        docs.extend(found)
        problems.extend(file_problems)
        valid.extend(doc for doc, good in zip(found, ok, strict=True) if good)
    for directory in kustomized:
        from reconciler.spec import kustomize

        built = kustomize.build(directory, base, source_root or root)
        docs.extend(built.docs)
        problems.extend(built.problems)
        if report is not None:
            report.skipped.update(built.skipped)
            report.files |= built.files
        if digests is not None:
            digests.update(built.digests)
        for doc in built.docs:
            doc_problems = _check(doc, checker)
            problems.extend(doc_problems)
            if not doc_problems:
                valid.append(doc)
    problems.extend(check_duplicates(docs))
    manifests = [_manifest(doc) for doc in valid]
    map_owners, owner_problems = owners.resolve(manifests, _labels_of_invalid(docs, valid))
    problems.extend(_narrowed(owner_problems, root, source_root))
    if problems:
        raise ManifestError(_ordered(problems))
    return [dataclasses.replace(m, map_owner=map_owners.get(m.resource)) for m in manifests]


def _narrowed(found: list[Problem], root: Path, source_root: Path | None) -> list[Problem]:
    """Map owner problems, each "selects no manifest" telling that --path left part of the
    source unread (upstream's examples keep an owner and its sharers in sibling directories)."""
    if source_root is None or real(source_root) == real(root):
        return found
    inside = os.path.relpath(real(root), real(source_root))
    hint = (
        f"; only the manifests under --path {inside} are read, so an owner elsewhere in the "
        "source is not seen: give a --path that holds both"
    )
    return [
        dataclasses.replace(p, message=p.message + hint)
        if p.message.startswith("selects no manifest")
        else p
        for p in found
    ]


def _check(doc: Document, checker: SemanticChecker) -> list[Problem]:
    """The schema's problems with ``doc``, or when there are none the semantic ones."""
    return validate_document(doc) or checker.check(doc)


def expand(manifests: list[Manifest], root: Path, host: HostFacts) -> DesiredState:
    """The desired state of ``host``: manifests whose node selector does not match its labels go
    to ``unselected`` (with the reason); the others become one DesiredAttachment per attach point,
    in manifest order. ``host`` is asked each fact once, and only when a manifest needs it."""
    return expand_manifests(manifests, root, host)


def load_desired(
    root: Path,
    host: HostFacts,
    *,
    source_root: Path | None = None,
    digests: dict[str, bytes] | None = None,
) -> DesiredState:
    """``load_manifests`` then ``expand``: the desired state of ``host`` (the real one is
    :class:`reconciler.hostfacts.Host`). Bytecode is confined to the source and the directories
    ``host.bytecode_dirs()`` allows (a test double answering None leaves it unconfined).
    ``digests``: as for ``load_manifests``."""
    allowed = host.bytecode_dirs()  # HostError: a broken host config
    report = LoadReport()
    manifests = load_manifests(
        root, allowed, source_root=source_root, report=report, digests=digests
    )
    state = expand(manifests, root, host)
    report.apply_to(state)
    return state


def _manifest(doc: Document) -> Manifest:
    metadata = doc.data["metadata"]
    kind = doc.data["kind"]
    spec = doc.data["spec"]
    return Manifest(
        kind=kind,
        name=metadata["name"],
        origin=doc.origin,
        spec=spec,
        labels=dict(metadata.get("labels") or {}),
        annotations=dict(metadata.get("annotations") or {}),
        lines={format_path(path): line for path, line in doc.lines.items()},
        namespace=metadata.get("namespace"),
        global_data=globaldata.decode(spec.get(spec_keys(kind)["globaldata"])),
    )


def _labels_of_invalid(docs: list[Document], valid: list[Document]) -> dict[str, dict[str, str]]:
    """``{KIND/NAME: labels}`` of the manifests with problems whose labels can still be read."""
    out = {}
    valid_ids = {id(v) for v in valid}
    for doc in docs:
        metadata = doc.data.get("metadata")
        if id(doc) in valid_ids or doc.data.get("kind") not in KINDS:
            continue
        if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str):
            continue
        labels = metadata.get("labels") or {}
        if isinstance(labels, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            out[f"{doc.data['kind']}/{metadata['name']}"] = owners.labels_of(
                metadata["name"], labels
            )
    return out


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
