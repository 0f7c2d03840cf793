"""Validate manifest documents against ``schemas/<kind>.json`` and explain what would be valid.

The JSON Schemas at the top of the repository are the contract (editors can use them as they are);
this module only adds what a schema cannot say: defaults are filled in while validating, and each
jsonschema error becomes a :class:`Problem` pointing at the line of the offending field and
saying what would be accepted instead.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from reconciler import kinds
from reconciler.spec.fastcheck import Check, check_valid, compile_schema
from reconciler.spec.loader import Document, FieldPath, format_path
from reconciler.spec.model import Problem

if TYPE_CHECKING:  # jsonschema costs ~50 ms to import: only a manifest to check pays for it
    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator

MORE = "x-bpfman-more"  # the validator name of a summary error (reconciler.spec.validator)

API_VERSION = "bpfman.io/v1alpha1"
# The program kinds of bpfman-operator v0.5.x (lowercase field names), as the kind registry lists
# them, then the applications of current bpfman-operator (camelCase field names).
PROGRAM_KINDS: tuple[str, ...] = kinds.kind_names()
APPLICATION_KINDS: tuple[str, ...] = ("BpfApplication", "ClusterBpfApplication")
KINDS: tuple[str, ...] = PROGRAM_KINDS + APPLICATION_KINDS
# bpfman-operator kinds this release does not implement yet: named so the message says "not yet"
# rather than "unknown".
LATER_KINDS: tuple[str, ...] = (
    "XdpNsProgram",
    "TcNsProgram",
    "TcxNsProgram",
    "UprobeNsProgram",
    "BpfNsApplication",
)
# Package data, so that an installed bpfman (a wheel, pre-commit's virtualenv) has them; the
# checkout's top-level schemas/ is a symlink here, for editors and links.
SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"
UNSUPPORTED = "x-bpfman-unsupported"  # schema annotation: a field rejected, and why
HINT = "x-bpfman-hint"  # schema annotation: in words, what a pattern/constraint accepts
# Unknown fields of one mapping reported one by one; the rest are counted.
MAX_UNKNOWN_FIELDS = 10


def schema_path(kind: str) -> Path:
    return SCHEMA_DIR / f"{kind.lower()}.json"


@functools.cache
def kind_schema(kind: str) -> dict[str, Any]:
    """The schema of ``kind`` with every ``$ref`` (into ``common.json`` or its own ``$defs``)
    inlined."""
    common = json.loads((SCHEMA_DIR / "common.json").read_text())["$defs"]
    schema = json.loads(schema_path(kind).read_text())
    inlined = _inline(schema, schema.get("$defs", {}), common)
    inlined.pop("$defs", None)
    return inlined


def _inline(node: Any, local: dict[str, Any], common: dict[str, Any]) -> Any:
    """``#/$defs/NAME`` refers to the document being inlined (``local``), and
    ``common.json#/$defs/NAME`` to common.json, whose own refs are then local to it."""
    if isinstance(node, list):
        return [_inline(item, local, common) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _inline(value, local, common) for key, value in node.items() if key != "$ref"}
    if "$ref" in node:
        ref: str = node["$ref"]
        document, _, pointer = ref.partition("#")
        if document not in ("", "common.json") or not pointer.startswith("/$defs/"):
            raise ValueError(f"unsupported $ref {ref!r} (only [common.json]#/$defs/NAME)")
        defs = common if document else local
        target = _inline(defs[pointer.removeprefix("/$defs/")], defs, common)
        out = {**target, **out}  # keywords beside $ref (e.g. a description) win
    return out


@functools.cache
def _validator(kind: str) -> Validator:
    from reconciler.spec.validator import ManifestValidator

    return ManifestValidator(kind_schema(kind))


@functools.cache
def _fast(kind: str) -> Check | None:
    return compile_schema(kind_schema(kind))


def validate_document(doc: Document) -> list[Problem]:
    """Check one document against the schema of its kind, filling in defaults in ``doc.data``.
    A valid document is recognised by the compiled checks (reconciler/spec/fastcheck.py); any
    other goes to jsonschema, which says what is wrong."""
    data: dict[str, Any] = doc.data
    kind = data.get("kind")
    if kind not in KINDS:
        return [_kind_problem(doc, kind, data.get("apiVersion"))]
    fast = _fast(str(kind))
    if fast is not None and check_valid(fast, data):
        return []
    # Only a document the schema rejects gets here, and every sign below is a field or a value
    # the current schema rejects, so a valid application is never mistaken for an old one.
    if kind in APPLICATION_KINDS and v05_application(data):
        return [doc.problem(("kind",), v05_message(doc.file, str(kind)))]
    return check_against(_validator(str(kind)), doc)


