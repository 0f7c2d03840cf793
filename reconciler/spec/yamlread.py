"""Read YAML text into plain values, remembering the line of every field, without surprises.

Every YAML bpfman reads (manifests, the host config, the labels file) goes through
:func:`read_documents`. It drives libyaml's event parser (the C parser where present) and builds
the values itself, in one iterative pass, because PyYAML's own composer and constructor cannot
give what an untrusted source needs:

- **No silent changes.** PyYAML reads YAML 1.1: ``on`` is true, ``1:20`` is 80, ``010`` is 8,
  ``2001-12-14`` is a date. bpfman reads every plain scalar as both YAML 1.1 (Kubernetes and
  PyYAML) and YAML 1.2 (the current spec) would; where they agree the value is used, where they
  disagree the scalar is refused with both readings and the fix (quote it, or write it plainly).
- **No duplicates.** Duplicate keys, and two ``<<`` merge keys in one mapping, are errors (YAML
  would keep only the last).
- **Printable strings.** A string (key or value) with a control character (C0, DEL, C1), a Unicode
  bidi control, a line or paragraph separator or a lone surrogate is refused: such characters
  move a terminal's cursor or reorder what a reviewer reads. ``allow_breaks`` lets a caller
  accept tabs and line breaks in chosen fields (free text that is never printed verbatim).
- **Bounded cost.** At most ``max_nodes`` values per call (the parse stops there) and at most
  ``max_expansion`` values added by aliases (refusing "billion laughs" documents before they are
  built), so cost and memory are linear in the input with a small constant. Nesting is bounded
  by libyaml; nothing here recurses.
- **Explicit tags** other than the core ones (``!!str``, ``!!int``, ``!!float``, ``!!bool``,
  ``!!null``, ``!!map``, ``!!seq``) are refused: no ``!!binary``, ``!!timestamp``, ``!!set`` or
  application tags.

    for doc in read_documents(text):
        doc.data, doc.lines[("spec", "priority")], doc.problems
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml import events as ev
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from reconciler.values import frozen

FieldPath = tuple[Any, ...]  # keys and list indexes, e.g. ("spec", "names", 0)

_Parser: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # C parser when libyaml is there

MAX_NODES = 50_000
MAX_EXPANSION = 100_000
# Python refuses to parse longer integers (sys.get_int_max_str_digits); no field needs them.
_MAX_DIGITS = 100

# What a string may not contain. C0 but tab/newline are always refused; tab, LF and CR only
# outside ``allow_breaks`` fields.
_UNPRINTABLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
_BREAKS = re.compile("[\t\n\r]")

_TAG = "tag:yaml.org,2002:"
_MERGE = object()  # the ``<<`` key


class Refused(Exception):
    """A scalar that is refused; the message says why and what to write instead."""


@dataclass
class YamlProblem:
    line: int  # 1-based
    path: FieldPath  # the field the problem is about ((): the document or file)
    message: str


@dataclass
class YamlDocument:
    start_line: int  # 1-based line of the document's first value
    data: Any = None
    lines: dict[FieldPath, int] = field(default_factory=dict)
    problems: list[YamlProblem] = field(default_factory=list)
    empty: bool = False  # an empty document (e.g. after a trailing ``---``): nothing in it


class YamlError(Exception):
    """The text is not YAML (a syntax error) or exceeds a bound; ``line`` is 1-based. Documents
    read before it are still returned by :func:`read_documents`."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


# --- scalars: YAML 1.2 core schema, checked against YAML 1.1 --------------------------------

