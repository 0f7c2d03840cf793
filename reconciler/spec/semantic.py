"""Checks a schema cannot express: unique names, the bytecode file and what is inside it
(functions and their sections, global variables and their sizes), and rules across fields.

Everything here is host-independent (it reads only the manifest tree and the bytecode it names):
whether an interface, a tracepoint or a uprobe target exists on this host is decided at plan time.
Map owners, which relate manifests to each other, are resolved in :mod:`reconciler.spec.owners`.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

from reconciler import kinds
from reconciler.kinds import sections
from reconciler.spec import globaldata
from reconciler.spec.elf import ElfError, ElfObject, read_bpf_object
from reconciler.spec.indexes import map_name_problems, pin_name_problems
from reconciler.spec.loader import Document, FieldPath, format_path
from reconciler.spec.model import Origin, Problem
from reconciler.spec.paths import BytecodePolicy
from reconciler.spec.programs import LinkSpec, Program, is_application, programs_of, spec_keys
from reconciler.spec.schema import KINDS

_LIST_LIMIT = 12
MAX_INTERFACE_REGEX = 256


def section_fits(kind: str, section: str) -> bool:
    """Whether a program in ``section`` can be loaded as the program kind ``kind`` asks."""
    return kind in kinds.kind_names() and kinds.by_kind_name(kind).sections.fits(section)


def describe_section(section: str) -> str:
    """What a program in ``section`` is, by libbpf's naming conventions."""
    return sections.describe(section)


def resolve_bytecode(manifest_file: Path, path: str) -> Path:
    """A relative bytecode path is relative to the directory of the manifest that names it."""
    given = Path(path)
    return given if given.is_absolute() else manifest_file.parent / given


def check_duplicates(docs: list[Document]) -> list[Problem]:
    """Two manifests of the same kind with the same name would fight over the same addresses.
    On a host there are no namespaces, so a BpfApplication's namespace does not tell them apart."""
    first: dict[tuple[str, str], tuple[Origin, object]] = {}
    problems = []
    for doc in docs:
        kind = doc.data.get("kind")
        metadata = doc.data.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        if kind not in KINDS or not isinstance(name, str):
            continue
        namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
        origin = doc.origin_of(("metadata", "name"))
        if (kind, name) in first:
            where, other_namespace = first[(kind, name)]
            why = "names must be unique per kind, so rename or remove one"
            if namespace != other_namespace:
                why = (
                    f"namespaces ({namespace or 'none'} here, {other_namespace or 'none'} there) "
                    f"do not tell them apart on a host, so {why}"
                )
            problems.append(
                Problem(
                    origin,
                    "metadata.name",
                    f"{kind}/{name} is defined twice: here and at {where}; {why}",
                )
            )
        else:
            first[(kind, name)] = (origin, namespace)
    return problems


