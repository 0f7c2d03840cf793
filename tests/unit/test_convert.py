"""``bpfman convert``: old and exported manifests rewritten into the current form, each result
checked by the project's own validation."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.convert import ConvertError, convert_document, convert_file, run
from reconciler.errors import UserError
from reconciler.spec import ManifestError, load_manifests
from reconciler.spec.fastcheck import check_valid
from reconciler.spec.schema import _fast, _validator
from tests.unit.spec_support import write_tree

BYTECODE = "../bytecode/spec_progs.o"

V05_APP = f"""
apiVersion: bpfman.io/v1alpha1
kind: BpfApplication
metadata:
  labels: {{app.kubernetes.io/name: bpfapplication}}
  name: app-counter
spec:
  nodeselector: {{}}
  bytecode:
    path: {BYTECODE}
  globaldata:
    GLOBAL_u8: [1]
  programs:
    - type: Kprobe
      kprobe:
        bpffunctionname: kprobe_open
        func_name: do_sys_openat2
        offset: 0
        retprobe: false
    - type: Kprobe
      kprobe:
        bpffunctionname: kretprobe_open
        func_name: do_sys_openat2
        retprobe: true
    - type: Kretprobe
      kretprobe:
        bpffunctionname: kretprobe_open
        func_name: do_unlinkat
    - type: Tracepoint
      tracepoint:
        bpffunctionname: tp_openat
        names: [syscalls/sys_enter_openat, syscalls/sys_enter_open]
    - type: TC
      tc:
        bpffunctionname: tc_count
        interfaceselector: {{primarynodeinterface: true}}
        priority: 55
        direction: ingress
        proceedon: [pipe, dispatcher_return]
    - type: TCX
      tcx:
        bpffunctionname: tcx_ingress
        interfaceselector: {{interfaces: [eth0]}}
        priority: 500
        direction: egress
    - type: Uprobe
      uprobe:
        bpffunctionname: uprobe_malloc
        func_name: malloc
        target: libc
        pid: 42
    - type: Uretprobe
      uretprobe:
        bpffunctionname: uretprobe_malloc
        func_name: malloc
        target: libc
        containers: {{pid: 1}}
    - type: XDP
      xdp:
        bpffunctionname: xdp_stats
        interfaceselector: {{primarynodeinterface: true}}
        priority: 55
        proceedon: [pass, redirect]
    - type: Fentry
      fentry:
        bpffunctionname: fentry_unlink
        func_name: do_unlinkat
    - type: Fexit
      fexit:
        bpffunctionname: fexit_unlink
        func_name: do_unlinkat
