"""Kustomize directories, read the way `kustomize build` reads them (the subset bpfman applies):
resources and bases, images (bytecode images too), name prefixes and suffixes, labels,
annotations, namespace, merge and JSON 6902 patches; other API groups skipped and counted;
everything else a clear error naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.spec import LoadReport, ManifestError, load_desired, load_manifests
from reconciler.spec.kustomize import json_patch, merge, retag
from tests.unit.spec_support import StubHost, write_tree

TP = """
apiVersion: bpfman.io/v1alpha1
kind: TracepointProgram
metadata:
  name: {name}
  labels: {{app: counter}}
spec:
  bpffunctionname: tp_openat
  bytecode: {{path: ../../bytecode/spec_progs.o}}
  names: [syscalls/sys_enter_openat]
"""

APP = """
apiVersion: bpfman.io/v1alpha1
kind: BpfApplication
metadata: {name: app}
spec:
  byteCode:
    image: {url: quay.io/bpfman-bytecode/go-app-counter:latest, imagePullPolicy: Always}
  programs:
    - name: xdp_stats
      type: XDP
      xdp: {links: [{interfaceSelector: {interfaces: [eth0]}, priority: 5}]}
"""

DAEMONSET = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: tools}
spec:
  template:
    spec:
      containers: [{name: agent, image: quay.io/bpfman-bytecode/go-app-counter:latest}]
---
apiVersion: v1
kind: Namespace
metadata: {name: tools}
"""


def tree(tmp_path: Path, files: dict[str, str]) -> Path:
    return write_tree(tmp_path, files)


def loaded(root: Path) -> tuple[dict[str, object], LoadReport]:
    report = LoadReport()
    manifests = load_manifests(root, report=report, source_root=root.parent)
    return {f"{m.kind}/{m.name}": m for m in manifests}, report


def problems(root: Path) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load_manifests(root)
    return info.value.problems


def test_an_overlay_transforms_its_base_and_skips_other_api_groups(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "base/tp.yaml": TP.format(name="counter"),
            "base/extra.yaml": DAEMONSET,
            "base/kustomization.yaml": "resources: [tp.yaml, extra.yaml]\n",
            "overlay/kustomization.yaml": """
                apiVersion: kustomize.config.k8s.io/v1beta1
                kind: Kustomization
                resources: [../base, app.yaml]
                namePrefix: prod-
                nameSuffix: -v2
                namespace: observability
                commonLabels: {team: net}
                labels: [{pairs: {tier: edge}, includeSelectors: false}]
                commonAnnotations: {owner: ops}
                images:
                  - name: quay.io/bpfman-bytecode/go-app-counter
                    newName: registry.internal:5000/bpf/app
                    newTag: v9
                patches:
                  - target: {kind: TracepointProgram, name: counter}
                    patch: |-
                      - op: add
                        path: /spec/names/-
                        value: syscalls/sys_enter_getpid
                  - path: priority.yaml
                  - target: {kind: TracepointProgram, name: nothing-by-this-name}
                    patch: '[{op: remove, path: /spec}]'
                configMapGenerator: [{name: settings, literals: [a=b]}]
            """,
            "overlay/app.yaml": APP,
            "overlay/priority.yaml": """
                apiVersion: bpfman.io/v1alpha1
                kind: BpfApplication
                metadata: {name: app, labels: {patched: "yes"}}
                spec:
                  byteCode: {image: {imagePullPolicy: IfNotPresent}}
            """,
        },
    )
    by, report = loaded(root / "overlay")
    assert sorted(by) == ["BpfApplication/prod-app-v2", "TracepointProgram/prod-counter-v2"]
    tp = by["TracepointProgram/prod-counter-v2"]
    assert tp.spec["names"] == ["syscalls/sys_enter_openat", "syscalls/sys_enter_getpid"]
    assert tp.labels == {"app": "counter", "team": "net", "tier": "edge"}
    assert tp.annotations == {"owner": "ops"}
    assert tp.namespace is None  # cluster-scoped: kustomize's namespace is not given to it
    assert str(tp.origin).startswith("../base/tp.yaml:")  # messages name the base's file
    app = by["BpfApplication/prod-app-v2"]
    assert app.namespace == "observability"
    assert app.spec["byteCode"]["image"] == {
        "url": "registry.internal:5000/bpf/app:v9",
        "imagePullPolicy": "IfNotPresent",
    }
    assert app.labels["patched"] == "yes"
    assert dict(report.skipped) == {"apps/v1 DaemonSet": 1, "v1 Namespace": 1}