class SemanticChecker:
    """Checks schema-valid documents; reads each bytecode file once however many name it."""

    def __init__(self, policy: BytecodePolicy | None = None) -> None:
        self._objects: dict[Path, ElfObject | ElfError] = {}
        self._locations: dict[tuple[Path, str], tuple[Path, str | None, bool, bool]] = {}
        self._resolved: dict[Path, Path] = {}
        self._policy = policy  # None: bytecode is not confined (trusted callers)

    def check(self, doc: Document) -> list[Problem]:
        kind: str = doc.data["kind"]
        spec: dict[str, Any] = doc.data["spec"]
        keys = spec_keys(kind)
        programs = programs_of(kind, spec)
        problems: list[Problem] = []
        obj, written = self._bytecode(doc, spec, keys["bytecode"], problems)
        if is_application(kind):
            problems.extend(_duplicate_programs(doc, spec["programs"]))
        for program in programs:
            if obj is not None:
                message = _function_problem(program, written, obj)
                if message:
                    problems.append(doc.problem(program.function_path, message))
            for link in program.links:
                problems.extend(_link_problems(doc, program, link))
        problems.extend(pin_name_problems(doc, programs))
        if obj is not None:
            where = ("spec", keys["bytecode"], "path")
            problems.extend(map_name_problems(doc, obj.maps, where, written))
        data = spec.get(keys["globaldata"])
        if data and obj is not None:
            for name, message in globaldata.problems(data, obj, written):
                path = ("spec", keys["globaldata"]) + ((name,) if name is not None else ())
                problems.append(doc.problem(path, message))
        return problems

    def _object(self, path: Path) -> ElfObject | ElfError:
        key = self._resolved.get(path)
        if key is None:
            key = self._resolved[path] = path.resolve()
        if key not in self._objects:
            try:
                self._objects[key] = read_bpf_object(key)
            except ElfError as e:
                self._objects[key] = e
        return self._objects[key]

    def _located(self, manifest: Path, written: str) -> tuple[Path, str | None, bool, bool]:
        """(absolute path, why it may not be read, exists, is a directory) of the bytecode
        ``written`` in ``manifest``; asked once per directory and path in one check (a thousand
        manifests naming one object beside them resolve it once)."""
        key = (manifest.parent, written)
        found = self._locations.get(key)
        if found is None:
            path = Path(os.path.abspath(resolve_bytecode(manifest, written)))
            refused = self._policy.check(manifest, written) if self._policy is not None else None
            exists = not refused and path.exists()
            found = (path, refused, exists, exists and path.is_dir())
            self._locations[key] = found
        return found

    def _bytecode(
        self, doc: Document, spec: dict[str, Any], field: str, problems: list[Problem]
    ) -> tuple[ElfObject | None, str]:
        image = spec[field].get("image")
        if image is not None:  # pulled at plan time, where the ELF inside is checked
            # Imported here: most sources name paths, and every command checks manifests.
            from reconciler.images import ImageError
            from reconciler.images import reference as images_reference

            url: str = image["url"]
            try:
                images_reference.parse(url)
            except ImageError as e:
                problems.append(doc.problem(("spec", field, "image", "url"), str(e)))
            return None, url
        written: str = spec[field]["path"]
        where = ("spec", field, "path")
        path, refused, exists, is_dir = self._located(doc.path, written)
        if refused:  # decided on the resolved path, before the file is opened
            problems.append(doc.problem(where, refused))
            return None, written
        if not exists:
            hint = (
                "" if Path(written).is_absolute() else f" (relative to the directory of {doc.file})"
            )
            problems.append(doc.problem(where, f"bytecode file not found: {path}{hint}"))
            return None, written
        if is_dir:
            problems.append(
                doc.problem(where, f"{written} is a directory, not an eBPF object file")
            )
            return None, written
        obj = self._object(path)
        if isinstance(obj, ElfError):
            problems.append(doc.problem(where, f"{written}: {obj}"))
            return None, written
        return obj, written


def _duplicate_programs(doc: Document, programs: list[dict[str, Any]]) -> list[Problem]:
    first: dict[str, int] = {}
    out = []
    for i, program in enumerate(programs):
        name = program["name"]
        if name in first:
            also = format_path(("spec", "programs", first[name], "name"))
            out.append(
                doc.problem(
                    ("spec", "programs", i, "name"),
                    f"program {name!r} is listed twice (also at {also}); each program is one "
                    "function of the bytecode, so list it once (with several links if needed)",
                )
            )
        else:
            first[name] = i
    return out


def _link_problems(doc: Document, program: Program, link: LinkSpec) -> list[Problem]:
    values = link.values
    out = [
        doc.problem(link.path if key is None else link.where(key), message)
        for key, message in program.kind.link_rules(values, program.in_application)
    ]
    if values.get("primary") and values.get("netns"):
        netns = "netnsPath" if program.in_application else "netns"
        out.append(
            doc.problem(
                link.where("primary"),
                f"the primary interface is the host's default route interface, which is not in "
                f"the network namespace {values['netns']}; with {netns}, name the interfaces",
            )
        )
    discovery = values.get("discovery")
    if discovery is not None:
        at: FieldPath = (*link.where("discovery"), "allowedInterfaces")
        for i, pattern in enumerate(discovery["allowed"]):
            regex = allowed_regex(pattern)
            if isinstance(regex, str):
                out.append(
                    doc.problem(
                        (*at, i),
                        f"{_shown(pattern)} is not a valid regular expression ({regex}); write "
                        "an exact interface name, or a regular expression between slashes, "
                        "e.g. /^veth/",
                    )
                )
    return out