"""


def parse(text: str) -> Any:
    return yaml.safe_load(textwrap.dedent(text))


def valid(tmp_path: Path, documents: list[Any]) -> None:
    """The documents pass load_manifests (schema, semantics, the test object's functions)."""
    text = yaml.safe_dump_all(documents, sort_keys=False)
    load_manifests(write_tree(tmp_path, {"converted.yaml": text}))


def converted_program(program: dict[str, Any]) -> dict[str, Any]:
    """The current program one v0.5.x program becomes."""
    doc = parse(V05_APP)
    doc["spec"]["programs"] = [program]
    [out] = convert_document(doc)
    [result] = out["spec"]["programs"]
    return result


def test_a_v05_application_becomes_a_valid_cluster_application(tmp_path: Path) -> None:
    [out] = convert_document(parse(V05_APP))
    assert out["kind"] == "ClusterBpfApplication"
    assert list(out["spec"]) == ["nodeSelector", "byteCode", "globalData", "programs"]
    assert out["spec"]["byteCode"] == {"path": BYTECODE}
    assert [(p["name"], p["type"]) for p in out["spec"]["programs"]] == [
        ("kprobe_open", "KProbe"),
        ("kretprobe_open", "KRetProbe"),
        ("kretprobe_open", "KRetProbe"),
        ("tp_openat", "TracePoint"),
        ("tc_count", "TC"),
        ("tcx_ingress", "TCX"),
        ("uprobe_malloc", "UProbe"),
        ("uretprobe_malloc", "URetProbe"),
        ("xdp_stats", "XDP"),
        ("fentry_unlink", "FEntry"),
        ("fexit_unlink", "FExit"),
    ]
    out["spec"].pop("globalData")  # the test object has no GLOBAL_u8
    # Program names are unique within an application: keep one of each.
    seen: set[str] = set()
    out["spec"]["programs"] = [
        p for p in out["spec"]["programs"] if not (p["name"] in seen or seen.add(p["name"]))
    ]
    valid(tmp_path, [out])


@pytest.mark.parametrize(
    ("program", "expected"),
    [
        (
            {"type": "Kprobe", "kprobe": {"bpffunctionname": "f", "func_name": "g", "offset": 8}},
            {"name": "f", "type": "KProbe", "kprobe": {"links": [{"function": "g", "offset": 8}]}},
        ),
        (
            {
                "type": "Kprobe",
                "kprobe": {"bpffunctionname": "f", "func_name": "g", "retprobe": True},
            },
            {"name": "f", "type": "KRetProbe", "kretprobe": {"links": [{"function": "g"}]}},
        ),
        (
            {"type": "Kretprobe", "kretprobe": {"bpffunctionname": "f", "func_name": "g"}},
            {"name": "f", "type": "KRetProbe", "kretprobe": {"links": [{"function": "g"}]}},
        ),
        (
            {"type": "Tracepoint", "tracepoint": {"bpffunctionname": "f", "names": ["a/b", "c/d"]}},
            {
                "name": "f",
                "type": "TracePoint",
                "tracepoint": {"links": [{"name": "a/b"}, {"name": "c/d"}]},
            },
        ),
        (
            {
                "type": "TC",
                "tc": {
                    "bpffunctionname": "f",
                    "interfaceselector": {"interfaces": ["eth0"]},
                    "priority": 5,
                    "direction": "egress",
                    "proceedon": ["ok", "dispatcher_return"],
                },
            },
            {
                "name": "f",
                "type": "TC",
                "tc": {
                    "links": [
                        {
                            "interfaceSelector": {"interfaces": ["eth0"]},
                            "direction": "Egress",
                            "priority": 5,
                            "proceedOn": ["OK", "DispatcherReturn"],
                        }
                    ]
                },
            },
        ),
        (
            {
                "type": "TCX",
                "tcx": {
                    "bpffunctionname": "f",
                    "interfaceselector": {"primarynodeinterface": True},
                    "priority": 500,
                    "direction": "ingress",
                },
            },
            {
                "name": "f",
                "type": "TCX",
                "tcx": {
                    "links": [
                        {
                            "interfaceSelector": {"primaryNodeInterface": True},
                            "direction": "Ingress",
                            "priority": 500,
                        }
                    ]
                },
            },
        ),
        (
            {
                "type": "XDP",
                "xdp": {
                    "bpffunctionname": "f",
                    "interfaceselector": {"primarynodeinterface": True},
                    "priority": 55,
                    "proceedon": ["pass", "tx"],
                },
            },
            {
                "name": "f",
                "type": "XDP",
                "xdp": {
                    "links": [
                        {
                            "interfaceSelector": {"primaryNodeInterface": True},
                            "priority": 55,
                            "proceedOn": ["Pass", "TX"],
                        }
                    ]
                },
            },
        ),
        (
            {
                "type": "Uprobe",
                "uprobe": {
                    "bpffunctionname": "f",
                    "func_name": "main.getCount",
                    "target": "/go-target",
                    "retprobe": False,
                    "containers": {
                        "namespace": "go-target",
                        "pods": {},
                        "containernames": ["go-target"],
                    },
                },
            },
            {
                "name": "f",
                "type": "UProbe",
                "uprobe": {
                    "links": [
                        {
                            "target": "/go-target",
                            "function": "main.getCount",
                            "containers": {
                                "namespace": "go-target",
                                "pods": {},
                                "containerNames": ["go-target"],
                            },
                        }
                    ]
                },
            },
        ),
        (
            {
                "type": "Uprobe",
                "uprobe": {
                    "bpffunctionname": "f",
                    "target": "libc",
                    "offset": 64,
                    "retprobe": True,
                },
            },
            {
                "name": "f",
                "type": "URetProbe",
                "uretprobe": {"links": [{"target": "libc", "offset": 64}]},
            },
        ),
        (
            {"type": "Fentry", "fentry": {"bpffunctionname": "f", "func_name": "g"}},
            {
                "name": "f",
                "type": "FEntry",
                "fentry": {"function": "g", "links": [{"mode": "Attach"}]},
            },
        ),
        (
            {"type": "Fexit", "fexit": {"bpffunctionname": "f", "func_name": "g"}},
            {
                "name": "f",
                "type": "FExit",
                "fexit": {"function": "g", "links": [{"mode": "Attach"}]},
            },
        ),
    ],
    ids=[
        "kprobe",
        "kprobe-retprobe",
        "kretprobe",
        "tracepoint",
        "tc",
        "tcx",
        "xdp",
        "uprobe",
        "uprobe-retprobe",
        "fentry",
        "fexit",
    ],
)
def test_each_v05_program_type(program: dict[str, Any], expected: dict[str, Any]) -> None:
    assert converted_program(program) == expected


def test_image_bytecode_and_map_owner_are_camel_cased() -> None:
    doc = parse(V05_APP)
    doc["spec"]["bytecode"] = {
        "image": {
            "url": "quay.io/x:1",
            "imagepullpolicy": "Always",
            "imagepullsecret": {"name": "s"},
        }
    }
    doc["spec"]["programs"] = doc["spec"]["programs"][:1]
    doc["spec"]["programs"][0]["kprobe"]["mapownerselector"] = {"matchLabels": {"a": "b"}}
    [out] = convert_document(doc)
    assert out["spec"]["byteCode"] == {
        "image": {
            "url": "quay.io/x:1",
            "imagePullPolicy": "Always",
            "imagePullSecret": {"name": "s"},
        }
    }
    assert list(out["spec"]) == [
        "nodeSelector",
        "byteCode",
        "globalData",
        "mapOwnerSelector",
        "programs",
    ]
    assert out["spec"]["mapOwnerSelector"] == {"matchLabels": {"a": "b"}}


def test_a_kubectl_export_is_cleaned_of_server_fields(tmp_path: Path) -> None:
    exported = parse(f"""
        apiVersion: bpfman.io/v1alpha1
        kind: XdpProgram
        metadata:
          annotations:
            kubectl.kubernetes.io/last-applied-configuration: |
              {{"apiVersion":"bpfman.io/v1alpha1"}}
          creationTimestamp: "2024-05-01T10:00:00Z"
          finalizers: [bpfman.io.operator/finalizer]
          generation: 2
          managedFields: [{{manager: kubectl, operation: Update}}]
          name: xdp-counter
          resourceVersion: "4242"
          uid: 0b3c2c9e-0000-4000-8000-000000000000
          selfLink: /apis/bpfman.io/v1alpha1/xdpprograms/xdp-counter
          ownerReferences: [{{apiVersion: v1, kind: Node, name: n, uid: u}}]
        spec:
          bpffunctionname: xdp_stats
          bytecode: {{path: {BYTECODE}}}
          interfaceselector: {{interfaces: [eth0]}}
          priority: 55
        status:
          conditions: [{{type: Success}}]
    """)
    [out] = convert_document(exported)
    assert out == {
        "apiVersion": "bpfman.io/v1alpha1",
        "kind": "XdpProgram",
        "metadata": {"name": "xdp-counter"},
        "spec": exported["spec"],
    }
    valid(tmp_path, [out])


def test_other_annotations_survive_the_cleaning() -> None:
    doc = parse("""
        apiVersion: bpfman.io/v1alpha1
        kind: XdpProgram
        metadata:
          name: x
          annotations: {team: net, kubectl.kubernetes.io/last-applied-configuration: "{}"}
        spec: {}
    """)
    [out] = convert_document(doc)
    assert out["metadata"] == {"name": "x", "annotations": {"team": "net"}}


def test_a_kubectl_list_becomes_its_items(tmp_path: Path) -> None:
    listed = parse(f"""
        apiVersion: v1
        kind: List
        metadata: {{resourceVersion: ""}}
        items:
          - apiVersion: bpfman.io/v1alpha1
            kind: TracepointProgram
            metadata: {{name: tp, uid: abc, resourceVersion: "1"}}
            spec:
              bpffunctionname: tp_openat
              bytecode: {{path: {BYTECODE}}}
              names: [syscalls/sys_enter_openat]
            status: {{conditions: []}}
          - apiVersion: bpfman.io/v1alpha1
            kind: XdpProgram
            metadata: {{name: xdp, generation: 1}}
            spec:
              bpffunctionname: xdp_stats
              bytecode: {{path: {BYTECODE}}}
              interfaceselector: {{interfaces: [eth0]}}
              priority: 5
    """)
    out = convert_document(listed)
    assert [(d["kind"], d["metadata"]) for d in out] == [
        ("TracepointProgram", {"name": "tp"}),
        ("XdpProgram", {"name": "xdp"}),
    ]
    valid(tmp_path, out)


LEGACY = {
    "XdpProgram": (
        "interfaceselector: {interfaces: [eth0]}\npriority: 55\nproceedon: [pass]\n"
        "xdpmode: generic",
        "xdp_stats",
        (
            "XDP",
            "xdp",
            {
                "links": [
                    {
                        "interfaceSelector": {"interfaces": ["eth0"]},
                        "xdpMode": "generic",
                        "priority": 55,
                        "proceedOn": ["Pass"],
                    }
                ]
            },
        ),
    ),
    "TcProgram": (
        "interfaceselector: {interfaces: [eth0]}\npriority: 5\ndirection: ingress",
        "tc_count",
        (
            "TC",
            "tc",
            {
                "links": [
                    {
                        "interfaceSelector": {"interfaces": ["eth0"]},
                        "direction": "Ingress",
                        "priority": 5,
                    }
                ]
            },
        ),
    ),
    "TcxProgram": (
        "interfaceselector: {interfaces: [eth0]}\npriority: 5\ndirection: egress\n"
        "netns: /run/netns/blue",
        "tcx_ingress",
        (
            "TCX",
            "tcx",
            {
                "links": [
                    {
                        "interfaceSelector": {"interfaces": ["eth0"]},
                        "netnsPath": "/run/netns/blue",
                        "direction": "Egress",
                        "priority": 5,
                    }
                ]
            },
        ),
    ),
    "TracepointProgram": (
        "names: [syscalls/sys_enter_openat]",
        "tp_openat",
        ("TracePoint", "tracepoint", {"links": [{"name": "syscalls/sys_enter_openat"}]}),
    ),
    "KprobeProgram": (
        "func_name: do_sys_openat2\noffset: 0",
        "kprobe_open",
        ("KProbe", "kprobe", {"links": [{"function": "do_sys_openat2", "offset": 0}]}),
    ),
    "UprobeProgram": (
        "target: libc\nfunc_name: malloc\nretprobe: true",
        "uretprobe_malloc",
        ("URetProbe", "uretprobe", {"links": [{"target": "libc", "function": "malloc"}]}),
    ),
    "FentryProgram": (
        "func_name: do_unlinkat",
        "fentry_unlink",
        ("FEntry", "fentry", {"function": "do_unlinkat", "links": [{"mode": "Attach"}]}),
    ),
    "FexitProgram": (
        "func_name: do_unlinkat",
        "fexit_unlink",
        ("FExit", "fexit", {"function": "do_unlinkat", "links": [{"mode": "Attach"}]}),
    ),
    "CgroupSkbProgram": (
        "cgroup: /sys/fs/cgroup/app\ndirection: egress",
        "cgroup_egress",
        (
            "CgroupSkb",
            "cgroupSkb",
            {"links": [{"cgroup": "/sys/fs/cgroup/app", "direction": "Egress"}]},
        ),
    ),
    "CgroupSockAddrProgram": (
        "cgroup: /sys/fs/cgroup/app\nattachtype: connect4",
        "cgroup_connect4",
        (
            "CgroupSockAddr",
            "cgroupSockAddr",
            {"links": [{"cgroup": "/sys/fs/cgroup/app", "attachType": "connect4"}]},
        ),
    ),
}


def legacy(kind: str) -> dict[str, Any]:
    fields, function, _ = LEGACY[kind]
    doc = {
        "apiVersion": "bpfman.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "prog", "labels": {"app": "x"}},
        "spec": {"bpffunctionname": function, "bytecode": {"path": BYTECODE}, "nodeselector": {}},
    }
    doc["spec"].update(yaml.safe_load(fields))
    return doc


@pytest.mark.parametrize("kind", sorted(LEGACY))
def test_to_application_turns_each_legacy_kind_into_a_cluster_application(
    kind: str, tmp_path: Path
) -> None:
    doc = legacy(kind)
    assert convert_document(doc) == [doc]  # only when asked
    [out] = convert_document(doc, to_application=True)
    app_type, member, body = LEGACY[kind][2]
    assert out == {
        "apiVersion": "bpfman.io/v1alpha1",
        "kind": "ClusterBpfApplication",
        "metadata": {"name": "prog", "labels": {"app": "x"}},
        "spec": {
            "nodeSelector": {},
            "byteCode": {"path": BYTECODE},
            "programs": [{"name": LEGACY[kind][1], "type": app_type, member: body}],
        },
    }
    if not kind.startswith("Cgroup"):  # cgroup links need the host's cgroup directory
        valid(tmp_path, [out])


CURRENT = f"""
apiVersion: bpfman.io/v1alpha1
kind: ClusterBpfApplication
metadata: {{name: app}}
spec:
  byteCode: {{path: {BYTECODE}}}
  programs:
    - name: xdp_stats
      type: XDP
      xdp:
        links: [{{interfaceSelector: {{interfaces: [eth0]}}}}]
"""


def test_current_manifests_are_left_as_they_are(tmp_path: Path) -> None:
    doc = parse(CURRENT)
    assert convert_document(doc) == [doc]
    assert convert_document(doc, to_application=True) == [doc]
    path = tmp_path / "app.yaml"
    path.write_text(CURRENT)
    assert convert_file(path, "app.yaml").new is None
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}}
    assert convert_document(other) == [other]


