"""A schema compiled into plain Python checks, for the common case: a valid manifest.

jsonschema walks the schema for every document (descending, evolving validators, building
error objects it then throws away): about 100 µs a manifest, and 50 ms to import. Almost every
manifest a host reads is valid, and a valid manifest needs no messages, only a yes. So each
kind's schema is compiled once into nested closures that answer "valid" without jsonschema,
and only a document they do not call valid is handed to jsonschema (reconciler/spec/schema.py),
which then says what is wrong in its usual words. The two must agree on "valid":

- the closures fill defaults exactly where ``validator._fill_defaults`` does (when a
  ``properties`` keyword meets an object, before its properties are checked, in the schema's
  keyword order) and log every fill, so that a document handed on to jsonschema is first
  restored to what was read;
- every keyword is checked with the custom validator's meaning (integers are not booleans,
  patterns match the whole value, uniqueItems tells 1 from true), and where the closures could be
  stricter than jsonschema (an enum value equal to a member of another type, uniqueItems over
  mappings) they raise :class:`Unsure` instead of answering, because under ``not`` a stricter
  "invalid" would become a laxer "valid";
- a schema with any keyword not listed here is not compiled at all (``compile_schema`` returns
  None): jsonschema checks every document of that kind.

tests/unit/test_fastcheck.py compares both on every manifest of the repository and on thousands
of mutations of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reconciler.spec.patterns import ecma_regex

Fills = list[tuple[dict[str, Any], str]]
Check = Callable[[Any, Fills], bool]

# Keywords that only annotate: they never make a document invalid.
_ANNOTATIONS = frozenset(
    (
        "description",
        "title",
        "examples",
        "$schema",
        "$comment",
        "default",
        "x-bpfman-hint",
        "x-bpfman-unsupported",
    )
)


class Unsure(Exception):
    """The closures cannot tell as jsonschema would: ask jsonschema."""


class _NotCompiled(Exception):
    pass


def _is_integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": _is_integer,
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _same(a: Any, b: Any) -> bool:
    """JSON equality, strictly: True only where jsonschema's equality certainly holds too;
    Unsure where Python's == and the types disagree (1 == 1.0, True == 1)."""
    if type(a) is not type(b):
        if a == b or (isinstance(a, list | dict) and isinstance(b, list | dict)):
            raise Unsure
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def compile_schema(schema: Any) -> Check | None:
    """The schema's checks, or None when it uses a keyword the closures do not implement."""
    try:
        return _compile(schema)
    except _NotCompiled:
        return None


def _compile(schema: Any) -> Check:
    if schema is True:
        return lambda _v, _f: True
    if schema is False:
        return lambda _v, _f: False
    if not isinstance(schema, dict):
        raise _NotCompiled
    checks: list[Check] = []
    for keyword, value in schema.items():
        if keyword in _ANNOTATIONS:
            continue
        make = _KEYWORDS.get(keyword)
        if make is None:
            if keyword in ("then", "else"):
                continue  # compiled with "if"
            raise _NotCompiled
        checks.append(make(value, schema))
    if not checks:
        return lambda _v, _f: True
    if len(checks) == 1:
        return checks[0]

    def all_of_keywords(v: Any, fills: Fills) -> bool:
        # Every keyword runs, as jsonschema's iter_errors runs them all: a later keyword may
        # fill defaults an earlier failure would otherwise have skipped.
        ok = True
        for check in checks:
            if not check(v, fills):
                ok = False
        return ok

    return all_of_keywords


def _type(value: Any, _schema: dict[str, Any]) -> Check:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(n in _TYPES for n in names):
        raise _NotCompiled
    tests = [_TYPES[n] for n in names]
    if len(tests) == 1:
        test = tests[0]
        return lambda v, _f: test(v)
    return lambda v, _f: any(t(v) for t in tests)


def _properties(value: Any, _schema: dict[str, Any]) -> Check:
    if not isinstance(value, dict):
        raise _NotCompiled
    props = [(name, _compile(sub)) for name, sub in value.items()]
    defaults = [
        (name, sub["default"])
        for name, sub in value.items()
        if isinstance(sub, dict) and "default" in sub
    ]

    def check(v: Any, fills: Fills) -> bool:
        if not isinstance(v, dict):
            return True
        for name, default in defaults:
            if name not in v:
                v[name] = _copy(default)
                fills.append((v, name))
        ok = True
        for name, sub in props:
            if name in v and not sub(v[name], fills):
                ok = False
        return ok

    return check


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_copy(x) for x in value]
    if isinstance(value, dict):
        return {k: _copy(x) for k, x in value.items()}
    return value


def _required(value: Any, _schema: dict[str, Any]) -> Check:
    names = list(value)
    return lambda v, _f: not isinstance(v, dict) or all(n in v for n in names)


def _additional(value: Any, schema: dict[str, Any]) -> Check:
    if "patternProperties" in schema:
        raise _NotCompiled
    known = set(schema.get("properties", {}))
    sub = _compile(value)

    def check(v: Any, fills: Fills) -> bool:
        if not isinstance(v, dict):
            return True
        ok = True
        for k, x in v.items():
            if k not in known and not sub(x, fills):
                ok = False
        return ok

    return check