def _shown(pattern: str) -> str:
    return (
        repr(pattern) if len(pattern) <= 64 else f"{pattern[:40]!r}... ({len(pattern)} characters)"
    )


def allowed_regex(pattern: str) -> re.Pattern[str] | str | None:
    """An ``allowedInterfaces`` entry as bpfman-operator reads it: ``/REGEX/`` is a regular
    expression searched anywhere in the name; anything else (surrounding spaces trimmed) is an
    exact name (None). A string is the reason the regular expression is invalid."""
    text = pattern.strip(" ")
    if len(text) >= 2 and text.startswith("/") and text.endswith("/"):
        if len(text) > MAX_INTERFACE_REGEX:
            # It is matched against names of at most 15 bytes: a long one is a mistake, or an
            # attempt to make compiling it (recursively, in Python's re) cost.
            return f"longer than {MAX_INTERFACE_REGEX} characters"
        try:
            return re.compile(text[1:-1])
        except (re.error, RecursionError, OverflowError) as e:
            return str(e) or "nested too deeply"
    return None


def object_problems(
    kind: str, spec: dict[str, Any], obj: ElfObject, written: str
) -> list[tuple[FieldPath, str]]:
    """What :class:`SemanticChecker` says about the object of a schema-valid spec, for an object
    known only at plan time (a bytecode image's): each program's function, and global data."""
    keys = spec_keys(kind)
    out: list[tuple[FieldPath, str]] = []
    for program in programs_of(kind, spec):
        message = _function_problem(program, written, obj)
        if message:
            out.append((program.function_path, message))
    data = spec.get(keys["globaldata"])
    if data:
        for name, message in globaldata.problems(data, obj, written):
            out.append(
                (("spec", keys["globaldata"]) + ((name,) if name is not None else ()), message)
            )
    return out


def _function_problem(program: Program, written: str, obj: ElfObject) -> str | None:
    kind = program.kind  # the section rules of its type, whichever manifest kind spelled it
    expected, example = kind.sections.expected, kind.sections.example
    who = f"a program of type {program.type_name}" if program.in_application else kind.a_name
    name = program.function
    if not obj.has_symbols:
        return (
            f"{written} has no symbol table (was it stripped?), so no function can be found by "
            "name; keep the symbols (llvm-strip -g removes only debug information)"
        )
    function = obj.function(name)
    if function is None:
        programs = obj.programs()
        fitting = [f.name for f in programs if kind.sections.fits(f.section)]
        hint = _did_you_mean(name, fitting or [f.name for f in programs])
        if fitting:
            return (
                f"function {name!r} is not in {written}{hint}; functions there that "
                f"{who} can use: {_listing(fitting)}"
            )
        others = [f"{f.name} ({f.section})" for f in programs]
        return (
            f"function {name!r} is not in {written}, and no function there is in {expected}; "
            f"its programs: {_listing(others) if others else 'none'}"
        )
    if not function.is_program:
        return (
            f"function {name!r} is a subprogram in .text, not a program entry point; "
            f"put it in its own section, e.g. {example}"
        )
    if not kind.sections.fits(function.section):
        what = describe_section(function.section)
        message = (
            f"function {name!r} is in section {function.section!r}, {what}; {who} needs {expected}"
        )
        able = [k for k in kinds.all() if k.sections.fits(function.section)]
        # Several kinds load one family (kprobes and uprobes): name the one spelled alike.
        head = '"' + function.section.split("/")[0]
        alike = [
            k for k in able if f'{head}"' in k.sections.example or f"{head}/" in k.sections.example
        ]
        other = next(iter(alike or able), None)
        if other and program.in_application:
            message += f" (for this section, use type: {other.app_types[0].name})"
        elif other:
            message += f" (for this section, use kind {other.name})"
        return message
    return None


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_LIST_LIMIT])
    return shown + (f" and {len(names) - _LIST_LIMIT} more" if len(names) > _LIST_LIMIT else "")


def _did_you_mean(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
