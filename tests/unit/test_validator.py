"""The manifest validator: whole-value patterns, the fast checks agree with jsonschema, and
errors in large lists and mappings are capped."""

from __future__ import annotations

import random

import pytest
from jsonschema import Draft202012Validator

from reconciler.spec.validator import (
    MAX_ERRORS_PER_CONTAINER,
    MORE,
    ManifestValidator,
    _simple_check,
    ecma_regex,
    full_match,
)


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("^[a-z]+$", "fw", True),
        ("^[a-z]+$", "fw\n", False),  # Python's $ would accept the newline
        ("^[a-z]+$", "fw\nx", False),
        ("^(?!\\.\\.?$)[^/:\\s]{1,15}$", "eth0", True),
        ("^(?!\\.\\.?$)[^/:\\s]{1,15}$", "..", False),
        ("^(?!\\.\\.?$)[^/:\\s]{1,15}$", "..\n", False),
        ("^a[$]b$", "a$b", True),  # $ inside a class is a character
        ("^a\\$$", "a$", True),  # an escaped $ too
        ("^[]$]+$", "]$", True),
    ],
)
def test_patterns_match_the_whole_value(pattern: str, value: str, matches: bool) -> None:
    assert full_match(pattern, value) is matches


def test_dollar_is_the_end_of_input() -> None:
    assert ecma_regex("^a$|^b$").pattern == "^a\\Z|^b\\Z"


SIMPLE = [
    {"type": "integer", "minimum": 0, "maximum": 255},
    {"type": "string", "maxLength": 15, "pattern": "^(?!\\.\\.?$)[^/:\\s]{1,15}$"},
    {"type": "string", "minLength": 1, "maxLength": 63, "pattern": "^[a-z0-9]*$"},
    {"enum": ["ingress", "egress"]},
    {"type": ["string", "null"]},
    {"type": "boolean"},
    {"type": "number", "minimum": 1.5},
]
VALUES = [0, 1, 255, 256, -1, 1.0, 2.5, True, False, None, "", "eth0", "eth0\n", "..", "a" * 16]
VALUES += ["ingress", "egress", "INGRESS", "x/y", "ok", [], {}, 10**20]


@pytest.mark.parametrize("schema", SIMPLE)
def test_fast_checks_agree_with_jsonschema(schema: dict) -> None:
    check = _simple_check(schema)
    assert check is not None
    reference = ManifestValidator(schema)  # the slow path: one descent per value
    for value in VALUES:
        assert check(value) is reference.is_valid(value), (schema, value)


def test_schemas_with_more_than_a_value_get_no_fast_check() -> None:
    assert _simple_check({"type": "object", "properties": {}}) is None
    assert _simple_check({"type": "string", "format": "ipv4"}) is None
    assert _simple_check({"anyOf": [{"type": "string"}]}) is None


def test_large_lists_report_some_errors_then_count_the_rest() -> None:
    schema = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255}}
    values = [random.Random(1).choice([-1, 300, "x"]) for _ in range(5000)]
    errors = list(ManifestValidator(schema).iter_errors(values))
    assert len(errors) == MAX_ERRORS_PER_CONTAINER + 1
    assert errors[-1].validator == MORE
    assert errors[-1].message == (
        f"and {5000 - MAX_ERRORS_PER_CONTAINER} more invalid values here, not listed one by one"
    )
    assert [e.path[0] for e in errors[:-1]] == list(range(MAX_ERRORS_PER_CONTAINER))


def test_large_mappings_and_their_keys_are_capped_too() -> None:
    schema = {
        "type": "object",
        "propertyNames": {"pattern": "^[a-z]+$"},
        "additionalProperties": {"type": "string"},
    }
    bad_keys = {f"K{i}": "v" for i in range(100)}
    errors = list(ManifestValidator(schema).iter_errors(bad_keys))
    assert len(errors) == MAX_ERRORS_PER_CONTAINER + 1 and errors[-1].validator == MORE
    assert "more invalid keys" in errors[-1].message
    bad_values = {f"k{chr(97 + i % 26)}{'x' * (i // 26)}": 1 for i in range(100)}
    errors = list(ManifestValidator(schema).iter_errors(bad_values))
    assert len(errors) == MAX_ERRORS_PER_CONTAINER + 1


def test_unique_items_is_linear_and_strict_about_types() -> None:
    schema = {"type": "array", "uniqueItems": True}
    validator = ManifestValidator(schema)
    assert validator.is_valid(list(range(100_000)))
    assert not validator.is_valid(["a", "b", "a"])
    assert validator.is_valid([1, True])  # 1 and true are different values
    assert Draft202012Validator(schema).is_valid([1, True])
    assert not validator.is_valid([{"a": 1}, {"a": 1}])


def test_defaults_are_filled_and_floats_are_not_integers() -> None:
    schema = {"type": "object", "properties": {"p": {"type": "integer", "default": 1000}}}
    doc: dict = {}
    assert ManifestValidator(schema).is_valid(doc) and doc == {"p": 1000}
    assert not ManifestValidator(schema).is_valid({"p": 55.0})
