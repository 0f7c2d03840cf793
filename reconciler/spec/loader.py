"""Find manifest files and parse them into documents that remember the line of every field.

Parsing is :mod:`reconciler.spec.yamlread` (YAML read as both YAML 1.1 and 1.2 agree, duplicate
keys and control characters refused, bounded cost); this module finds the files of a source and
reads them safely (:mod:`reconciler.files`: regular files only, never blocking, bounded).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler import files
from reconciler.spec.model import Origin, Problem, relpath
from reconciler.spec.paths import is_within, manifest_escape, real

# A manifest is kilobytes; a file past this is refused before it is read (a wrong file, or an
# attempt to exhaust memory). Values per file and values added by aliases are bounded too
# (yamlread), which keeps the cost of a file linear in its size with a small constant.
MAX_MANIFEST_SIZE = 4 * 1024 * 1024
FieldPath = tuple[Any, ...]  # keys and list indexes, e.g. ("spec", "names", 0), as yamlread's
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


class WalkError(Exception):
    """A directory of the source cannot be read: its manifests would be missed (and their
    programs unloaded), so nothing may be planned. ``path`` is relative to the source."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def format_path(path: Sequence[Any]) -> str:
    """``("spec", "names", 0)`` -> ``spec.names[0]``; odd keys are quoted: ``labels["a.b/c"]``."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and _IDENTIFIER.fullmatch(part):
            out += f".{part}" if out else part
        else:
            text = part if isinstance(part, str) else str(part)
            out += '["' + text.replace("\\", "\\\\").replace('"', '\\"') + '"]'
    return out


@dataclass
class Document:
    """One YAML document of a manifest file, with the line of each of its fields."""

    path: Path  # the file, as found under the root
    file: str  # the file relative to the root, as shown in messages
    index: int  # position of the document in its file, from 0
    start_line: int  # 1-based line of the document's first node
    data: Any
    lines: dict[FieldPath, int] = field(default_factory=dict, repr=False)

    @property
    def origin(self) -> Origin:
        return Origin(self.file, self.start_line)

    def line_of(self, path: Sequence[Any]) -> int:
        """Line of the field at ``path``, or of its nearest enclosing field."""
        key = tuple(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.start_line

    def origin_of(self, path: Sequence[Any]) -> Origin:
        return Origin(self.file, self.line_of(path))

    def problem(self, path: Sequence[Any], message: str) -> Problem:
        return Problem(self.origin_of(path), format_path(path), message)


def find_manifest_files(root: Path) -> list[Path]:
    """The manifest files of :func:`find_sources` (kustomize directories left out)."""
    return find_sources(root)[0]


def find_sources(root: Path) -> tuple[list[Path], list[Path]]:
    """(Every ``*.yaml``/``*.yml`` under ``root`` (or ``root`` itself if it is a file), sorted;
    the directories holding a kustomization, which are read through it and not walked).

    Hidden directories and files (``.git``, ``.github``, editor temporaries) are skipped, and
    directory symlinks are not followed, so a link cannot make a manifest count twice. A
    directory symlink leading outside ``root`` is returned as if it were a file, so that
    :func:`load_file` refuses it by name instead of it being skipped unnoticed.

    Raises WalkError for any directory that cannot be read (permissions, a name too long, an
    I/O error): skipping it would silently drop its manifests. The walk keeps its own stack, so
    no depth of directories exhausts Python's recursion.
    """
    if not root.is_dir():
        return [root], []
    from reconciler.spec.kustomize import NAMES

    found: list[Path] = []
    kustomized: list[Path] = []
    top = real(root)
    pending = [root]
    while pending:
        directory = pending.pop()
        if any(os.path.isfile(directory / name) for name in NAMES):
            kustomized.append(directory)
            continue
        try:
            with os.scandir(directory) as entries:
                listed = list(entries)
        except OSError as e:
            raise WalkError(_shown(directory, root), _reason(e)) from None
        for entry in listed:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError as e:
                raise WalkError(_shown(path, root), _reason(e)) from None
            if is_link:
                if not is_within(real(path), top) and os.path.isdir(path):
                    found.append(path)  # refused by load_file, by name
                elif entry.name.endswith((".yaml", ".yml")) and not os.path.isdir(path):
                    found.append(path)
            elif is_dir:
                pending.append(path)
            elif entry.name.endswith((".yaml", ".yml")):
                found.append(path)
    by_place = lambda p: p.relative_to(root).parts  # noqa: E731
    return sorted(found, key=by_place), sorted(kustomized, key=by_place)


def _reason(e: OSError) -> str:
    why = e.strerror or str(e)
    return (
        f"cannot read this directory of the source ({why}); its manifests would be missed, so "
        "nothing is planned: fix its permissions, or move it out of the source"
    )


def _shown(path: Path, root: Path) -> str:
    """``path`` relative to the source, shortened in the middle when it is very long."""
    text = relpath(path, root) if path != root else str(root)
    return text if len(text) <= 200 else f"{text[:90]}...{text[-90:]}"


def source_base(root: Path) -> Path:
    """The directory file names are shown relative to: ``root``, or its parent for a file."""
    return root if root.is_dir() else root.parent


def read_manifest_bytes(path: Path, limit: int = MAX_MANIFEST_SIZE) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; ValueError (with the reason) for
    anything else, decided before the file is opened for reading (a FIFO or a device is never
    opened) or read whole (a growing file is cut off too)."""
    try:
        return files.read_regular(path, limit)
    except files.TooLarge as e:
        raise ValueError(
            f"file is {e.size} bytes, over the {limit // (1024 * 1024)} MiB limit for a "
            "manifest; split it, or move what is not a manifest out of the source"
        ) from None
    except files.NotReadable as e:
        raise ValueError(f"{e}; a manifest must be a regular file") from None


