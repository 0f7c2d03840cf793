"""Map sharing: mapownerselector / mapOwnerSelector select the manifest whose maps are used."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.address import Address
from reconciler.spec import ManifestError, expand, load_desired, load_manifests
from tests.unit.spec_support import StubHost, problems_of, write_tree, xdp

TP = """
apiVersion: bpfman.io/v1alpha1
kind: TracepointProgram
metadata:
  name: {name}
  labels: {labels}
spec:
  bpffunctionname: tp_openat
  bytecode: {{path: ../bytecode/spec_progs.o}}
  names: [syscalls/sys_enter_openat]
"""


def tp(name: str, labels: str = "{}", owner: str | None = None) -> str:
    text = TP.format(name=name, labels=labels)
    return text + (f"  mapownerselector: {owner}\n" if owner else "")


APP = """
apiVersion: bpfman.io/v1alpha1
kind: ClusterBpfApplication
metadata: {{name: {name}, labels: {labels}}}
spec:
  byteCode: {{path: ../bytecode/spec_progs.o}}
  programs:
    - name: tp_openat
      type: TracePoint
      tracepoint: {{links: [{{name: syscalls/sys_enter_openat}}, {{name: sched/sched_switch}}]}}
"""


def test_a_program_kind_uses_the_maps_of_its_owner(tmp_path: Path) -> None:
    files = {
        "owner.yaml": tp("counter", "{role: maps}"),
        "user.yaml": tp("reader", owner="{matchLabels: {role: maps}}"),
        "alone.yaml": tp("alone"),
    }
    root = write_tree(tmp_path, files)
    manifests = {m.name: m for m in load_manifests(root)}
    assert (manifests["reader"].map_owner, manifests["counter"].map_owner) == (
        "TracepointProgram/counter",
        None,
    )
    by = {a.address.name: a for a in load_desired(root, StubHost()).attachments}
    shared = "TracepointProgram/counter/maps"
    owner_address = Address("TracepointProgram", "counter", "syscalls/sys_enter_openat")
    assert (by["counter"].program.maps_dir, by["counter"].depends_on) == (shared, ())
    assert (by["reader"].program.maps_dir, by["reader"].depends_on) == (shared, (owner_address,))
    assert by["reader"].attributes["map_owner"] == "TracepointProgram/counter"
    assert (by["alone"].program.maps_dir, by["alone"].attributes["map_owner"]) == (None, None)


def test_the_owner_maps_directory_is_beside_its_attachment(tmp_path: Path) -> None:
    owner = xdp(interfaceselector="{primarynodeinterface: true}").replace(
        "name: xdp-counter", "name: xdp-counter\n  labels: {role: maps}"
    )
    files = {"o.yaml": owner, "u.yaml": tp("reader", owner="{matchLabels: {role: maps}}")}
    state = load_desired(write_tree(tmp_path, files), StubHost(primary="ens5"))
    assert [a.program.maps_dir for a in state.attachments] == ["XdpProgram/xdp-counter/maps"] * 2


def test_an_application_owner_shares_its_maps_directory(tmp_path: Path) -> None:
    files = {
        "app.yaml": APP.format(name="observer", labels="{app: observer}"),
        "user.yaml": tp(
            "reader", owner="{matchExpressions: [{key: app, operator: In, values: [observer]}]}"
        ),
    }
    state = load_desired(write_tree(tmp_path, files), StubHost())
    assert {a.program.maps_dir for a in state.attachments} == {
        "ClusterBpfApplication/observer/maps"
    }
    reader = next(a for a in state.attachments if a.address.name == "reader")
    assert reader.depends_on == (
        Address("ClusterBpfApplication", "observer", "tp_openat:syscalls/sys_enter_openat"),
        Address("ClusterBpfApplication", "observer", "tp_openat:sched/sched_switch"),
    )


def test_an_application_can_use_another_manifests_maps(tmp_path: Path) -> None:
    app = APP.format(name="observer", labels="{}").replace(
        "  programs:", "  mapOwnerSelector: {matchLabels: {role: maps}}\n  programs:"
    )
    files = {"app.yaml": app, "owner.yaml": tp("counter", "{role: maps}")}
    state = load_desired(write_tree(tmp_path, files), StubHost())
    shared = "TracepointProgram/counter/maps"
    assert {a.program.maps_dir for a in state.attachments} == {shared}
    assert {
        a.attributes["map_owner"]
        for a in state.attachments
        if a.address.kind != "TracepointProgram"
    } == {"TracepointProgram/counter"}


def test_owners_of_owners_share_one_directory(tmp_path: Path) -> None:
    files = {
        "a.yaml": tp("a", "{tier: a}", owner="{matchLabels: {tier: b}}"),
        "b.yaml": tp("b", "{tier: b}", owner="{matchLabels: {tier: c}}"),
        "c.yaml": tp("c", "{tier: c}"),
    }
    by = {
        a.address.name: a for a in load_desired(write_tree(tmp_path, files), StubHost()).attachments
    }
    shared = "TracepointProgram/c/maps"
    assert {a.program.maps_dir for a in by.values()} == {shared}
    assert by["a"].depends_on == (by["b"].address,)
    assert by["b"].depends_on == (by["c"].address,)


def test_an_empty_selector_selects_no_owner(tmp_path: Path) -> None:
    [m] = load_manifests(write_tree(tmp_path, {"a.yaml": tp("a", owner="{}")}))
    assert m.map_owner is None


@pytest.mark.parametrize(
    ("files", "messages"),
    [
        (
            {"a.yaml": tp("a", owner="{matchLabels: {role: maps}}")},
            [
                "a.yaml:10: spec.mapownerselector: selects no manifest: no manifest's "
                "metadata.labels match role=maps; the map owner must be one of the manifests, "
                "labelled to match"
            ],
        ),
        (
            {
                "a.yaml": tp("a", owner="{matchExpressions: [{key: role, operator: Exists}]}"),
                "b.yaml": tp("b", "{role: maps}"),
                "c.yaml": tp("c", "{role: other}"),
            },
            [
                "a.yaml:10: spec.mapownerselector: selects 2 manifests: TracepointProgram/b "
                "(b.yaml:1), TracepointProgram/c (c.yaml:1); it must select exactly one map owner, "
                "so narrow it to a label only the owner has"
            ],
        ),
        (
            {"a.yaml": tp("a", "{role: maps}", owner="{matchLabels: {role: maps}}")},
            [
                "a.yaml:10: spec.mapownerselector: selects this manifest itself (its labels match "
                "role=maps); a manifest cannot share maps with itself: select the owner by a label "
                "this manifest does not have"
            ],
        ),
        (
            {
                "a.yaml": tp("a", owner="{matchLabels: {role: maps}}"),
                "x.yaml": xdp()
                .replace("name: xdp-counter", "name: x\n  labels: {role: maps}")
                .replace("[eth0]", "[eth0, eth1]"),
            },
            [
                "a.yaml:10: spec.mapownerselector: map owner XdpProgram/x has 2 attachments; a "
                "program kind shares the maps of exactly one attachment, so choose one: select a "
                "manifest with a single attach point, or share through an application "
                "(BpfApplication or ClusterBpfApplication), whose programs all use one set of maps"
            ],
        ),
        (
            {
                "a.yaml": tp("a", "{tier: a}", owner="{matchLabels: {tier: b}}"),
                "b.yaml": tp("b", "{tier: b}", owner="{matchLabels: {tier: a}}"),
            },
            [
                "a.yaml:10: spec.mapownerselector: map owners form a cycle: TracepointProgram/a -> "
                "TracepointProgram/b -> TracepointProgram/a; one of them must own its maps, so "
                "remove its map owner selector",
                "b.yaml:10: spec.mapownerselector: map owners form a cycle: TracepointProgram/a -> "
                "TracepointProgram/b -> TracepointProgram/a; one of them must own its maps, so "
                "remove its map owner selector",
            ],
        ),
        (
            # The owner has a problem of its own: that is the only thing reported.
            {
                "a.yaml": tp("a", owner="{matchLabels: {role: maps}}"),
                "b.yaml": tp("b", "{role: maps}").replace("tp_openat", "tp_nope"),
            },
            [
                "b.yaml:7: spec.bpffunctionname: function 'tp_nope' is not in "
                "../bytecode/spec_progs.o (did you mean 'tp_openat'?); functions there that a "
                "TracepointProgram can use: tp_openat, tp_sched_switch"
            ],
        ),
    ],
)
def test_selector_problems(tmp_path: Path, files: dict[str, str], messages: list[str]) -> None:
    assert problems_of(tmp_path, files) == messages


def test_an_owner_this_host_does_not_select(tmp_path: Path) -> None:
    owner = tp("counter", "{role: maps}") + "  nodeselector: {matchLabels: {role: db}}\n"
    files = {"o.yaml": owner, "u.yaml": tp("reader", owner="{matchLabels: {role: maps}}")}
    with pytest.raises(ManifestError) as info:
        load_desired(write_tree(tmp_path, files), StubHost())
    assert info.value.problems == [
        "u.yaml:10: spec.mapownerselector: map owner TracepointProgram/counter is not selected on "
        'this host (label role is not set (needs "db")), so there are no maps to share; give '
        "this manifest the same node selector as its owner"
    ]


def test_expanding_without_the_owner(tmp_path: Path) -> None:
    files = {
        "o.yaml": tp("counter", "{role: maps}"),
        "u.yaml": tp("reader", owner="{matchLabels: {role: maps}}"),
    }
    root = write_tree(tmp_path, files)
    users = [m for m in load_manifests(root) if m.name == "reader"]
    with pytest.raises(ManifestError) as info:
        expand(users, root, StubHost())
    assert info.value.problems == [
        "u.yaml:10: spec.mapownerselector: map owner TracepointProgram/counter is not among the "
        "manifests being expanded"
    ]


def test_owned_by_program_selects_the_manifest_of_that_name_as_the_operator_labels_it(
    tmp_path: Path,
) -> None:
    """bpfman-operator labels what it makes for a manifest bpfman.io/ownedByProgram: NAME, and
    upstream's map-sharing examples select owners by it: a host does the same."""
    files = {
        "owner.yaml": tp("go-xdp-counter-example"),
        "user.yaml": tp(
            "sharing", owner="{matchLabels: {bpfman.io/ownedByProgram: go-xdp-counter-example}}"
        ),
    }
    manifests = {m.name: m for m in load_manifests(write_tree(tmp_path, files))}
    assert manifests["sharing"].map_owner == "TracepointProgram/go-xdp-counter-example"
    # A manifest that sets the label itself is taken at its word.
    files["owner.yaml"] = tp("go-xdp-counter-example", "{bpfman.io/ownedByProgram: other}")
    (problem,) = problems_of(tmp_path, files)
    assert "selects no manifest" in problem


