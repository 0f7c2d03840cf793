"""The program-kind registry: every registered kind has its schema, its docs section and its
contract tests, and every layer agrees with the registry about which kinds exist."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from reconciler import kinds
from reconciler.kernel.types import ProgType
from reconciler.kinds import ProgramKind
from reconciler.spec import KINDS
from reconciler.spec.schema import APPLICATION_KINDS, PROGRAM_KINDS, SCHEMA_DIR, schema_path
from tests import support

ALL = kinds.all()
IDS = [k.name for k in ALL]
NOT_KIND_SCHEMAS = {"common.json", "hostconfig.json"}
CONTRACT = support.REPO / "tests" / "kernel"


def _slug(heading: str) -> str:
    """The anchor a Markdown heading gets (GitHub's rule: lowercase, punctuation dropped,
    spaces to hyphens)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _headings() -> dict[str, str]:
    text = (support.REPO / "docs" / "manifests.md").read_text()
    in_code = False
    out = {}
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            heading = line.lstrip("#").strip()
            out[_slug(heading)] = heading
    return out


def _coverage() -> tuple[dict[str, tuple[str, ...]], dict[str, set[str]]]:
    """KIND_COVERAGE of the contract tests, and the test functions of each contract module
    (read from the source: importing them would need the kernel test harness)."""
    tests: dict[str, set[str]] = {}
    coverage: dict[str, tuple[str, ...]] = {}
    for path in sorted(CONTRACT.glob("test_contract*.py")):
        tree = ast.parse(path.read_text())
        tests[path.stem] = {
            node.name
            for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
        }
        for node in tree.body:
            if isinstance(node, ast.AnnAssign | ast.Assign):
                targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
                if any(isinstance(t, ast.Name) and t.id == "KIND_COVERAGE" for t in targets):
                    assert node.value is not None
                    coverage = ast.literal_eval(node.value)
    return coverage, tests


def test_the_registry_and_the_schemas_agree() -> None:
    files = {p.name for p in SCHEMA_DIR.glob("*.json")} - NOT_KIND_SCHEMAS
    registered = {k.schema_file for k in ALL}
    applications = {f"{name.lower()}.json" for name in APPLICATION_KINDS}
    assert files == registered | applications
    assert kinds.kind_names() == PROGRAM_KINDS
    assert set(KINDS) == set(PROGRAM_KINDS) | set(APPLICATION_KINDS)


@pytest.mark.parametrize("kind", ALL, ids=IDS)
def test_every_kind_has_a_schema(kind: ProgramKind) -> None:
    path = SCHEMA_DIR / kind.schema_file
    assert path == schema_path(kind.name) and path.is_file()
    schema = json.loads(path.read_text())
    assert schema["title"] == kind.name
    assert schema["properties"]["kind"]["const"] == kind.name


@pytest.mark.parametrize("kind", ALL, ids=IDS)
def test_every_application_type_is_in_the_application_schema(kind: ProgramKind) -> None:
    """A ClusterBpfApplication takes every type (a BpfApplication only the namespaced ones)."""
    text = (SCHEMA_DIR / "clusterbpfapplication.json").read_text()
    for app in kind.app_types:
        assert f'"{app.name}"' in text and f'"{app.member}"' in text


@pytest.mark.parametrize("kind", ALL, ids=IDS)
def test_every_kind_has_a_docs_section(kind: ProgramKind) -> None:
    headings = _headings()
    assert kind.docs_anchor in headings, f"docs/manifests.md has no #{kind.docs_anchor}"
    assert kind.name in headings[kind.docs_anchor]


@pytest.mark.parametrize("kind", ALL, ids=IDS)
def test_every_kind_is_exercised_by_the_contract_tests(kind: ProgramKind) -> None:
    coverage, tests = _coverage()
    named = coverage.get(kind.name)
    assert named, f"tests/kernel/test_contract.py's KIND_COVERAGE does not list {kind.name}"
    for name in named:
        module, _, function = name.rpartition(".")
        assert function in tests[module or "test_contract"], f"{name} is not a contract test"


def test_the_contract_tests_cover_only_registered_kinds() -> None:
    coverage, _ = _coverage()
    assert set(coverage) == set(kinds.kind_names())


def test_lookups_find_each_record() -> None:
    assert {k.prog_type for k in ALL} == set(ProgType)
    for kind in ALL:
        assert kinds.by_kind_name(kind.name) is kind
        assert kinds.by_prog_type(kind.prog_type) is kind
        for cls in kind.point_classes:
            assert kinds.by_point_class(cls) is kind
        for app in kind.app_types:
            assert kinds.by_app_type(app.name) == (kind, app)


@pytest.mark.parametrize("kind", ALL, ids=IDS)
def test_in_place_attributes_are_attributes_of_the_kind(kind: ProgramKind) -> None:
    assert kind.in_place <= set(kind.attributes)
    assert kind.feature is None or kind.feature_words


def test_replacement_rules_by_type() -> None:
    """A TCX priority moves the link (a replacement); an XDP or TC one only reorders a
    dispatcher; what identifies the point always forces one."""
    assert "priority" in kinds.forcing(ProgType.TCX)
    assert "priority" not in kinds.forcing(ProgType.XDP)
    assert "priority" not in kinds.forcing(ProgType.TC)
    assert {"interface", "direction", "netns"} <= kinds.forcing(ProgType.TC)
    assert "xdpmode" not in kinds.forcing(ProgType.XDP)
    assert {"tracepoint", "target", "func_name", "offset"} <= kinds.forcing(ProgType.TRACEPOINT)


@pytest.mark.parametrize("kind", ALL, ids=IDS)
def test_saved_plan_points_round_trip(kind: ProgramKind) -> None:
    for cls in kind.point_classes:
        fields = {
            f: ("x" if t in ("str", "str | None") else 0) for f, t in cls.__annotations__.items()
        }
        point = cls(**fields)
        assert kinds.point_from_json(json.loads(json.dumps(kinds.point_to_json(point)))) == point


def test_adding_a_kind_is_documented() -> None:
    text = (support.REPO / "docs" / "adding-a-program-kind.md").read_text()
    for step in ("schemas/", "reconciler/kinds/", "docs/manifests.md", "KIND_COVERAGE"):
        assert step in text
    assert Path(kinds.__file__).parent.name == "kinds"
