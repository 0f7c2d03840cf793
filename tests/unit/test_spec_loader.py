"""Finding manifest files and parsing YAML with a line for every field."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from reconciler.spec import ManifestError, load_manifests
from reconciler.spec.loader import find_manifest_files, format_path, load_file
from tests.unit.spec_support import XDP, problems_of, write_tree, xdp


def test_finds_yaml_files_recursively_sorted_skipping_hidden(tmp_path: Path) -> None:
    root = tmp_path / "m"
    for name in ["b.yaml", "a.yml", "sub/c.yaml", "sub/deeper/d.yaml", "z.txt", ".hidden.yaml"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    (root / ".git").mkdir()
    (root / ".git" / "config.yaml").write_text("")
    (root / ".github/workflows").mkdir(parents=True)
    (root / ".github/workflows/ci.yml").write_text("")

    found = [p.relative_to(root).as_posix() for p in find_manifest_files(root)]

    assert found == ["a.yml", "b.yaml", "sub/c.yaml", "sub/deeper/d.yaml"]


def test_a_single_file_can_be_the_root(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"one.yaml": XDP})
    [manifest] = load_manifests(root / "one.yaml")
    assert manifest.origin.file == "one.yaml"


def test_missing_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such file or directory"):
        load_manifests(tmp_path / "nope")


def test_empty_directory_has_no_manifests(tmp_path: Path) -> None:
    assert load_manifests(tmp_path) == []


def test_multi_document_files_skip_empty_documents(tmp_path: Path) -> None:
    second = xdp().replace("name: xdp-counter", "name: second")
    text = "---\n" + xdp() + "---\n---\n# nothing\n---\n" + second  # xdp() is 11 lines
    root = write_tree(tmp_path, {"all.yaml": text})

    manifests = load_manifests(root)

    assert [(m.name, m.origin.line) for m in manifests] == [("xdp-counter", 2), ("second", 17)]


def test_empty_and_comment_only_files_are_fine(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"empty.yaml": "", "comment.yaml": "# later\n", "x.yaml": XDP})
    assert [m.name for m in load_manifests(root)] == ["xdp-counter"]


def test_every_key_and_item_has_its_line(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"x.yaml": XDP})
    docs, problems = load_file(root / "x.yaml", root)

    assert problems == []
    [doc] = docs
    assert doc.start_line == 1
    assert doc.line_of(("spec", "priority")) == 11
    assert doc.line_of(("spec", "interfaceselector", "interfaces", 0)) == 10
    assert doc.line_of(("spec", "bytecode", "path")) == 8
    # A field that is not there: its nearest enclosing field.
    assert doc.line_of(("spec", "proceedon", 3)) == 5


def test_manifest_keeps_field_lines_for_later_messages(tmp_path: Path) -> None:
    [manifest] = load_manifests(write_tree(tmp_path, {"x.yaml": XDP}))
    assert str(manifest.origin_of("spec.interfaceselector.interfaces[0]")) == "x.yaml:10"
    assert str(manifest.origin_of("spec.proceedon")) == "x.yaml:5"  # a default: spec's line


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    bad = "apiVersion: bpfman.io/v1alpha1\nkind: XdpProgram\nmetadata: {name: x\nspec: [\n"
    assert problems_of(tmp_path, {"bad.yaml": bad}) == [
        "bad.yaml:4: YAML syntax error: did not find expected ',' or '}' "
        "(while parsing a flow mapping started at line 3)"
    ]


def test_tabs_get_a_hint(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, {"tab.yaml": "spec:\n\tpriority: 1\n"})
    assert problem.startswith("tab.yaml:2: YAML syntax error:")
    assert problem.endswith("YAML does not allow tabs for indentation, use spaces")


def test_non_mapping_documents_are_errors(tmp_path: Path) -> None:
    files = {"list.yaml": XDP + "---\n- eth0\n- eth1\n", "scalar.yaml": "just text\n"}
    assert problems_of(tmp_path, files) == [
        "list.yaml:13: document is a list, not a mapping; each YAML document must be one "
        "manifest with apiVersion, kind, metadata and spec",
        "scalar.yaml:1: document is a string, not a mapping; each YAML document must be one "
        "manifest with apiVersion, kind, metadata and spec",
    ]


def test_duplicate_keys_are_errors_not_silently_collapsed(tmp_path: Path) -> None:
    text = xdp() + "  priority: 56\n"
    assert problems_of(tmp_path, {"dup.yaml": text}) == [
        "dup.yaml:12: spec.priority: duplicate key 'priority' (first set at line 11); "
        "YAML would silently keep only the last value, so remove one of them"
    ]


def test_merge_keys_and_anchors_work_and_keep_lines(tmp_path: Path) -> None:
    text = """
    apiVersion: bpfman.io/v1alpha1
    kind: XdpProgram
    metadata: {name: merged}
    spec:
      <<: &common
        bpffunctionname: xdp_stats
        bytecode: {path: ../bytecode/spec_progs.o}
        interfaceselector: {interfaces: [eth0]}
        priority: 1
      priority: 2000
    """
    # The mapping's own priority wins over the merged one, and is the line reported.
    assert problems_of(tmp_path, {"m.yaml": text}) == [
        "m.yaml:10: spec.priority: must be <= 1000 (got 2000)"
    ]


def test_not_utf8_is_an_error_with_line(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {})
    root.mkdir()
    (root / "latin1.yaml").write_bytes(b"apiVersion: v1\nkind: caf\xe9\n")
    with pytest.raises(ManifestError) as info:
        load_manifests(root)
    assert info.value.problems == [
        "latin1.yaml:2: not UTF-8 text (invalid continuation byte at byte 24)"
    ]


def test_problems_from_all_files_are_reported_together(tmp_path: Path) -> None:
    files = {
        "a.yaml": xdp(priority="-1"),
        "b/b.yaml": "a: [\n",
        "c.yaml": xdp(direction="ingress").replace("xdp-counter", "other"),
    }
    problems = problems_of(tmp_path, files)
    assert [p.split(":")[0] for p in problems] == ["a.yaml", "b/b.yaml", "c.yaml"]


def test_field_paths_quote_unusual_keys() -> None:
    assert format_path(("spec", "names", 0)) == "spec.names[0]"
    assert format_path(("metadata", "labels", "app.kubernetes.io/name")) == (
        'metadata.labels["app.kubernetes.io/name"]'
    )


def test_mangled_manifests_give_problems_never_tracebacks(tmp_path: Path) -> None:
    """Random edits of a valid file: every outcome is a manifest or file:line problems."""
    rng = random.Random(7)
    pieces = [*":-[]{},'\"&*!|>#\n \t0x1aZ.%@`?<", "<<: ", "---\n", "- ", "null", "~", "true"]
    root = write_tree(tmp_path, {"x.yaml": XDP})
    original = list((root / "x.yaml").read_text())
    for _ in range(300):
        text = original.copy()
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(text))
            op = rng.random()
            if op < 0.4:
                text[at] = rng.choice(pieces)
            elif op < 0.7:
                text.insert(at, rng.choice(pieces))
            else:
                del text[at]
        (root / "x.yaml").write_text("".join(text))
        try:
            load_manifests(root)
        except ManifestError as e:
            assert e.problems
            for problem in e.problems:
                assert re.match(r"^x\.yaml:\d+: ", problem), problem