# bpfman-operator v0.5.x's BpfApplication (cluster-scoped, lowercase field names, each program's
# settings beside its bpffunctionname) was replaced by today's camelCase applications; its
# manifests fail the schema on 20-30 fields, which says nothing useful, so they are told apart.
V05_SPEC_FIELDS = ("bytecode", "nodeselector", "globaldata", "mapownerselector")
# v0.5.x spellings that differ from today's (XDP, TC and TCX are spelled the same).
V05_TYPES = ("Tracepoint", "Kprobe", "Kretprobe", "Uprobe", "Uretprobe", "Fentry", "Fexit")


def v05_application(data: Any) -> bool:
    """Whether ``data`` (an application document) is written in bpfman-operator v0.5.x's format:
    lowercase spec fields, a program's bpffunctionname, or a v0.5.x type spelling on a program
    without a name (a current program always has one, so a typo of KProbe is not taken for it)."""
    spec = data.get("spec") if isinstance(data, dict) else None
    if not isinstance(spec, dict):
        return False
    if any(name in spec for name in V05_SPEC_FIELDS):
        return True
    programs = spec.get("programs")
    for program in programs if isinstance(programs, list) else ():
        if not isinstance(program, dict):
            continue
        if "bpffunctionname" in program:
            return True
        if program.get("type") in V05_TYPES and "name" not in program:
            return True
        for value in program.values():
            if isinstance(value, dict) and "bpffunctionname" in value:
                return True
    return False


def v05_message(file: str, kind: str) -> str:
    return (
        f"this is bpfman-operator v0.5.x's {kind} format (lowercase bytecode and nodeselector, "
        "each program's settings beside its bpffunctionname), which current bpfman-operator "
        f"and bpfman no longer read; `bpfman convert {file}` rewrites it into the current one "
        "(add --write to save it)"
    )


def check_against(validator: Validator, doc: Document) -> list[Problem]:
    """The problems of ``doc`` under ``validator``'s schema, each at the line of its field, in
    line order (defaults are filled into ``doc.data``)."""
    try:
        errors = list(validator.iter_errors(doc.data))
    except RecursionError:
        return [doc.problem((), "document is recursive or nested too deeply")]
    # An unknown field already explains a wrong field count (interfaceselector: one of two).
    unknown = {tuple(e.absolute_path) for e in errors if e.validator == "additionalProperties"}
    errors = [
        e
        for e in errors
        if not (
            e.validator in ("minProperties", "maxProperties") and tuple(e.absolute_path) in unknown
        )
    ]
    problems: list[Problem] = []
    seen: set[tuple[FieldPath, str]] = set()
    for error in errors:
        for path, message in _explain(error):
            if (path, message) not in seen:
                seen.add((path, message))
                problems.append(doc.problem(path, message))
    problems.sort(key=lambda p: p.origin.line)
    return problems


def _kind_problem(doc: Document, kind: object, api_version: object) -> Problem:
    valid = ", ".join(sorted(KINDS))
    if kind is None:
        return doc.problem(("kind",), f"required field is missing; expected one of: {valid}")
    if kind in LATER_KINDS:
        return doc.problem(("kind",), f"kind {kind} is not supported yet; supported kinds: {valid}")
    suggestion = _did_you_mean(kind, KINDS)
    message = (
        f"unknown kind {kind!r}{f' ({suggestion})' if suggestion else ''}; valid kinds: {valid}"
    )
    if api_version != API_VERSION:
        message += f" (apiVersion {api_version!r} is not {API_VERSION}: is this a bpfman manifest?)"
    return doc.problem(("kind",), message)


def _explain(error: ValidationError) -> list[tuple[FieldPath, str]]:
    """One jsonschema error -> (field path, message) pairs; a few errors concern several fields."""
    path: FieldPath = tuple(error.absolute_path)
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    value = error.instance
    check = error.validator
    if check == MORE:
        return [(path, error.message)]
    if "propertyNames" in error.schema_path:  # a bad key: point at the key itself
        return [((*path, value), f"invalid key: must be {_expect(schema)} (got {_show(value)})")]
    if check == "additionalProperties" and isinstance(value, dict):
        return _unknown_fields(path, value, schema)
    if check == "required" and isinstance(value, dict):
        properties = schema.get("properties", {})
        return [
            (
                (*path, name),
                f"required field is missing; expected {_expect(properties.get(name, {}))}",
            )
            for name in cast(list[str], error.validator_value)
            if name not in value
        ]
    if check == "not" and UNSUPPORTED in schema:
        return [(path, str(schema[UNSUPPORTED]))]
    if check == "uniqueItems" and isinstance(value, list):
        return _duplicate_items(path, value)
    return [(path, _message(str(check), error.validator_value, value, schema, error.message))]


