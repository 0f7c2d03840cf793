"""The JSON Schema validator manifests are checked with: Draft 2020-12 as jsonschema implements
it, plus what a manifest reader needs and the library does not do.

- **Defaults** are filled into the document while it is validated.
- **Integers** are integers: YAML's 55.0 is a float, and a priority of 55.0 is a typo.
- **Patterns match the whole value**, as in JSON Schema (ECMA-262 regular expressions), where
  ``$`` is the end of the input. Python's ``$`` also matches before a final newline, so
  ``"fw\\n"`` would pass ``^[a-z]+$``; every pattern is compiled with ``$`` as ``\\Z``.
- **Cost linear in the input, errors capped.** A list or mapping of many simple values (a
  global-data byte list, labels, interface names) is checked by a plain loop instead of one
  validator call per value, and after ``MAX_ERRORS_PER_CONTAINER`` invalid values in one list
  or mapping the rest are counted in one error rather than reported one by one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from reconciler.spec.patterns import ecma_regex, full_match

MAX_ERRORS_PER_CONTAINER = 10
# The validator name of a summary error: "N more items are invalid" (schema.py has it too, so
# that it can name it without importing jsonschema).
MORE = "x-bpfman-more"


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]):
    if validator.is_type(instance, "string") and not full_match(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _fill_defaults(validator: Any, properties: dict[str, Any], instance: Any, schema: Any):
    if validator.is_type(instance, "object"):
        for name, subschema in properties.items():
            if name not in instance and isinstance(subschema, dict) and "default" in subschema:
                instance[name] = copy.deepcopy(subschema["default"])
    yield from Draft202012Validator.VALIDATORS["properties"](
        validator, properties, instance, schema
    )


# --- fast checks of simple values ----------------------------------------------------------

# Keywords a "simple" schema may have: each has an exact plain-Python equivalent below.
_SIMPLE = frozenset(
    ("type", "minimum", "maximum", "minLength", "maxLength", "pattern", "enum")
    + ("description", "x-bpfman-hint", "title", "examples")
)
_TYPES: dict[str, Callable[[Any], bool]] = {
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _simple_check(schema: Any) -> Callable[[Any], bool] | None:
    """A predicate equivalent to validating against ``schema``, when ``schema`` only
    constrains one plain value (type, range, length, pattern, enum); None otherwise."""
    if not isinstance(schema, dict) or not schema.keys() <= _SIMPLE:
        return None
    types = schema.get("type")
    names = [types] if isinstance(types, str) else types
    if names is not None and (not isinstance(names, list) or not all(n in _TYPES for n in names)):
        return None
    tests = [_TYPES[n] for n in names] if names else []
    low, high = schema.get("minimum"), schema.get("maximum")
    shortest, longest = schema.get("minLength"), schema.get("maxLength")
    regex = ecma_regex(schema["pattern"]) if "pattern" in schema else None
    enum = schema.get("enum")
    if enum is not None and not all(isinstance(e, str | int) for e in enum):
        return None

    def check(value: Any) -> bool:
        if tests and not any(test(value) for test in tests):
            return False
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and ((low is not None and value < low) or (high is not None and value > high)):
            return False
        if isinstance(value, str):
            if (shortest is not None and len(value) < shortest) or (
                longest is not None and len(value) > longest
            ):
                return False
            if regex is not None and not regex.search(value):
                return False
        if enum is not None:
            return any(type(value) is type(e) and value == e for e in enum)
        return True

    return check


_CHECKS: dict[int, tuple[Any, Callable[[Any], bool] | None]] = {}


def _check_of(schema: Any) -> Callable[[Any], bool] | None:
    cached = _CHECKS.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = (schema, _simple_check(schema))
        _CHECKS[id(schema)] = cached
    return cached[1]


def _each(
    validator: Any,
    pairs: Iterator[tuple[Any, Any]],
    schema: Any,
    as_key: bool = False,
) -> Iterator[ValidationError]:
    """Validate each (path, value) against ``schema``, simple values by a plain loop, and
    report at most MAX_ERRORS_PER_CONTAINER invalid ones, then one error counting the rest."""
    check = _check_of(schema)
    bad = 0
    for path, value in pairs:
        if check is not None:
            if check(value):
                continue
            if bad >= MAX_ERRORS_PER_CONTAINER:  # invalid for sure: only counted
                bad += 1
                continue
        errors = list(
            validator.descend(value, schema)
            if as_key
            else validator.descend(value, schema, path=path)
        )
        if not errors:
            continue
        bad += 1
        if bad <= MAX_ERRORS_PER_CONTAINER:
            yield from errors
    if bad > MAX_ERRORS_PER_CONTAINER:
        more = bad - MAX_ERRORS_PER_CONTAINER
        what = "keys" if as_key else "values"
        yield ValidationError(
            f"and {more} more invalid {what} here, not listed one by one", validator=MORE
        )


def _items(validator: Any, items: Any, instance: Any, schema: dict[str, Any]):
    if not validator.is_type(instance, "array") or items is True or "prefixItems" in schema:
        yield from Draft202012Validator.VALIDATORS["items"](validator, items, instance, schema)
        return
    if items is False:
        yield from Draft202012Validator.VALIDATORS["items"](validator, items, instance, schema)
        return
    yield from _each(validator, enumerate(instance), items)


def _additional(validator: Any, extra: Any, instance: Any, schema: dict[str, Any]):
    if not validator.is_type(instance, "object") or not isinstance(extra, dict):
        yield from Draft202012Validator.VALIDATORS["additionalProperties"](
            validator, extra, instance, schema
        )
        return
    if "patternProperties" in schema:
        yield from Draft202012Validator.VALIDATORS["additionalProperties"](
            validator, extra, instance, schema
        )
        return
    known = schema.get("properties", {})
    pairs = ((k, v) for k, v in instance.items() if k not in known)
    yield from _each(validator, pairs, extra)


def _property_names(validator: Any, names: Any, instance: Any, schema: dict[str, Any]):
    if not validator.is_type(instance, "object"):
        return
    yield from _each(validator, ((k, k) for k in instance), names, as_key=True)


def _unique_items(validator: Any, unique: Any, instance: Any, schema: dict[str, Any]):
    """uniqueItems in linear time for hashable items (jsonschema's is quadratic for some)."""
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[tuple[type, Any]] = set()
    for item in instance:
        if isinstance(item, dict | list):
            yield from Draft202012Validator.VALIDATORS["uniqueItems"](
                validator, unique, instance, schema
            )
            return
        key = (type(item), item)
        if key in seen:
            yield ValidationError(f"{instance!r} has non-unique elements")
            return
        seen.add(key)


# YAML's 55.0 is a float; JSON Schema would call it an integer, but a priority of 55.0 is a typo.
_TYPE_CHECKER = Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda _checker, x: isinstance(x, int) and not isinstance(x, bool)
)
ManifestValidator = validators.extend(
    Draft202012Validator,
    validators={
        "properties": _fill_defaults,
        "pattern": _pattern,
        "items": _items,
        "additionalProperties": _additional,
        "propertyNames": _property_names,
        "uniqueItems": _unique_items,
    },
    type_checker=_TYPE_CHECKER,
)
