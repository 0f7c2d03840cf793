"""Find manifest files and parse them into documents that remember the line of every field.

PyYAML's composer gives nodes with marks; we walk the node tree once to record the line of every
mapping key and sequence item (and to catch duplicate keys, which PyYAML silently collapses), then
let PyYAML's safe constructor build the plain Python values.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reconciler.spec.model import Origin, Problem, relpath
from reconciler.spec.paths import is_within, manifest_escape, real

FieldPath = tuple[Any, ...]  # keys (str) and list indexes (int), e.g. ("spec", "names", 0)

_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # C parser when libyaml is there
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
# Bounds the line map of a document built from aliases of aliases ("billion laughs"): past it,
# lines fall back to the enclosing field, which is still a correct if coarser location.
_MAX_LINE_ENTRIES = 100_000
# A manifest is kilobytes; a file past this is refused before it is read (a wrong file, or an
# attempt to exhaust memory). Aliases may add at most this many nodes to what is written, which
# refuses "billion laughs" documents before anything walks their exponential expansion.
MAX_MANIFEST_SIZE = 4 * 1024 * 1024
MAX_ALIAS_EXPANSION = 100_000
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def format_path(path: Sequence[Any]) -> str:
    """``("spec", "names", 0)`` -> ``spec.names[0]``; odd keys are quoted: ``labels["a.b/c"]``."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and _IDENTIFIER.match(part):
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
    """Every ``*.yaml``/``*.yml`` under ``root`` (or ``root`` itself if it is a file), sorted.

    Hidden directories and files (``.git``, ``.github``, editor temporaries) are skipped, and
    directory symlinks are not followed, so a link cannot make a manifest count twice. A
    directory symlink leading outside ``root`` is returned as if it were a file, so that
    :func:`load_file` refuses it by name instead of it being skipped unnoticed.
    """
    if root.is_file():
        return [root]
    found: list[Path] = []
    top = real(root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in dirnames:
            linked = Path(dirpath) / name
            if linked.is_symlink() and not is_within(real(linked), top):
                found.append(linked)
        for name in filenames:
            if not name.startswith(".") and name.endswith((".yaml", ".yml")):
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def source_base(root: Path) -> Path:
    """The directory file names are shown relative to: ``root``, or its parent for a file."""
    return root.parent if root.is_file() else root


def read_manifest_bytes(path: Path, limit: int = MAX_MANIFEST_SIZE) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; ValueError (with the reason) for
    anything else, decided before the file is read whole (a growing file is cut off too)."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_size > limit:
            raise ValueError(_too_large(st.st_size, limit))
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(_too_large(len(data), limit))
    return data


def _too_large(size: int, limit: int) -> str:
    return (
        f"file is {size} bytes, over the {limit // (1024 * 1024)} MiB limit for a manifest; "
        "split it, or move what is not a manifest out of the source"
    )


def load_file(
    path: Path, base: Path, root: Path | None = None
) -> tuple[list[Document], list[Problem]]:
    """Parse every non-empty document of one file. Problems do not stop the documents before
    them from being returned, so one bad document does not hide the others' problems. With
    ``root`` (the source directory), a file that resolves outside it is refused unread."""
    file = relpath(path, base)
    if root is not None:
        escape = manifest_escape(path, root)
        if escape:
            return [], [Problem(Origin(file, 1), "", escape)]
    try:
        raw = read_manifest_bytes(path)
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        return [], [
            Problem(Origin(file, line), "", f"not UTF-8 text ({e.reason} at byte {e.start})")
        ]
    except ValueError as e:
        return [], [Problem(Origin(file, 1), "", str(e))]
    except OSError as e:
        return [], [Problem(Origin(file, 1), "", f"cannot read: {e.strerror or e}")]

    docs: list[Document] = []
    problems: list[Problem] = []
    loader = _Loader(text)
    try:
        for node in _nodes(loader):
            if node.tag == _NULL_TAG and isinstance(node, ScalarNode) and node.value in ("", "~"):
                continue  # empty document (e.g. a trailing '---')
            doc = Document(path, file, len(docs), node.start_mark.line + 1, None)
            bomb = _alias_problem(node)
            if bomb:
                problems.append(Problem(doc.origin, "", bomb))
                continue
            duplicates: list[Problem] = []
            _record_lines(loader, node, (), doc, duplicates, [0])
            doc.data = loader.construct_document(node)
            problems.extend(duplicates)
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
    except yaml.MarkedYAMLError as e:
        problems.append(_syntax_problem(file, text, e))
    except yaml.reader.ReaderError as e:
        line = text[: e.position].count("\n") + 1
        problems.append(Problem(Origin(file, line), "", f"YAML syntax error: {e.reason}"))
    except yaml.YAMLError as e:
        problems.append(Problem(Origin(file, 1), "", f"YAML syntax error: {e}"))
    except RecursionError:
        problems.append(Problem(Origin(file, 1), "", "YAML document is nested too deeply"))
    finally:
        loader.dispose()
    return docs, problems


def _alias_problem(node: Node) -> str | None:
    """Why the document ``node`` must not be constructed: aliases that refer to themselves, or
    that expand to more than MAX_ALIAS_EXPANSION nodes beyond those written."""
    written: set[int] = set()
    expanded: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[Node, bool]] = [(node, False)]
    while stack:  # post-order without recursion: a deep document must not overflow the stack
        current, done = stack.pop()
        key = id(current)
        children = _children(current)
        if done:
            active.discard(key)
            expanded[key] = 1 + sum(expanded[id(c)] for c in children)
            if expanded[key] - len(written) > MAX_ALIAS_EXPANSION:
                return (
                    f"YAML aliases expand this document to more than {MAX_ALIAS_EXPANSION} "
                    'nodes beyond those written (a "billion laughs" document); write the '
                    "values out, or use fewer nested aliases"
                )
            continue
        if key in expanded:
            continue
        active.add(key)
        written.add(key)
        stack.append((current, True))
        for child in children:
            if id(child) in active:
                return (
                    f"a YAML alias at line {child.start_mark.line + 1} refers to a node that "
                    "contains it, which would be an infinitely deep value; remove the alias"
                )
            if id(child) not in expanded:
                stack.append((child, False))
    return None


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _nodes(loader: Any) -> Iterator[Node]:
    while loader.check_node():
        yield loader.get_node()