def annotation_breaks(path: FieldPath) -> bool:
    """Free text that is never printed verbatim may hold tabs and line breaks: annotation
    values (kubectl's last-applied-configuration ends in a newline)."""
    return len(path) == 3 and path[0] == "metadata" and path[1] == "annotations"


BPFMAN_GROUP = "bpfman.io"
# bpfman.io kinds that are not manifests: bpfman-operator's own configuration and the status
# objects it writes (its samples kustomization lists them beside the applications).
OPERATOR_KINDS = ("BpfApplicationState", "ClusterBpfApplicationState", "Config")


def operator_object(data: Any) -> str | None:
    """Why a document is not a manifest but one of bpfman-operator's own objects, or None."""
    if not isinstance(data, dict):
        return None
    api, kind = data.get("apiVersion"), data.get("kind")
    if not isinstance(api, str) or not api.startswith(BPFMAN_GROUP + "/"):
        return None
    skipped = "a kustomization.yaml that lists it is read with it skipped"
    if kind == "Config":
        return (
            "Config is bpfman-operator's own configuration, not a program for a host (a "
            "host's settings are bpfman's --config file); leave this document out of the source "
            f"({skipped})"
        )
    if kind in OPERATOR_KINDS:
        return (
            f"{kind} is the status bpfman-operator writes about an application, not a "
            f"manifest to load; leave this document out of the source ({skipped})"
        )
    return None


class ParseMemo:
    """The files one read of a source parsed, for a process that reads the same source again
    (the watcher, after an edit): a file whose bytes have not changed is not parsed again.

    An entry is found by the file's name in the source, the rest of what ``load_file`` is given
    and the SHA-256 of the file's bytes, so a hit returns what parsing those bytes would, with
    the documents' path where the file is now (a git source's next checkout lies in a new
    directory). It is a copy (the documents are stored pickled), since later steps fill defaults
    into the documents. Each ``round`` keeps only the files the previous round read: a deleted
    or renamed file's entry goes, and memory stays that of one source's documents (a file whose
    documents pickle to more than ``MAX_ENTRY`` bytes is parsed every time instead). The digests
    of what a round read are the load's ``digests``."""

    MAX_ENTRY = 1024 * 1024

    def __init__(self) -> None:
        self._last: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}
        self._this: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}
        self.hits = 0

    def round(self) -> None:
        """Start a new read of the source."""
        self._last, self._this = self._this or self._last, {}

    def get(
        self, key: tuple[Any, ...], digest: bytes
    ) -> tuple[list[Document], list[Problem]] | None:
        """What parsing the file named by ``key`` gave, if its bytes' SHA-256 is ``digest``."""
        entry = self._this.get(key) or self._last.get(key)
        if entry is None or entry[0] != digest:
            return None
        self._this[key] = entry
        self.hits += 1
        found: tuple[list[Document], list[Problem]] = pickle.loads(entry[1])
        return found

    def put(
        self, key: tuple[Any, ...], digest: bytes, found: tuple[list[Document], list[Problem]]
    ) -> None:
        data = pickle.dumps(found, pickle.HIGHEST_PROTOCOL)
        if len(data) <= self.MAX_ENTRY:
            self._this[key] = (digest, data)