def _message(check: str, limit: Any, value: Any, schema: dict[str, Any], fallback: str) -> str:
    got = _show(value)
    if check == "type":
        message = f"must be {_type_words(limit)} (got {got})"
        if limit == "string" and isinstance(value, int | float | bool):
            message += "; put it in quotes to make it a string"
        return message
    if check in ("enum", "const", "pattern"):
        # A hint that names the value already says what to do about it.
        named = isinstance(value, str) and value in str(schema.get(HINT, ""))
        suggestion = "" if named else _did_you_mean(value, schema.get("enum", ()))
        return f"must be {_expect(schema)} (got {got}{'; ' + suggestion if suggestion else ''})"
    if check == "minimum":
        return f"must be >= {limit} (got {value})"
    if check == "maximum":
        return f"must be <= {limit} (got {value})"
    if check == "minLength":
        return "must not be empty" if limit == 1 else f"must be at least {limit} characters long"
    if check == "maxLength":
        return f"must be at most {limit} characters long (got {len(value)})"
    if check == "minItems":
        return "must not be empty" if limit == 1 else f"must have at least {limit} items"
    if check == "maxItems" and limit == 0:
        hint = f"; {schema[HINT]}" if HINT in schema else ""
        return f"must be empty (got {len(value)} item{'s' if len(value) != 1 else ''}){hint}"
    if check == "maxItems":
        return f"must have at most {limit} items (got {len(value)})"
    if check in ("minProperties", "maxProperties") and isinstance(value, dict):
        names = ", ".join(value) or "none"
        return f"{schema.get(HINT) or check + f' {limit}'} (got: {names})"
    return fallback


def _unknown_fields(
    path: FieldPath, value: dict[Any, Any], schema: dict[str, Any]
) -> list[tuple[FieldPath, str]]:
    properties: dict[str, Any] = schema.get("properties", {})
    allowed = [name for name, sub in properties.items() if UNSUPPORTED not in sub]
    unknown = [key for key in value if key not in properties]
    out = []
    for key in unknown[:MAX_UNKNOWN_FIELDS]:
        suggestion = _did_you_mean(key, allowed)
        message = (
            f"unknown field {str(key)!r}{f' ({suggestion})' if suggestion else ''}; "
            f"allowed fields here: {', '.join(allowed)}"
        )
        out.append(((*path, key), message))
    if len(unknown) > MAX_UNKNOWN_FIELDS:
        more = len(unknown) - MAX_UNKNOWN_FIELDS
        out.append((path, f"and {more} more unknown fields here, not listed one by one"))
    return out


def _duplicate_items(path: FieldPath, items: list[Any]) -> list[tuple[FieldPath, str]]:
    out = []
    for i, item in enumerate(items):
        first = next(j for j, other in enumerate(items) if other == item)
        if first != i:
            also = format_path((*path, first))
            message = f"{_show(item)} is listed twice (also at {also}); items must be unique"
            out.append(((*path, i), message))
    return out


def _did_you_mean(value: object, candidates: Sequence[Any]) -> str:
    if not isinstance(value, str) or not candidates:
        return ""
    by_lower = {str(c).lower(): str(c) for c in candidates}
    close = difflib.get_close_matches(value.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"did you mean {by_lower[close[0]]!r}?" if close else ""


_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _type_words(types: str | list[str]) -> str:
    names = [types] if isinstance(types, str) else list(types)
    return " or ".join(_TYPE_WORDS.get(name, name) for name in names)


def _expect(schema: dict[str, Any]) -> str:
    """In words, what ``schema`` accepts: the hint, the enum, the range or the type."""
    if HINT in schema:
        return str(schema[HINT])
    if "const" in schema:
        const = schema["const"]
        return const if isinstance(const, str) else json.dumps(const)
    if "enum" in schema:
        return "one of: " + ", ".join(str(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "integer" and "minimum" in schema and "maximum" in schema:
        return f"an integer from {schema['minimum']} to {schema['maximum']}"
    if kind == "array" and isinstance(schema.get("items"), dict):
        return f"a list, each item {_expect(schema['items'])}"
    if kind == "object" and schema.get("required"):
        return "a mapping with " + ", ".join(schema["required"])
    if kind:
        return _type_words(kind)
    return "a valid value"


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__} {value}"  # e.g. an unquoted YAML date