def test_an_owner_left_out_by_path_is_named_as_the_likely_cause(tmp_path: Path) -> None:
    """Upstream keeps an owner and the example sharing its maps in sibling directories: read
    through --path the sharer alone, the answer says --path left the rest unread."""
    root = write_tree(
        tmp_path,
        {
            "owner/a.yaml": tp("counter", "{role: maps}"),
            "sharer/b.yaml": tp("reader", owner="{matchLabels: {role: maps}}"),
        },
    )
    # bytecode is ../bytecode from the manifests root: one more level from a subdirectory
    for sub in ("owner/a.yaml", "sharer/b.yaml"):
        path = root / sub
        path.write_text(path.read_text().replace("../bytecode", "../../bytecode"))
    load_manifests(root)  # the whole source: the owner is found
    with pytest.raises(ManifestError) as e:
        load_manifests(root / "sharer", source_root=tmp_path)
    [problem] = e.value.problems
    assert "selects no manifest" in problem
    assert problem.endswith(
        "only the manifests under --path manifests/sharer are read, so an owner elsewhere in the "
        "source is not seen: give a --path that holds both"
    )
    with pytest.raises(ManifestError) as e:
        load_manifests(root / "sharer")  # no --path: nothing more to say
    assert "--path" not in e.value.problems[0]