def test_a_v05_program_without_a_current_equivalent_is_an_error_naming_it(
    tmp_path: Path,
) -> None:
    doc = parse(V05_APP)
    doc["spec"]["programs"][1]["kprobe"]["attachtype"] = "x"
    with pytest.raises(ConvertError) as info:
        convert_document(doc)
    assert info.value.path == ("spec", "programs", 1, "kprobe", "attachtype")
    assert "'attachtype'" in info.value.message and "no equivalent" in info.value.message

    doc = parse(V05_APP)
    doc["spec"]["programs"][0] = {"type": "Kfunc", "kfunc": {"bpffunctionname": "f"}}
    with pytest.raises(ConvertError, match="type 'Kfunc' has no current equivalent"):
        convert_document(doc)


def test_an_unconvertible_file_names_its_line_and_nothing_is_written(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(textwrap.dedent(V05_APP))
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        textwrap.dedent(V05_APP).replace("retprobe: true", "retprobe: true\n        offset: 4")
    )
    with pytest.raises(UserError) as info:
        run([str(good), str(bad)], to_application=False, write=True)
    line = textwrap.dedent(V05_APP).splitlines().index("        retprobe: true") + 2
    assert str(info.value) == (
        f"{bad}:{line}: spec.programs[1].kprobe.offset: a kretprobe has no offset; remove it; "
        "nothing was written"
    )
    assert good.read_text() == textwrap.dedent(V05_APP)