def test_the_walk_reads_kustomize_directories_through_them(tmp_path: Path) -> None:
    """Beside plain manifests, a directory with a kustomization is read only through it: a file
    it does not list is not a manifest (kustomize would not render it either)."""
    root = tree(
        tmp_path,
        {
            "plain.yaml": TP.format(name="plain").replace("../../bytecode", "../bytecode"),
            "k/kustomization.yaml": "resources: [tp.yaml]\n",
            "k/tp.yaml": TP.format(name="listed"),
            "k/notes.yaml": "not: a manifest\n",
        },
    )
    by, _ = loaded(root)
    assert sorted(by) == ["TracepointProgram/listed", "TracepointProgram/plain"]
    state = load_desired(root, StubHost())
    assert {a.address.name for a in state.attachments} == {"listed", "plain"}


@pytest.mark.parametrize(
    ("kustomization", "expected"),
    [
        (
            "resources: [tp.yaml]\nreplicas: [{name: x, count: 2}]\n",
            "kustomization.yaml:2: replicas: replicas is a kustomize feature bpfman does not apply",
        ),
        (
            "resources: [https://github.com/bpfman/bpfman/examples/config/base/go-xdp-counter]\n",
            "is a remote resource; bpfman does not fetch them: vendor it",
        ),
        ("resources: [../elsewhere.yaml]\n", "is outside this kustomization's directory"),
        ("resources: [missing.yaml]\n", "missing.yaml: no such file or directory"),
        ("resources: [sub]\n", "sub is a directory without a kustomization.yaml"),
        ("resources: [.]\n", "a cycle: kustomization.yaml -> kustomization.yaml"),
        (
            "resources: [tp.yaml]\npatches: [{target: {kind: TracepointProgram}, "
            "patch: '[{op: replace, path: /spec/nothing/here, value: 1}]'}]\n",
            "cannot apply the patch to TracepointProgram counter",
        ),
        (
            "resources: [tp.yaml]\npatches:\n  - patch: |\n      kind: TracepointProgram\n"
            "      metadata: {name: other}\n",
            "the patch matches no resource (TracepointProgram other)",
        ),
        (
            "resources: [tp.yaml]\npatches: [{patch: '[{op: remove, path: /spec}]'}]\n",
            "a JSON 6902 patch (a list of operations) needs a target",
        ),
        ("resources: [tp.yaml]\nnamePrefix: [a]\n", "namePrefix and nameSuffix must be strings"),
    ],
)
def test_what_bpfman_does_not_apply_is_one_clear_error(
    tmp_path: Path, kustomization: str, expected: str
) -> None:
    root = tree(
        tmp_path,
        {
            "k/kustomization.yaml": kustomization,
            "k/tp.yaml": TP.format(name="counter"),
            "k/sub/notes.txt": "",
            "elsewhere.yaml": TP.format(name="other"),
        },
    )
    found = problems(root / "k")
    assert any(expected in p for p in found), found


def test_a_base_kustomization_may_sit_anywhere_in_the_source(tmp_path: Path) -> None:
    """upstream's overlays name ../../base/...: a directory with its own kustomization may be
    anywhere in the source (the overlay chosen inside it, as --path does), not outside it."""
    root = tree(
        tmp_path,
        {
            "base/tp/kustomization.yaml": "resources: [tp.yaml]\n",
            "base/tp/tp.yaml": TP.format(name="counter").replace("../../", "../../../"),
            "default/tp/kustomization.yaml": "resources: [../../base/tp]\nnameSuffix: -x\n",
        },
    )
    manifests = load_manifests(root / "default" / "tp", source_root=root)
    assert [f"{m.kind}/{m.name}" for m in manifests] == ["TracepointProgram/counter-x"]
    found = problems(root / "default/tp")
    assert any("../../base/tp is outside the source" in p for p in found)
    # The fix is spelled out with this tree's own paths.
    assert any(f"bpfman plan {root.resolve()} --path default/tp " in p for p in found)


def test_json_patch_follows_rfc6902() -> None:
    doc = {"a": {"b": [1, 2]}, "c": "x", "d/e": 1}
    ops = [
        {"op": "add", "path": "/a/b/1", "value": 9},
        {"op": "add", "path": "/a/b/-", "value": 3},
        {"op": "replace", "path": "/c", "value": "y"},
        {"op": "remove", "path": "/d~1e"},
        {"op": "copy", "from": "/c", "path": "/f"},
        {"op": "move", "from": "/f", "path": "/g"},
        {"op": "test", "path": "/g", "value": "y"},
    ]
    assert json_patch(doc, ops) is None
    assert doc == {"a": {"b": [1, 9, 2, 3]}, "c": "y", "g": "y"}
    assert "no such path" in (json_patch(doc, [{"op": "replace", "path": "/z", "value": 1}]) or "")
    assert "failed" in (json_patch(doc, [{"op": "test", "path": "/c", "value": "n"}]) or "")
    assert "unknown op" in (json_patch(doc, [{"op": "frob", "path": "/c"}]) or "")


def test_merge_patches_merge_maps_replace_lists_and_delete_nulls() -> None:
    target = {"a": {"b": 1, "c": 2}, "l": [1, 2], "gone": 1}
    assert merge(target, {"a": {"c": 3}, "l": [9], "gone": None}) == {
        "a": {"b": 1, "c": 3},
        "l": [9],
    }