_NULL = frozenset(("", "~", "null", "Null", "NULL"))
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT10 = re.compile(r"[-+]?[0-9]+")
_INT8 = re.compile(r"0o[0-7]+")
_INT16 = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)")
_NAN = re.compile(r"\.(nan|NaN|NAN)")
# Plain scalars both versions certainly read the same way, decided without the slow path: words
# that are not 1.1 booleans, and decimal integers without a leading zero.
_PLAIN_WORD = re.compile(r"[A-Za-z_/][-A-Za-z0-9_./]*")
_PLAIN_INT = re.compile(r"-?(0|[1-9][0-9]{0,17})")
# YAML 1.1 booleans that YAML 1.2 reads as strings. The 1.1 spec also lists y/Y/n/N, which
# PyYAML and go-yaml v3 read as strings, as YAML 1.2 does: those are strings here too.
_BOOL_11 = frozenset(("yes", "Yes", "YES", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF"))
_RESOLVER = Resolver()
_CONSTRUCTOR = SafeConstructor()


def _core(value: str) -> Any:
    """A plain scalar as the YAML 1.2 core schema reads it."""
    if value in _NULL:
        return None
    if value in _BOOL:
        return _BOOL[value]
    if _INT10.fullmatch(value):
        return _int(value, 10)
    if _INT8.fullmatch(value):
        return _int(value[2:], 8)
    if _INT16.fullmatch(value):
        return _int(value[2:], 16)
    if _FLOAT.fullmatch(value):
        return float(value)
    if _INF.fullmatch(value):
        return -math.inf if value.startswith("-") else math.inf
    if _NAN.fullmatch(value):
        return math.nan
    return value


def _int(digits: str, base: int) -> int:
    if len(digits) > _MAX_DIGITS:
        raise Refused(
            f"a number of {len(digits)} digits is longer than any field takes "
            f"(at most {_MAX_DIGITS}); quote it if it is text"
        )
    return int(digits, base)


def _yaml11(value: str) -> Any:
    """A plain scalar as a YAML 1.1 reader (PyYAML) reads it."""
    if value in _BOOL_11:
        return value.lower() in ("yes", "on")
    tag = _RESOLVER.resolve(ScalarNode, value, (True, False))
    if tag == _TAG + "str":
        return value
    if tag in (_TAG + "merge", _TAG + "value"):
        return _Special(tag)
    try:
        return _CONSTRUCTOR.construct_object(ScalarNode(tag, value), deep=True)
    except (ValueError, ConstructorError):  # e.g. a 1.1 integer too long for Python
        return _Special(tag)


@frozen
class _Special:
    tag: str


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def _words(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "the boolean " + ("true" if value else "false")
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, datetime.datetime):
        return "a timestamp"
    if isinstance(value, datetime.date):
        return "a date"
    if isinstance(value, str):
        return f"the string {value!r}"
    return "something else"


def plain_scalar(value: str) -> Any:
    """The value of an unquoted scalar; Refused where YAML 1.1 and 1.2 read it differently."""
    if _PLAIN_WORD.fullmatch(value) and value not in _BOOL_11:
        # A word: null, true or false alike in both, or a string (no number starts with a
        # letter, "_" or "/", so the core schema's numeric patterns need not be tried).
        if value in _NULL:
            return None
        return _BOOL.get(value, value)
    if _PLAIN_INT.fullmatch(value):
        return int(value)
    new = _core(value)
    old = _yaml11(value)
    if _same(new, old):
        return new
    if isinstance(old, _Special):
        if isinstance(new, str):
            return new  # '=' and '<<' as values: YAML 1.1 gives them no other meaning here
        old_words = "something else"
    else:
        old_words = _words(old)
    numbers = (int, float)
    if (
        isinstance(new, numbers)
        and isinstance(old, numbers)
        and not isinstance(old, bool)
        and not isinstance(new, bool)
    ):
        fix = f"write {old} or {new} plainly (no leading zero, '_' or ':'), whichever you mean"
    elif isinstance(new, str):
        fix = f"quote it ('{value}') if you mean the text"
        if isinstance(old, bool):
            fix += ", or write " + ("true" if old else "false")
        elif isinstance(old, int | float) and not isinstance(old, bool):
            fix += f", or write {old}"
    else:
        fix = f"write {_canonical(new)} if you mean {_words(new)}, or quote it if you mean text"
    raise Refused(
        f"{value} is ambiguous: YAML 1.1 readers (Kubernetes, PyYAML) read {old_words}, "
        f"YAML 1.2 reads {_words(new)}; {fix}"
    )


def _canonical(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _tagged(tag: str, value: str) -> Any:
    """A scalar with an explicit core tag: ``!!str 10``, ``!!int "10"``."""
    name = tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag
    if name == "str" or tag == "!":
        return value
    if name == "null" and value in _NULL:
        return None
    if name == "bool" and value in _BOOL:
        return _BOOL[value]
    if name == "int":
        read = _core(value)
        if isinstance(read, int) and not isinstance(read, bool):
            return read
    if name == "float":
        read = _core(value)
        if isinstance(read, int | float) and not isinstance(read, bool):
            return float(read)
    if name in ("null", "bool", "int", "float"):
        raise Refused(f"!!{name} {value!r} is not a valid {name}; remove the tag or fix the value")
    raise Refused(_tag_problem(tag))


def check_printable(value: str, allow_breaks: bool = False) -> str | None:
    """Why ``value`` may not be used (a control character, and where), or None."""
    found = _UNPRINTABLE.search(value)
    if found is None and not allow_breaks:
        found = _BREAKS.search(value)
    if found is None:
        return None
    char = found.group()
    return (
        f"contains the control character U+{ord(char):04X} ({_char_name(char)}) at position "
        f"{found.start() + 1}; control characters can rewrite what a terminal shows, so they "
        "are not allowed: remove it"
    )


def _char_name(char: str) -> str:
    code = ord(char)
    names = {
        0x09: "tab",
        0x0A: "line feed",
        0x0D: "carriage return",
        0x1B: "escape",
        0x7F: "delete",
        0x85: "next line",
        0x2028: "line separator",
        0x2029: "paragraph separator",
        0x061C: "Arabic letter mark",
        0x200E: "left-to-right mark",
        0x200F: "right-to-left mark",
    }
    if code in names:
        return names[code]
    if 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
        return "a bidirectional text control"
    if 0xD800 <= code <= 0xDFFF:
        return "a lone surrogate"
    return "a C1 control" if 0x80 <= code <= 0x9F else "a C0 control"


# --- composing -------------------------------------------------------------------------------


@dataclass
class _Frame:
    """An open mapping or sequence."""

    value: dict[Any, Any] | list[Any]
    path: FieldPath
    line: int
    anchor: str | None
    first_entry: int  # index in the entry log where this node's fields start
    nodes_at_start: int  # values written before it
    expanded_at_start: int  # values added by aliases before it
    key: Any = None  # a mapping's pending key
    key_line: int = 0
    has_key: bool = False  # the next value is the pending key's value (else it is a key)
    is_key: bool = False  # a mapping or list used as a mapping key (refused)
    merges: list[tuple[Any, int]] = field(default_factory=list)  # (value, line) of each <<
    first_line: dict[Any, int] = field(default_factory=dict)  # line of each key


@dataclass
class _Anchor:
    value: Any
    size: int  # values it stands for: itself and everything in it, aliases expanded
    lines: list[tuple[FieldPath, int]]  # its fields' lines, relative to it


class _Composer:
    def __init__(
        self,
        max_nodes: int,
        max_expansion: int,
        allow_breaks: Callable[[FieldPath], bool] | None,
    ) -> None:
        self.max_nodes = max_nodes
        self.max_expansion = max_expansion
        self.allow_breaks = allow_breaks
        self.nodes = 0  # values written, over all documents of the text

    def document(self, parser: Any, start_line: int) -> YamlDocument:
        self.doc = YamlDocument(start_line)
        self.entries: list[tuple[FieldPath, int]] = []  # (path, line) of every key and item
        self.stack: list[_Frame] = []
        self.anchors: dict[str, _Anchor] = {}
        self.open_anchors: set[str] = set()
        self.expanded = 0
        self.merged = False
        while True:
            event = parser.get_event()
            if isinstance(event, ev.DocumentEndEvent):
                break
            self._event(event)
        if self.merged:  # the lines recorded under a << key itself are not fields
            self.entries = [e for e in self.entries if _MERGE not in e[0]]
        self.doc.lines = dict(self.entries)
        return self.doc

    def _event(self, event: Any) -> None:
        line = event.start_mark.line + 1
        if isinstance(event, ev.ScalarEvent):
            self._count(line)
            self._scalar(event, line)
        elif isinstance(event, ev.MappingStartEvent | ev.SequenceStartEvent):
            self._count(line)
            self._start(event, line)
        elif isinstance(event, ev.MappingEndEvent | ev.SequenceEndEvent):
            self._end()
        elif isinstance(event, ev.AliasEvent):
            self._alias(event, line)

    def _count(self, line: int) -> None:
        self.nodes += 1
        if self.nodes > self.max_nodes:
            raise YamlError(
                line,
                f"more than {self.max_nodes} values (a manifest holds hundreds); split the "
                "file, or move what is not a manifest out of the source",
            )

    def _problem(self, line: int, path: FieldPath, message: str) -> None:
        self.doc.problems.append(YamlProblem(line, path, message))

    def _in_key(self) -> bool:
        """Whether the value about to be placed is a mapping key."""
        return (
            bool(self.stack)
            and isinstance(self.stack[-1].value, dict)
            and not (self.stack[-1].has_key)
        )

    def _path_here(self) -> FieldPath:
        """The path of the value about to be placed (a key: its mapping's path)."""
        if not self.stack:
            return ()
        top = self.stack[-1]
        if isinstance(top.value, list):
            return (*top.path, len(top.value))
        return (*top.path, top.key) if top.has_key else top.path

    # Each value, once complete, goes where it belongs: the document root, a list, or a
    # mapping (as a key, or as the value of the pending key).
    def _place(self, value: Any, line: int, relative: list[tuple[FieldPath, int]]) -> None:
        if not self.stack:
            self.doc.data = value
            self.doc.start_line = line
            return
        top = self.stack[-1]
        if isinstance(top.value, list):
            path = (*top.path, len(top.value))
            top.value.append(value)
            self._entry(path, line, relative)
            return
        if not top.has_key:
            if isinstance(value, dict | list):  # an alias of a mapping or list, as a key
                self._problem(line, top.path, "a mapping key must be a plain value")
                value = _Unhashable()
            top.key, top.key_line, top.has_key = value, line, True
            return
        key, key_line = top.key, top.key_line
        top.has_key = False
        path = (*top.path, key)
        if key is _MERGE:
            if top.merges:
                self._problem(
                    key_line,
                    top.path,
                    f"a second << merge key in one mapping (the first is at line "
                    f"{top.merges[0][1]}); YAML would keep only the last, so merge several "
                    "mappings with one key: <<: [*first, *second]",
                )
            top.merges.append((value, key_line))
            self.merged = True
            self._entry(path, key_line, relative)
            return
        if isinstance(key, _Unhashable):
            return
        seen = top.first_line.get(key)
        if seen is not None:
            self._problem(
                key_line,
                path,
                f"duplicate key {key!r} (first set at line {seen}); YAML would silently keep "
                "only the last value, so remove one of them",
            )
            return
        top.first_line[key] = key_line
        assert isinstance(top.value, dict)
        top.value[key] = value
        self._entry(path, key_line, relative)

    def _entry(self, path: FieldPath, line: int, relative: list[tuple[FieldPath, int]]) -> None:
        self.entries.append((path, line))
        for rel, rel_line in relative:  # an alias's fields, at the place it is used
            self.entries.append(((*path, *rel), rel_line))

    def _scalar(self, event: Any, line: int) -> None:
        in_key = self._in_key()
        path = self._path_here()
        value: Any
        try:
            if event.tag not in (None, "!"):
                value = _tagged(event.tag, event.value)
            elif event.tag is None and event.implicit[0]:  # plain: unquoted, untagged
                merge = in_key and event.value == "<<"
                value = _MERGE if merge else plain_scalar(event.value)
            else:
                value = event.value
        except Refused as e:
            self._problem(line, path, str(e))
            value = event.value
        if isinstance(value, str):
            breaks = not in_key and self.allow_breaks is not None and self.allow_breaks(path)
            why = check_printable(value, allow_breaks=breaks)
            if why:
                what = "key" if in_key else "value"
                self._problem(line, path, f"the {what} {_excerpt(value)} {why}")
        if event.anchor:
            self.anchors[event.anchor] = _Anchor(value, 1, [])
        self._place(value, line, [])

    def _start(self, event: Any, line: int) -> None:
        mapping = isinstance(event, ev.MappingStartEvent)
        if event.tag not in (None, "!", _TAG + ("map" if mapping else "seq")):
            self._problem(line, self._path_here(), _tag_problem(event.tag))
        is_key = self._in_key()
        if is_key:
            self._problem(
                line,
                self._path_here(),
                "a mapping key must be a plain value (a string or number), not a "
                + ("mapping" if mapping else "list"),
            )
        frame = _Frame(
            {} if mapping else [],
            (*self._path_here(), "<key>") if is_key else self._path_here(),
            line,
            event.anchor,
            len(self.entries),
            self.nodes - 1,
            self.expanded,
            is_key=is_key,
        )
        if event.anchor:
            self.open_anchors.add(event.anchor)
        self.stack.append(frame)

    def _end(self) -> None:
        frame = self.stack.pop()
        if frame.merges:
            self._merge(frame)
        if frame.anchor:
            size = (self.nodes - frame.nodes_at_start) + (self.expanded - frame.expanded_at_start)
            depth = len(frame.path)
            relative = [(p[depth:], ln) for p, ln in self.entries[frame.first_entry :]]
            self.open_anchors.discard(frame.anchor)
            self.anchors[frame.anchor] = _Anchor(frame.value, size, relative)
        # The frame's own fields are already in the entry log.
        self._place(_Unhashable() if frame.is_key else frame.value, frame.line, [])

    def _merge(self, frame: _Frame) -> None:
        """``<<``: keys of the merged mappings that the mapping does not set itself; of several
        sources (<<: [*a, *b]) the first wins, as in PyYAML and go-yaml."""
        assert isinstance(frame.value, dict)
        depth = len(frame.path)
        # Lines of the merged fields were logged under the << key: PATH, <<, [index,] KEY, ...
        under: dict[FieldPath, int] = {}
        for p, ln in self.entries[frame.first_entry :]:
            if len(p) > depth + 1 and p[depth] is _MERGE:
                under.setdefault(p[depth + 1 :], ln)
        own = dict(frame.value)
        merged: dict[Any, Any] = {}
        grafted: list[tuple[FieldPath, int]] = []
        for source, line in frame.merges:
            items = source if isinstance(source, list) else [source]
            for i, item in enumerate(items):
                if not isinstance(item, dict):
                    self._problem(
                        line,
                        frame.path,
                        "<< must be followed by a mapping, an alias of one (<<: *common), or "
                        f"a list of them (<<: [*a, *b]), not {_kind(item)}",
                    )
                    continue
                prefix: FieldPath = (i,) if isinstance(source, list) else ()
                for key, value in item.items():
                    if key not in own and key not in merged:
                        merged[key] = value
                        grafted.append(((*frame.path, key), under.get((*prefix, key), line)))
        n = len(grafted)
        if n:
            # The fields inside merged values keep the lines they were written at.
            wanted = {p[depth:] for p, _ in grafted}
            for rel, ln in under.items():
                prefix_len = 1 if rel and isinstance(rel[0], int) and rel[1:2] else 0
                head = rel[prefix_len : prefix_len + 1]
                if len(rel) > prefix_len + 1 and head in wanted:
                    grafted.append(((*frame.path, *rel[prefix_len:]), ln))
        self.entries.extend(grafted)
        frame.value.clear()
        frame.value.update(merged)
        frame.value.update(own)

    def _alias(self, event: Any, line: int) -> None:
        name = event.anchor
        if name in self.open_anchors:
            raise YamlError(
                line,
                f"the alias *{name} refers to a value that contains it, which would be "
                "infinitely deep; remove the alias",
            )
        anchor = self.anchors.get(name)
        if anchor is None:
            raise YamlError(line, f"the alias *{name} refers to no anchor &{name} before it")
        self.expanded += anchor.size
        if self.expanded > self.max_expansion:
            raise YamlError(
                line,
                f"YAML aliases expand this document to more than {self.max_expansion} values "
                'beyond those written (a "billion laughs" document); write the values out, or '
                "use fewer nested aliases",
            )
        # A copy: defaults filled in at one place must not appear at the other.
        self._place(_copy(anchor.value), line, anchor.lines)


def _tag_problem(tag: str) -> str:
    shown = "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag
    return (
        f"the tag {shown} is not supported; bpfman reads plain YAML values only "
        "(strings, numbers, true/false, null, lists and mappings): remove the tag"
    )


class _Unhashable:
    """Stands for a mapping or list used as a key (already reported)."""


def _copy(value: Any) -> Any:
    """A deep copy of plain YAML values, without recursion."""
    if not isinstance(value, dict | list):
        return value
    root: Any = {} if isinstance(value, dict) else []
    stack: list[tuple[Any, Any]] = [(value, root)]
    while stack:
        source, target = stack.pop()
        items = source.items() if isinstance(source, dict) else enumerate(source)
        for key, item in items:
            if isinstance(item, dict | list):
                copy: Any = {} if isinstance(item, dict) else []
                stack.append((item, copy))
            else:
                copy = item
            if isinstance(target, dict):
                target[key] = copy
            else:
                target.append(copy)
    return root


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "a single value"


def _excerpt(value: str) -> str:
    shown = value if len(value) <= 40 else value[:37] + "..."
    return ascii(shown)


def read_documents(
    text: str,
    *,
    max_nodes: int = MAX_NODES,
    max_expansion: int = MAX_EXPANSION,
    allow_breaks: Callable[[FieldPath], bool] | None = None,
) -> Iterator[YamlDocument]:
    """The documents of ``text``, in order, each with its values, lines and problems. Raises
    YamlError (with the line) at a syntax error or a bound; the documents before it have been
    yielded. ``allow_breaks(path)`` says whether the string at ``path`` may hold tabs and line
    breaks."""
    parser = _Parser(text)
    composer = _Composer(max_nodes, max_expansion, allow_breaks)
    try:
        while True:
            try:
                event = parser.get_event()
            except yaml.MarkedYAMLError as e:
                raise _syntax(text, e) from None
            if isinstance(event, ev.StreamEndEvent):
                return
            if not isinstance(event, ev.DocumentStartEvent):
                continue
            try:
                line = event.start_mark.line + 1 if event.start_mark else 1
                yield composer.document(parser, line)
            except yaml.MarkedYAMLError as e:
                raise _syntax(text, e) from None
    except yaml.reader.ReaderError as e:
        line = text[: e.position].count("\n") + 1
        raise YamlError(line, f"YAML syntax error: {e.reason}") from None
    except yaml.YAMLError as e:
        raise YamlError(1, f"YAML syntax error: {e}") from None
    finally:
        parser.dispose()


def _syntax(text: str, e: yaml.MarkedYAMLError) -> YamlError:
    mark = e.problem_mark or e.context_mark
    line = mark.line + 1 if mark is not None else 1
    message = f"YAML syntax error: {e.problem or e.context or 'invalid YAML'}"
    if e.context and e.problem and e.context_mark is not None and e.context_mark.line + 1 != line:
        message += f" ({e.context} started at line {e.context_mark.line + 1})"
    if mark is not None:
        start = 0
        for _ in range(mark.line):
            start = text.find("\n", start) + 1
            if start == 0:
                break
        if start or mark.line == 0:
            column = start + mark.column
            if column < len(text) and text[column] == "\t":
                message += "; YAML does not allow tabs for indentation, use spaces"
    return YamlError(line, message)