def load_file(
    path: Path,
    base: Path,
    root: Path | None = None,
    allow_breaks: Callable[[FieldPath], bool] = annotation_breaks,
    operator_objects: bool = False,
    memo: ParseMemo | None = None,
    digests: dict[str, bytes] | None = None,
) -> tuple[list[Document], list[Problem]]:
    """Parse every non-empty document of one file. Problems do not stop the documents before
    them from being returned, so one bad document does not hide the others' problems. With
    ``root`` (the source directory), a file that resolves outside it is refused unread.
    bpfman-operator's own objects (``operator_object``) are a problem unless ``operator_objects``
    (a kustomization, which skips them). ``memo``: files parsed before (``ParseMemo``).
    ``digests``: gets the SHA-256 of the bytes parsed, by path (what the plan cache compares)."""
    file = relpath(path, base)
    if root is not None:
        escape = manifest_escape(path, root)
        if escape:
            return [], [Problem(Origin(file, 1), "", escape)]
    try:
        raw = read_manifest_bytes(path)
    except ValueError as e:
        return [], [Problem(Origin(file, 1), "", str(e))]
    except OSError as e:
        return [], [Problem(Origin(file, 1), "", f"cannot read: {e.strerror or e}")]
    digest = hashlib.sha256(raw).digest() if memo is not None or digests is not None else b""
    if digests is not None:
        digests[str(path)] = digest
    if memo is None:
        return _parse(path, file, raw, allow_breaks, operator_objects)
    # By the name relative to the source, not the absolute path: a git source is checked out
    # into a new directory per commit, and its unchanged files are still the same parse. Only
    # a document's own path says where this copy lies (``root`` is checked above, unmemoized).
    key = (file, allow_breaks, operator_objects)
    known = memo.get(key, digest)
    if known is None:
        known = _parse(path, file, raw, allow_breaks, operator_objects)
        memo.put(key, digest, known)  # a copy: the caller may change what it is given
    else:
        for doc in known[0]:
            doc.path = path
    return known


def _parse(
    path: Path,
    file: str,
    raw: bytes,
    allow_breaks: Callable[[FieldPath], bool],
    operator_objects: bool,
) -> tuple[list[Document], list[Problem]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        return [], [
            Problem(Origin(file, line), "", f"not UTF-8 text ({e.reason} at byte {e.start})")
        ]

    docs: list[Document] = []
    problems: list[Problem] = []
    from reconciler.spec import yamlread  # PyYAML: imported only when there is YAML to read

    try:
        for read in yamlread.read_documents(text, allow_breaks=allow_breaks):
            if read.data is None and not read.problems:
                continue  # an empty document (e.g. a trailing '---')
            doc = Document(path, file, len(docs), read.start_line, read.data, read.lines)
            operator = None if operator_objects else operator_object(read.data)
            if operator is not None:  # its own rules (a multi-line configuration) do not matter
                problems.append(Problem(doc.origin_of(("kind",)), "kind", operator))
                continue
            problems.extend(
                Problem(Origin(file, p.line), format_path(p.path), p.message) for p in read.problems
            )
            if read.problems:
                continue
            if not isinstance(doc.data, dict):
                problems.append(
                    Problem(
                        doc.origin,
                        "",
                        f"document is {_kind_of(doc.data)}, not a mapping; each YAML document must "
                        "be one manifest with apiVersion, kind, metadata and spec",
                    )
                )
                continue
            docs.append(doc)
    except yamlread.YamlError as e:
        problems.append(Problem(Origin(file, e.line), "", e.message))
    return docs, problems


def _kind_of(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"