@pytest.mark.parametrize(
    ("url", "entry", "expected"),
    [
        ("quay.io/a/b:v1", {"name": "quay.io/a/b", "newTag": "v2"}, "quay.io/a/b:v2"),
        ("quay.io/a/b:v1", {"name": "quay.io/a/b", "newName": "r:5000/b"}, "r:5000/b:v1"),
        (
            "quay.io/a/b:v1",
            {"name": "quay.io/a/b", "digest": "sha256:" + "a" * 64},
            "quay.io/a/b@sha256:" + "a" * 64,
        ),
        (
            "registry:5000/a/b",
            {"name": "registry:5000/a/b", "newTag": "v3"},
            "registry:5000/a/b:v3",
        ),
        ("quay.io/a/c:v1", {"name": "quay.io/a/b", "newTag": "v2"}, None),
    ],
)
def test_images_override_as_kustomize_does(url: str, entry: dict, expected: str | None) -> None:
    assert retag(url, entry) == expected


def test_operator_kinds_and_other_groups_text_are_skipped_but_bpfman_text_is_held(
    tmp_path: Path,
) -> None:
    """bpfman-operator's samples kustomization lists its Config and status kinds beside the
    applications, and a ConfigMap's data holds line breaks: neither is a problem; a line break
    in a bpfman resource's field still is."""
    others = """
        apiVersion: bpfman.io/v1alpha1
        kind: Config
        metadata: {name: bpfman-config}
        spec: {configuration: "[database]\\nmax_retries = 30\\n"}
        ---
        apiVersion: bpfman.io/v1alpha1
        kind: ClusterBpfApplicationState
        metadata: {name: state}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: scripts}
        data: {run.sh: "#!/bin/sh\\necho hi\\n"}
    """
    root = tree(
        tmp_path,
        {
            "k/kustomization.yaml": "resources: [tp.yaml, others.yaml]\n",
            "k/tp.yaml": TP.format(name="counter"),
            "k/others.yaml": others,
        },
    )
    by, report = loaded(root / "k")
    assert list(by) == ["TracepointProgram/counter"]
    assert dict(report.skipped) == {
        "bpfman.io/v1alpha1 Config": 1,
        "bpfman.io/v1alpha1 ClusterBpfApplicationState": 1,
        "v1 ConfigMap": 1,
    }
    (root / "k" / "tp.yaml").write_text(
        TP.format(name="counter").replace("name: counter", 'name: "counter\\nx"')
    )
    found = problems(root / "k")
    assert any("metadata.name: " in p and "control character U+000A" in p for p in found), found


@pytest.mark.parametrize(
    ("pattern", "safe"),
    [("go-.*", True), ("app|web", True), ("x{1,3}y", True), ("(a+)+$", False),
     ("([a-z]+-)*end", False), ("(a|aa)*b", False), ("a" * 300, False), ("(", False)],
)  # fmt: skip
def test_target_patterns_that_could_take_exponential_time_are_refused(
    tmp_path: Path, pattern: str, safe: bool
) -> None:
    """A hostile target pattern ((a+)+ against a 253-character name) is refused before it is
    matched, with the field named."""
    kustomization = (
        "resources: [tp.yaml]\npatches:\n"
        f"  - target: {{kind: TracepointProgram, name: '{pattern}'}}\n"
        "    patch: '[{op: add, path: /metadata/labels/x, value: y}]'\n"
    )
    root = tree(
        tmp_path, {"k/kustomization.yaml": kustomization, "k/tp.yaml": TP.format(name="counter")}
    )
    if safe:
        assert load_manifests(root / "k")
    else:
        found = problems(root / "k")
        assert any("patches[0].target.name" in p for p in found), found


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("Config", "Config is bpfman-operator's own configuration"),
        ("BpfApplicationState", "BpfApplicationState is the status bpfman-operator writes"),
        ("ClusterBpfApplicationState", "is the status bpfman-operator writes"),
    ],
)
def test_an_operator_object_outside_a_kustomization_is_one_clear_error(
    tmp_path: Path, kind: str, says: str
) -> None:
    """Not a control-character complaint about the Config's multi-line configuration, nor an
    unknown kind: what the document is and what to do with it."""
    (tmp_path / "obj.yaml").write_text(
        "apiVersion: bpfman.io/v1alpha1\n"
        f"kind: {kind}\n"
        "metadata:\n"
        "  name: x\n"
        "spec:\n"
        "  configuration: |\n"
        "    [database]\n"
        "    max_retries = 30\n"
    )
    with pytest.raises(ManifestError) as e:
        load_manifests(tmp_path, allowed_bytecode_dirs=())
    assert len(e.value.problems) == 1
    problem = str(e.value.problems[0])
    assert problem.startswith("obj.yaml:2: kind: ")
    assert says in problem
    assert "kustomization.yaml" in problem
