"""The compiled checks (reconciler/spec/fastcheck.py) against jsonschema, which they stand in for
on valid documents: on every manifest of the repository and on thousands of mutations of them,
"valid" from the checks must mean jsonschema finds no error and fills the same defaults, and
anything else must leave the document exactly as it was read."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from reconciler.spec import yamlread
from reconciler.spec.fastcheck import check_valid, compile_schema
from reconciler.spec.schema import KINDS, kind_schema
from reconciler.spec.validator import ManifestValidator

REPO = Path(__file__).resolve().parents[2]
MUTATIONS_PER_DOCUMENT = 60
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    55.0,
    2**40,
    1001,
    "",
    "x",
    "eth0",
    "Pass",
    "pass",
    "a\nb",
    "x" * 300,
    "ingress",
    "/bin/sh",
    [],
    ["lo"],
    [1, 1],
    ["a", "a"],
    [{}],
    {},
    {"a": 1},
    {"interfaces": ["eth0"]},
]


def _documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted([*REPO.glob("manifests/**/*.yaml"), *REPO.glob("tests/**/*.yaml")]):
        try:
            read = list(yamlread.read_documents(path.read_text()))
        except (yamlread.YamlError, UnicodeDecodeError):
            continue
        for d in read:
            if isinstance(d.data, dict) and d.data.get("kind") in KINDS and not d.problems:
                docs.append(d.data)
    return docs


def _paths(value: Any, here: tuple = ()) -> list[tuple]:
    out = [here]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*here, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*here, i))
    return out


def _mutate(doc: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    path = rng.choice([p for p in _paths(doc)[1:] if p != ("kind",)])
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    what = rng.randrange(4)
    if what == 0 and isinstance(parent, dict):
        del parent[last]
    elif what == 1 and isinstance(parent, dict):
        parent[rng.choice(["unknown", "priority", "proceedon", "direction", "offset"])] = (
            rng.choice(ODD_VALUES)
        )
    elif what == 2 and isinstance(parent[last], list) and parent[last]:
        parent[last].append(copy.deepcopy(parent[last][0]))
    else:
        parent[last] = copy.deepcopy(rng.choice(ODD_VALUES))
    return doc


def _agree(data: dict[str, Any]) -> bool:
    """Whether the checks said valid (and then agree with jsonschema)."""
    kind = data["kind"]
    check = compile_schema(kind_schema(kind))
    assert check is not None, f"{kind}'s schema is not compiled: every document pays jsonschema"
    fast, slow = copy.deepcopy(data), copy.deepcopy(data)
    valid = check_valid(check, fast)
    errors = list(ManifestValidator(kind_schema(kind)).iter_errors(slow))
    if valid:
        assert not errors, f"checks said valid, jsonschema: {errors[0].message}\n{data}"
        assert json.dumps(fast) == json.dumps(slow), "defaults filled differently"
    else:
        assert json.dumps(fast) == json.dumps(data), "a refused document was changed"
    return valid


DOCUMENTS = _documents()


def test_the_repository_has_manifests_of_every_kind() -> None:
    assert {d["kind"] for d in DOCUMENTS} >= {"XdpProgram", "TracepointProgram", "BpfApplication"}


@pytest.mark.parametrize("index", range(len(DOCUMENTS)))
def test_every_valid_manifest_is_recognised_without_jsonschema(index: int) -> None:
    data = DOCUMENTS[index]
    if list(ManifestValidator(kind_schema(data["kind"])).iter_errors(copy.deepcopy(data))):
        pytest.skip("an invalid manifest (a test's input)")
    assert _agree(data)


def test_mutations_never_make_the_checks_laxer_than_jsonschema() -> None:
    rng = random.Random(11)
    valid = invalid = 0
    for data in DOCUMENTS:
        for _ in range(MUTATIONS_PER_DOCUMENT):
            if _agree(_mutate(data, rng)):
                valid += 1
            else:
                invalid += 1
    assert valid and invalid  # both sides were exercised