def test_the_converted_file_is_readable_yaml_that_converts_to_nothing(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(textwrap.dedent(V05_APP))
    result = convert_file(path, "app.yaml")
    assert result.new is not None
    assert "+kind: ClusterBpfApplication\n" in result.diff()
    path.write_text(result.new)
    assert convert_file(path, "app.yaml").new is None


def test_validation_names_the_v05_format_in_one_problem(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {"app.yaml": V05_APP})
    with pytest.raises(ManifestError) as info:
        load_manifests(root)
    assert info.value.problems == [
        "app.yaml:2: kind: this is bpfman-operator v0.5.x's BpfApplication format (lowercase "
        "bytecode and nodeselector, each program's settings beside its bpffunctionname), which "
        "current bpfman-operator and bpfman no longer read; `bpfman convert app.yaml` rewrites "
        "it into the current one (add --write to save it)"
    ]


@pytest.mark.parametrize("kind", ["BpfApplication", "ClusterBpfApplication"])
def test_the_v05_signs_are_all_invalid_under_both_checks(kind: str) -> None:
    """What marks the v0.5.x format is always rejected by the schema, by the fast check and by
    jsonschema alike, so a valid application is never taken for an old one."""
    base = parse(CURRENT)
    base["kind"] = kind
    variants = []
    for field in ("bytecode", "nodeselector", "globaldata", "mapownerselector"):
        doc = parse(CURRENT)
        doc["spec"][field] = {}
        variants.append(doc)
    doc = parse(CURRENT)
    doc["spec"]["programs"][0]["bpffunctionname"] = "xdp_stats"
    variants.append(doc)
    doc = parse(CURRENT)
    doc["spec"]["programs"][0]["xdp"]["bpffunctionname"] = "xdp_stats"
    variants.append(doc)
    doc = parse(CURRENT)
    doc["spec"]["programs"][0] = {"type": "Kprobe", "kprobe": {}}
    variants.append(doc)
    fast = _fast(kind)
    assert fast is not None and check_valid(fast, base)
    for doc in variants:
        doc["kind"] = kind
        assert not check_valid(fast, doc)
        assert list(_validator(kind).iter_errors(doc))


def test_a_kustomize_directory_is_converted_in_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Upstream's examples are kustomize directories: their manifests are converted where they
    are, and what else kustomize keeps there (patches, a DaemonSet with a script, the
    kustomization itself) is left alone, not an error."""
    app = tmp_path / "base" / "app"
    app.mkdir(parents=True)
    (app / "kustomization.yaml").write_text("resources: [bytecode.yaml, deployment.yaml]\n")
    (app / "bytecode.yaml").write_text(textwrap.dedent(V05_APP))
    patch = "- op: replace\n  path: /spec/x\n  value: 1\n"
    (app / "patch.yaml").write_text(patch)
    deployment = (
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: d\n"
        "spec:\n  script: |\n    echo one\n    echo two\n"
    )
    (app / "deployment.yaml").write_text(deployment)
    overlay = tmp_path / "v1" / "app"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(
        "resources: [../../base/app]\n"
        "patches:\n"
        "  - target: {kind: BpfApplication, name: app-counter}\n"
        "    patch: '[{op: replace, path: /spec/bytecode/image/url, value: x}]'\n"
        "  - target: {kind: XdpProgram}\n"
        "    patch: '[]'\n"
    )
    assert run([str(tmp_path)], to_application=False, write=True) == 0
    out = capsys.readouterr().out
    assert f"{app / 'bytecode.yaml'}".lstrip("/") + "\n" in out
    assert "Rewrote 1 file." in out
    # The overlay's patch would now match nothing, which kustomize does silently: said once.
    notes = [line for line in out.splitlines() if line.startswith("note: ")]
    assert notes == [
        f"note: {overlay / 'kustomization.yaml'}: patches[0] targets BpfApplication app-counter, "
        "which is now a ClusterBpfApplication: change the target's kind to ClusterBpfApplication, "
        "and its field paths to the new names (e.g. /spec/bytecode → /spec/byteCode); kustomize "
        "skips a patch that matches nothing without a word"
    ]
    assert "kind: ClusterBpfApplication" in (app / "bytecode.yaml").read_text()
    assert (app / "patch.yaml").read_text() == patch
    assert (app / "deployment.yaml").read_text() == deployment
    assert convert_file(app / "bytecode.yaml", "bytecode.yaml").new is None
