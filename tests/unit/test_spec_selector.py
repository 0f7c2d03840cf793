"""Label selectors, and node selection: which manifests this host loads, and why not the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.spec import HostError, ManifestError, load_desired
from reconciler.spec.selector import LabelSelector
from tests.unit.spec_support import StubHost, problems_of, write_tree, xdp

HOST = {"kubernetes.io/hostname": "web1", "kubernetes.io/arch": "amd64", "zone": "b"}


def selector(match_labels: dict[str, str] | None = None, *expressions: str) -> LabelSelector:
    """``expressions`` like ``"zone In a,b"`` or ``"gpu Exists"``."""
    parsed = []
    for text in expressions:
        key, operator, *values = text.split()
        parsed.append(
            {"key": key, "operator": operator, "values": values[0].split(",")}
            if values
            else {"key": key, "operator": operator}
        )
    return LabelSelector.parse({"matchLabels": match_labels or {}, "matchExpressions": parsed})


@pytest.mark.parametrize(
    ("chosen", "failures"),
    [
        (selector(), []),
        (LabelSelector.parse(None), []),
        (selector({"zone": "b"}), []),
        (selector({"zone": "a"}), ['label zone is "b", not "a"']),
        (selector({"gpu": "true"}), ['label gpu is not set (needs "true")']),
        (selector(None, "kubernetes.io/hostname In web1,web2"), []),
        (
            selector(None, "kubernetes.io/hostname In db1,db2"),
            ['label kubernetes.io/hostname is "web1", not in [db1, db2]'],
        ),
        (selector(None, "rack In r1"), ["label rack is not set (needs one of [r1])"]),
        (selector(None, "zone NotIn a,c"), []),
        (selector(None, "rack NotIn r1"), []),  # an unset label is in no set
        (selector(None, "zone NotIn a,b"), ['label zone is "b", which NotIn [a, b] excludes']),
        (selector(None, "zone Exists"), []),
        (selector(None, "gpu Exists"), ["label gpu is not set (Exists needs it)"]),
        (selector(None, "gpu DoesNotExist"), []),
        (selector(None, "zone DoesNotExist"), ['label zone is "b" (DoesNotExist needs it unset)']),
        (
            selector({"zone": "a"}, "gpu Exists", "zone In b"),
            ['label zone is "b", not "a"', "label gpu is not set (Exists needs it)"],
        ),
    ],
)
def test_requirements_and_why_they_fail(chosen: LabelSelector, failures: list[str]) -> None:
    assert chosen.failures(HOST) == failures
    assert chosen.matches(HOST) is (not failures)


def test_string_form_is_kubernetes() -> None:
    chosen = selector({"app": "web"}, "tier In a,b", "legacy DoesNotExist", "gpu Exists")
    assert str(chosen) == "app=web,tier in (a,b),!legacy,gpu"
    assert str(LabelSelector.parse({})) == "(everything)"
    assert LabelSelector.parse({}).empty and LabelSelector.parse({"matchLabels": {}}).empty


# --- selector syntax, checked when loading ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "{matchExpressions: [{key: zone, operator: In}]}",
            "x.yaml:12: spec.nodeselector.matchExpressions[0].values: required field is missing; "
            "expected a non-empty list of label values (In and NotIn compare the label with them)",
        ),
        (
            "{matchExpressions: [{key: zone, operator: NotIn, values: []}]}",
            "x.yaml:12: spec.nodeselector.matchExpressions[0].values: must not be empty",
        ),
        (
            "{matchExpressions: [{key: zone, operator: Exists, values: [a]}]}",
            "x.yaml:12: spec.nodeselector.matchExpressions[0].values: must be empty (got 1 item); "
            "Exists and DoesNotExist only ask whether the label is set; remove values",
        ),
        (
            "{matchExpressions: [{key: zone, operator: in, values: [a]}]}",
            "x.yaml:12: spec.nodeselector.matchExpressions[0].operator: must be one of: In, NotIn, "
            "Exists, DoesNotExist (got 'in'; did you mean 'In'?)",
        ),
        (
            "{matchExpressions: [{operator: Exists}]}",
            "x.yaml:12: spec.nodeselector.matchExpressions[0].key: required field is missing",
        ),
        (
            "{matchLabels: {'a b': c}}",
            'x.yaml:12: spec.nodeselector.matchLabels["a b"]: invalid key',
        ),
        (
            "{matchLabels: {zone: 'a b'}}",
            "x.yaml:12: spec.nodeselector.matchLabels.zone: must be a",
        ),
        (
            "{matchLabels: {zone: 1}}",
            "x.yaml:12: spec.nodeselector.matchLabels.zone: must be a string",
        ),
        ("{matchlabels: {zone: a}}", "x.yaml:12: spec.nodeselector.matchlabels: unknown field"),
        ("[zone]", "x.yaml:12: spec.nodeselector: must be a mapping"),
    ],
)
def test_selector_syntax(tmp_path: Path, value: str, message: str) -> None:
    problems = problems_of(tmp_path, {"x.yaml": xdp(nodeselector=value)})
    assert problems[0].startswith(message), problems


# --- node selection when expanding ------------------------------------------------------------


def test_manifests_the_host_does_not_match_are_unselected_with_the_reason(tmp_path: Path) -> None:
    files = {
        "a.yaml": xdp(nodeselector="{matchLabels: {kubernetes.io/arch: amd64}}").replace(
            "xdp-counter", "amd64-only"
        ),
        "b.yaml": xdp(
            nodeselector="{matchExpressions: [{key: kubernetes.io/hostname, operator: In, "
            "values: [db1, db2]}, {key: gpu, operator: Exists}]}"
        ).replace("xdp-counter", "databases"),
        "c.yaml": xdp(nodeselector="{}").replace("xdp-counter", "everywhere"),
        "d.yaml": xdp().replace("xdp-counter", "no-selector"),
    }
    state = load_desired(write_tree(tmp_path, files), StubHost(labels_=dict(HOST)))
    assert [a.address.resource for a in state.attachments] == [
        "XdpProgram/amd64-only",
        "XdpProgram/everywhere",
        "XdpProgram/no-selector",
    ]
    assert [(m.resource, reason) for m, reason in state.unselected] == [
        (
            "XdpProgram/databases",
            'label kubernetes.io/hostname is "web1", not in [db1, db2]; label gpu is not set '
            "(Exists needs it)",
        )
    ]
    assert len(state.manifests) == 4


def test_an_unselected_manifest_asks_nothing_else_of_the_host(tmp_path: Path) -> None:
    text = xdp(
        nodeselector="{matchLabels: {role: db}}",
        interfaceselector="{primarynodeinterface: true}",
    )
    host = StubHost()
    state = load_desired(write_tree(tmp_path, {"x.yaml": text}), host)
    assert (state.attachments, host.asked) == ([], [("labels",)])


def test_labels_are_asked_once_and_only_for_selectors(tmp_path: Path) -> None:
    host = StubHost()
    load_desired(write_tree(tmp_path, {"x.yaml": xdp(nodeselector="{}")}), host)
    assert host.asked == []
    text = "---\n".join(
        xdp(nodeselector="{matchLabels: {kubernetes.io/os: linux}}").replace("xdp-counter", n)
        for n in "abc"
    )
    load_desired(write_tree(tmp_path, {"x.yaml": text}), host)
    assert host.asked == [("labels",)]


def test_unreadable_labels_are_one_clear_error(tmp_path: Path) -> None:
    host = StubHost(labels_=HostError("/etc/bpfman/labels.yaml:3: label zone: the value ..."))
    root = write_tree(tmp_path, {"x.yaml": xdp(nodeselector="{matchLabels: {zone: a}}")})
    with pytest.raises(ManifestError) as info:
        load_desired(root, host)
    assert info.value.problems == ["/etc/bpfman/labels.yaml:3: label zone: the value ..."]