def _pattern(value: Any, _schema: dict[str, Any]) -> Check:
    regex = ecma_regex(value)
    return lambda v, _f: not isinstance(v, str) or regex.search(v) is not None


def _length(bound: Callable[[int, int], bool]) -> Callable[[Any, dict[str, Any]], Check]:
    def make(value: Any, _schema: dict[str, Any]) -> Check:
        return lambda v, _f: not isinstance(v, str) or bound(len(v), value)

    return make


def _count(kind: type, bound: Callable[[int, int], bool]) -> Callable[[Any, dict[str, Any]], Check]:
    def make(value: Any, _schema: dict[str, Any]) -> Check:
        def check(v: Any, _f: Fills) -> bool:
            return not isinstance(v, kind) or bound(len(v), value)  # type: ignore[arg-type]

        return check

    return make


def _range(bound: Callable[[Any, Any], bool]) -> Callable[[Any, dict[str, Any]], Check]:
    def make(value: Any, _schema: dict[str, Any]) -> Check:
        if not _is_number(value):
            raise _NotCompiled
        return lambda v, _f: not _is_number(v) or bound(v, value)

    return make


def _enum(value: Any, _schema: dict[str, Any]) -> Check:
    if not isinstance(value, list):
        raise _NotCompiled
    members = list(value)
    return lambda v, _f: any(_same(v, m) for m in members)


def _const(value: Any, _schema: dict[str, Any]) -> Check:
    return lambda v, _f: _same(v, value)


def _has_default(schema: Any) -> bool:
    if isinstance(schema, dict):
        return "default" in schema or any(_has_default(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_has_default(v) for v in schema)
    return False


def _probe(value: Any) -> Check:
    """A subschema jsonschema only asks "is it valid?" (``not``, ``if``): it stops at the first
    error there, so a default filled inside would depend on where it stopped; no such schema
    is compiled."""
    if _has_default(value):
        raise _NotCompiled
    return _compile(value)


def _not(value: Any, _schema: dict[str, Any]) -> Check:
    sub = _probe(value)
    return lambda v, fills: not sub(v, fills)


def _if(value: Any, schema: dict[str, Any]) -> Check:
    condition = _probe(value)
    then = _compile(schema["then"]) if "then" in schema else None
    otherwise = _compile(schema["else"]) if "else" in schema else None

    def check(v: Any, fills: Fills) -> bool:
        if condition(v, fills):
            return then is None or then(v, fills)
        return otherwise is None or otherwise(v, fills)

    return check


def _all_of(value: Any, _schema: dict[str, Any]) -> Check:
    if not isinstance(value, list):
        raise _NotCompiled
    subs = [_compile(s) for s in value]

    def check(v: Any, fills: Fills) -> bool:
        ok = True
        for sub in subs:
            if not sub(v, fills):
                ok = False
        return ok

    return check


def _items(value: Any, schema: dict[str, Any]) -> Check:
    if "prefixItems" in schema:
        raise _NotCompiled
    sub = _compile(value)

    def check(v: Any, fills: Fills) -> bool:
        if not isinstance(v, list):
            return True
        ok = True
        for x in v:
            if not sub(x, fills):
                ok = False
        return ok

    return check


def _unique(value: Any, _schema: dict[str, Any]) -> Check:
    if not value:
        return lambda _v, _f: True

    def check(v: Any, _f: Fills) -> bool:
        if not isinstance(v, list):
            return True
        seen: set[tuple[type, Any]] = set()
        for x in v:
            if isinstance(x, dict | list):
                raise Unsure  # jsonschema's own comparison of structures decides
            key = (type(x), x)
            if key in seen:
                return False
            seen.add(key)
        return True

    return check


def _property_names(value: Any, _schema: dict[str, Any]) -> Check:
    sub = _compile(value)

    def check(v: Any, fills: Fills) -> bool:
        if not isinstance(v, dict):
            return True
        ok = True
        for k in v:
            if not sub(k, fills):
                ok = False
        return ok

    return check


_KEYWORDS: dict[str, Callable[[Any, dict[str, Any]], Check]] = {
    "type": _type,
    "properties": _properties,
    "required": _required,
    "additionalProperties": _additional,
    "pattern": _pattern,
    "minLength": _length(lambda n, b: n >= b),
    "maxLength": _length(lambda n, b: n <= b),
    "minItems": _count(list, lambda n, b: n >= b),
    "maxItems": _count(list, lambda n, b: n <= b),
    "minProperties": _count(dict, lambda n, b: n >= b),
    "maxProperties": _count(dict, lambda n, b: n <= b),
    "minimum": _range(lambda v, b: v >= b),
    "maximum": _range(lambda v, b: v <= b),
    "enum": _enum,
    "const": _const,
    "not": _not,
    "if": _if,
    "allOf": _all_of,
    "items": _items,
    "uniqueItems": _unique,
    "propertyNames": _property_names,
}


def check_valid(check: Check, data: Any) -> bool:
    """Whether ``data`` is certainly valid (defaults filled in); False leaves ``data`` exactly
    as it was, for jsonschema to explain."""
    fills: Fills = []
    try:
        if check(data, fills):
            return True
    except Unsure:
        pass
    for obj, key in reversed(fills):
        obj.pop(key, None)
    return False