def _syntax_problem(file: str, text: str, e: yaml.MarkedYAMLError) -> Problem:
    mark = e.problem_mark or e.context_mark
    line = mark.line + 1 if mark is not None else 1
    message = f"YAML syntax error: {e.problem or e.context or 'invalid YAML'}"
    if e.context and e.problem and e.context_mark is not None and e.context_mark.line + 1 != line:
        message += f" ({e.context} started at line {e.context_mark.line + 1})"
    if mark is not None:
        lines = text.splitlines()
        row = lines[mark.line] if mark.line < len(lines) else ""
        if mark.column < len(row) and row[mark.column] == "\t":
            message += "; YAML does not allow tabs for indentation, use spaces"
    return Problem(Origin(file, line), "", message)


def _key(loader: Any, node: Node) -> Any:
    if isinstance(node, ScalarNode) and node.tag == _STR_TAG:
        return node.value
    try:
        return loader.construct_object(node, deep=True)
    except (yaml.YAMLError, TypeError):
        return getattr(node, "value", "?")


def _record_lines(
    loader: Any,
    node: Node,
    path: FieldPath,
    doc: Document,
    duplicates: list[Problem],
    budget: list[int],
    merged: bool = False,
) -> None:
    """Record the line of every key and item under ``node``; ``merged`` marks keys that come in
    through a ``<<`` merge and so yield to the mapping's own keys."""
    if budget[0] > _MAX_LINE_ENTRIES:
        return
    if isinstance(node, MappingNode):
        first_line: dict[Any, int] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            key = _key(loader, key_node)
            line = key_node.start_mark.line + 1
            try:
                seen = first_line.get(key)
            except TypeError:  # unhashable key: the constructor reports it
                continue
            if seen is not None and not merged:  # a merge source is checked where it is defined
                duplicates.append(
                    Problem(
                        Origin(doc.file, line),
                        format_path((*path, key)),
                        f"duplicate key {key!r} (first set at line {seen}); YAML would silently "
                        "keep only the last value, so remove one of them",
                    )
                )
            else:
                first_line[key] = line
            budget[0] += 1
            if merged:
                doc.lines.setdefault((*path, key), line)
            else:
                doc.lines[(*path, key)] = line
            _record_lines(loader, value_node, (*path, key), doc, duplicates, budget, merged)
        for source in merges:
            for mapping in source.value if isinstance(source, SequenceNode) else [source]:
                _record_lines(loader, mapping, path, doc, duplicates, budget, merged=True)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            budget[0] += 1
            if merged:
                doc.lines.setdefault((*path, i), item.start_mark.line + 1)
            else:
                doc.lines[(*path, i)] = item.start_mark.line + 1
            _record_lines(loader, item, (*path, i), doc, duplicates, budget, merged)


def _kind_of(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"
