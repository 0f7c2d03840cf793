"""Schema validation: what each kind accepts, its defaults, and messages for what it does not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from reconciler.spec import KINDS, load_manifests
from reconciler.spec.schema import SCHEMA_DIR, UNSUPPORTED, schema_path
from tests.unit.spec_support import DATA_DIR, copy_valid_tree, problems_of, write_tree, xdp

# --- valid manifests and defaults -------------------------------------------------------------


def test_valid_manifest_of_each_kind_loads_with_defaults(tmp_path: Path) -> None:
    manifests = {(m.kind, m.name): m for m in load_manifests(copy_valid_tree(tmp_path))}

    assert sorted(manifests) == [
        ("BpfApplication", "web-probe"),
        ("ClusterBpfApplication", "observer"),
        ("FentryProgram", "unlink-entry"),
        ("FexitProgram", "unlink-exit"),
        ("KprobeProgram", "openat2"),
        ("KprobeProgram", "openat2-return"),
        ("TcxProgram", "tcx-ingress"),
        ("TracepointProgram", "openat"),
        ("UprobeProgram", "malloc"),
        ("UprobeProgram", "readline-return"),
        ("XdpProgram", "xdp-counter"),
        ("XdpProgram", "xdp-primary"),
    ]
    assert manifests["XdpProgram", "xdp-counter"].spec["proceedon"] == ["pass", "dispatcher_return"]
    assert manifests["XdpProgram", "xdp-primary"].spec["proceedon"] == ["drop", "pass"]
    assert "proceedon" not in manifests["TcxProgram", "tcx-ingress"].spec
    malloc = manifests["UprobeProgram", "malloc"].spec
    assert (malloc["offset"], malloc["retprobe"], "pid" in malloc) == (0, False, False)
    readline = manifests["UprobeProgram", "readline-return"].spec
    assert (readline["offset"], readline["retprobe"], readline["pid"]) == (0x1A2B, True, 4242)
    kretprobe = manifests["KprobeProgram", "openat2-return"].spec
    assert (kretprobe["offset"], kretprobe["retprobe"]) == (0, True)
    # Applications: bpfman-operator's defaults, in its spelling.
    observer = manifests["ClusterBpfApplication", "observer"]
    [xdp_link] = observer.spec["programs"][0]["xdp"]["links"]
    assert xdp_link["proceedOn"] == ["Pass", "DispatcherReturn"]
    assert observer.spec["programs"][2]["uretprobe"]["links"][0]["offset"] == 0
    assert observer.global_data == (
        ("GLOBAL_u32", bytes.fromhex("0d0c0b0a")),
        ("GLOBAL_u8", b"\x01"),
    )
    web = manifests["BpfApplication", "web-probe"]
    assert web.namespace == "web"
    assert web.spec["programs"][0]["tcx"]["links"][0]["priority"] == 1000


def test_labels_and_annotations_are_kept(tmp_path: Path) -> None:
    manifests = {m.name: m for m in load_manifests(copy_valid_tree(tmp_path))}
    counter = manifests["xdp-counter"]
    assert counter.labels == {"app.kubernetes.io/name": "counter"}
    assert counter.annotations == {"owner": "network team"}
    assert counter.origin.file == "net/xdp.yaml"
    assert counter.origin.line == 2


def test_manifest_spec_is_plain_data(tmp_path: Path) -> None:
    # Defaults are copies: changing one manifest's list must not change another's.
    text = xdp() + "---\n" + xdp().replace("xdp-counter", "other")
    one, two = load_manifests(write_tree(tmp_path, {"x.yaml": text}))
    one.spec["proceedon"].append("drop")
    assert two.spec["proceedon"] == ["pass", "dispatcher_return"]


# --- unknown and not-yet-supported fields -----------------------------------------------------


def test_unknown_fields_are_rejected_with_suggestion_and_allowed_fields(tmp_path: Path) -> None:
    text = xdp(priorty="5").replace("  priority: 55\n", "")
    assert problems_of(tmp_path, {"x.yaml": text}) == [
        "x.yaml:5: spec.priority: required field is missing; expected an integer from 0 to 1000",
        "x.yaml:11: spec.priorty: unknown field 'priorty' (did you mean 'priority'?); allowed "
        "fields here: bpffunctionname, bytecode, interfaceselector, priority, proceedon, netns, "
        "xdpmode, nodeselector, globaldata, mapownerselector, containers",
    ]


def test_unknown_fields_anywhere(tmp_path: Path) -> None:
    text = """
    apiVersion: bpfman.io/v1alpha1
    kind: XdpProgram
    metadata: {name: x, lable: {}}
    spec:
      bpfFunctionName: xdp_stats
      bytecode: {path: ../bytecode/spec_progs.o, sha: abc}
      interfaceselector: {interfaces: [eth0], iface: eth1}
      priority: 1
    extra: true
    """
    problems = problems_of(tmp_path, {"x.yaml": text})
    assert problems == [
        "x.yaml:3: metadata.lable: unknown field 'lable' (did you mean 'labels'?); allowed "
        "fields here: name, labels, annotations",
        "x.yaml:4: spec.bpffunctionname: required field is missing; expected a C function name: "
        "letters, digits and '_', not starting with a digit, e.g. xdp_stats",
        "x.yaml:5: spec.bpfFunctionName: unknown field 'bpfFunctionName' (did you mean "
        "'bpffunctionname'?); allowed fields here: bpffunctionname, bytecode, "
        "interfaceselector, priority, proceedon, netns, xdpmode, nodeselector, globaldata, "
        "mapownerselector, containers",
        "x.yaml:6: spec.bytecode.sha: unknown field 'sha'; allowed fields here: path, image",
        "x.yaml:7: spec.interfaceselector.iface: unknown field 'iface' (did you mean "
        "'interfaces'?); allowed fields here: interfaces, primarynodeinterface",
        "x.yaml:9: extra: unknown field 'extra'; allowed fields here: apiVersion, kind, "
        "metadata, spec",
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("nodeselector", "{}"),
        ("nodeselector", "{matchLabels: {kubernetes.io/os: linux}}"),
        ("globaldata", "{GLOBAL_u8: [1]}"),
        ("netns", "/run/netns/blue"),
    ],
)
def test_fields_of_issue_3_are_accepted(tmp_path: Path, field: str, value: str) -> None:
    [manifest] = load_manifests(write_tree(tmp_path, {"x.yaml": xdp(**{field: value})}))
    assert field in manifest.spec


def test_network_containers_need_pods_and_no_netns(tmp_path: Path) -> None:
    assert problems_of(tmp_path, {"x.yaml": xdp(containers="{namespace: web}")}) == [
        "x.yaml:12: spec.containers: set pods, a label selector over the pods' labels, as "
        "bpfman-operator requires ({} selects every pod of the namespace)"
    ]
    both = xdp(containers="{pods: {}}", netns="/run/netns/blue")
    assert problems_of(tmp_path, {"x.yaml": both}) == [
        "x.yaml:12: spec.containers: set netns or containers, not both: each names the namespace"
    ]


def test_bytecode_from_an_image_is_checked_for_form_only(tmp_path: Path) -> None:
    """validate does not pull: the reference's form and the pull policy are checked here, the
    object inside when a plan pulls it (tests/images)."""
    good = xdp(
        bytecode="{image: {url: quay.io/bpfman-bytecode/xdp_pass:latest, "
        "imagepullpolicy: Always, imagepullsecret: {name: regcred, namespace: default}}}"
    )
    (tmp_path / "good").mkdir()
    (manifest,) = load_manifests(write_tree(tmp_path / "good", {"x.yaml": good}), None)
    assert manifest.spec["bytecode"]["image"]["url"] == "quay.io/bpfman-bytecode/xdp_pass:latest"
    both = xdp(bytecode="{path: xdp_counter.o, image: {url: quay.io/a/b:v1}}")
    bad_ref = xdp(bytecode="{image: {url: 'quay.io/Org/x:v1'}}")
    bad_policy = xdp(bytecode="{image: {url: quay.io/a/b:v1, imagepullpolicy: always}}")
    for text, says in (
        (both, "set exactly one of path"),
        (bad_ref, "repository 'Org/x' must be lowercase"),
        (bad_policy, "Always, IfNotPresent, Never"),
    ):
        problems = problems_of(tmp_path, {"x.yaml": text})
        assert len(problems) == 1 and says in problems[0], problems


def test_uprobe_containers_by_pod_labels_are_checked(tmp_path: Path) -> None:
    text = (DATA_DIR / "valid" / "uprobe.yaml").read_text().split("---")[0]
    selected = text + "  containers:\n    namespace: web\n    pods: {matchLabels: {app: web}}\n"
    (tmp_path / "ok").mkdir()
    (manifest,) = load_manifests(write_tree(tmp_path / "ok", {"u.yaml": selected}), None)
    assert manifest.spec["containers"]["namespace"] == "web"
    bad = text + "  containers:\n    namespace: Web_1\n    pods: {}\n    pid: 7\n"
    assert problems_of(tmp_path, {"u.yaml": bad}) == [
        "u.yaml:12: spec.containers.namespace: must be a Kubernetes namespace name: lowercase "
        "letters, digits and '-', e.g. default (got 'Web_1')"
    ]
    empty = text + "  containers: {}\n"
    assert problems_of(tmp_path, {"u.yaml": empty})[0].startswith(
        "u.yaml:11: spec.containers: set pods (a label selector; {} for every pod)"
    )


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (
            "{name: x, namespace: default}",
            "metadata.namespace: these kinds are cluster-scoped (as in bpfman-operator), so a "
            "namespace has no meaning; remove metadata.namespace",
        ),
        (
            "{name: x, uid: 0b8e3b8c}",
            "metadata.uid: this field is set by the Kubernetes API server, not written by hand "
            "(was the manifest exported with kubectl get -o yaml?); remove it",
        ),
        (
            "{generateName: xdp-}",
            "metadata.name: required field is missing; expected a DNS-1123 subdomain",
        ),
        (
            "{name: Xdp_Counter}",
            "metadata.name: must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit, at most 253 characters, e.g. "
            "xdp-counter (got 'Xdp_Counter')",
        ),
        ("{name: 42}", "metadata.name: must be a string (got integer 42); put it in quotes"),
        (
            '{name: x, labels: {"a b": c}}',
            'metadata.labels["a b"]: invalid key: must be a label key',
        ),
        ("{name: x, labels: {app: " + "v" * 64 + "}}", "metadata.labels.app: must be at most 63"),
        (
            "{name: x, annotations: {a: 1}}",
            "metadata.annotations.a: must be a string (got integer 1)",
        ),
    ],
)
def test_metadata_rules(tmp_path: Path, metadata: str, message: str) -> None:
    text = xdp().replace("metadata:\n  name: xdp-counter\n", f"metadata: {metadata}\n#\n")
    problems = problems_of(tmp_path, {"x.yaml": text})
    assert any(p.startswith(f"x.yaml:3: {message}") for p in problems), problems


# --- values out of range, of the wrong type, or not in an enum --------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("priority", "2000", "spec.priority: must be <= 1000 (got 2000)"),
        ("priority", "-1", "spec.priority: must be >= 0 (got -1)"),
        ("priority", "55.0", "spec.priority: must be an integer (got number 55.0)"),
        ("priority", "high", "spec.priority: must be an integer (got 'high')"),
        ("priority", "true", "spec.priority: must be an integer (got true)"),
        (
            "proceedon",
            "[pass, dispatcher_retrun]",
            "spec.proceedon[1]: must be one of: aborted, drop, pass, tx, redirect, "
            "dispatcher_return (got 'dispatcher_retrun'; did you mean 'dispatcher_return'?)",
        ),
        (
            "proceedon",
            "[pass, pass]",
            "spec.proceedon[1]: 'pass' is listed twice (also at spec.proceedon[0]); items must "
            "be unique",
        ),
        ("proceedon", "pass", "spec.proceedon: must be a list (got 'pass')"),
        (
            "interfaceselector",
            "{interfaces: eth0}",
            "spec.interfaceselector.interfaces: must be a list (got 'eth0')",
        ),
        (
            "interfaceselector",
            "{interfaces: []}",
            "spec.interfaceselector.interfaces: must not be empty",
        ),
        (
            "interfaceselector",
            "{interfaces: [eth0, 'a very long interface']}",
            "spec.interfaceselector.interfaces[1]: must be a network interface name: 1 to 15 "
            "characters without '/', ':' or whitespace, e.g. eth0 (got 'a very long interface')",
        ),
        (
            "interfaceselector",
            "{}",
            "spec.interfaceselector: set exactly one of interfaces (a list of names) or "
            "primarynodeinterface: true (got: none)",
        ),
        (
            "interfaceselector",
            "{primarynodeinterface: false}",
            "spec.interfaceselector.primarynodeinterface: must be true, or name the interfaces "
            "with interfaces: [...] instead (got false)",
        ),
        ("bpffunctionname", "'xdp stats'", "spec.bpffunctionname: must be a C function name"),
        ("bytecode", "{path: ''}", "spec.bytecode.path: must not be empty"),
        ("bytecode", "../bytecode/spec_progs.o", "spec.bytecode: must be a mapping (got '../"),
    ],
)
def test_invalid_values_say_what_is_valid(
    tmp_path: Path, field: str, value: str, message: str
) -> None:
    problems = problems_of(tmp_path, {"x.yaml": xdp(**{field: value})})
    line = {"bpffunctionname": 6, "bytecode": 7, "interfaceselector": 9, "priority": 11}.get(
        field, 12
    )
    assert problems[0].startswith(f"x.yaml:{line}: {message}"), problems


def test_item_errors_point_at_the_item_line(tmp_path: Path) -> None:
    text = xdp(interfaceselector="\n    interfaces:\n      - eth0\n      - 'bad/name'")
    [problem] = problems_of(tmp_path, {"x.yaml": text})
    assert problem.startswith("x.yaml:12: spec.interfaceselector.interfaces[1]: must be")


def test_tcx_direction_is_required_and_an_enum(tmp_path: Path) -> None:
    tcx = xdp(direction="ingres").replace("XdpProgram", "TcxProgram")
    assert problems_of(tmp_path, {"t.yaml": tcx}) == [
        "t.yaml:12: spec.direction: must be one of: ingress, egress (got 'ingres'; did you "
        "mean 'ingress'?)"
    ]
    missing = xdp().replace("XdpProgram", "TcxProgram")
    assert problems_of(tmp_path, {"t.yaml": missing}) == [
        "t.yaml:5: spec.direction: required field is missing; expected one of: ingress, egress"
    ]


def test_tcx_has_no_proceedon(tmp_path: Path) -> None:
    tcx = xdp(direction="egress", proceedon="[pass]").replace("XdpProgram", "TcxProgram")
    [problem] = problems_of(tmp_path, {"t.yaml": tcx})
    assert problem.startswith("t.yaml:13: spec.proceedon: unknown field 'proceedon'; allowed")


TRACEPOINT = """
apiVersion: bpfman.io/v1alpha1
kind: TracepointProgram
metadata: {name: tp}
spec:
  bpffunctionname: tp_openat
  bytecode: {path: ../bytecode/spec_progs.o}
  names: [%s]
"""


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (
            "sys_enter_openat",
            "t.yaml:7: spec.names[0]: must be group/name as listed under "
            "/sys/kernel/tracing/events, e.g. syscalls/sys_enter_openat (got 'sys_enter_openat')",
        ),
        ("'syscalls/sys enter'", "t.yaml:7: spec.names[0]: must be group/name"),
        ("a/b/c", "t.yaml:7: spec.names[0]: must be group/name"),
        ("", "t.yaml:7: spec.names: must not be empty"),
    ],
)
def test_tracepoint_names_look_like_group_slash_name(
    tmp_path: Path, names: str, message: str
) -> None:
    problems = problems_of(tmp_path, {"t.yaml": TRACEPOINT % names})
    assert problems[0].startswith(message), problems


UPROBE = """
apiVersion: bpfman.io/v1alpha1
kind: UprobeProgram
metadata: {name: up}
spec:
  bpffunctionname: uprobe_malloc
  bytecode: {path: ../bytecode/spec_progs.o}
  target: %s
"""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "lib/libc.so.6\n  func_name: malloc",
            "u.yaml:7: spec.target: must be an absolute path of a binary or library, e.g. "
            "/usr/bin/bash, or a library name, e.g. libc or libc.so.6 (got 'lib/libc.so.6')",
        ),
        ("'lib c'\n  func_name: malloc", "u.yaml:7: spec.target: must be an absolute path"),
        ("/bin/bash\n  offset: 1\n  containers: {pid: 0}", "u.yaml:9: spec.containers.pid: must"),
        ("/bin/bash\n  offset: -1", "u.yaml:8: spec.offset: must be >= 0 (got -1)"),
        ("/bin/bash\n  offset: 1\n  pid: -5", "u.yaml:9: spec.pid: must be >= 0 (got -5)"),
        (
            "/bin/bash\n  offset: 1\n  retprobe: maybe",
            "u.yaml:9: spec.retprobe: must be true or false",
        ),
        ("/bin/bash\n  func_name: ''", "u.yaml:8: spec.func_name: must not be empty"),
    ],
)
def test_uprobe_fields(tmp_path: Path, extra: str, message: str) -> None:
    problems = problems_of(tmp_path, {"u.yaml": UPROBE % extra})
    assert problems[0].startswith(message), problems


# --- apiVersion and kind ----------------------------------------------------------------------

ALL_KINDS = (
    "BpfApplication, CgroupSkbProgram, CgroupSockAddrProgram, ClusterBpfApplication, "
    "FentryProgram, FexitProgram, KprobeProgram, TcProgram, TcxProgram, TracepointProgram, "
    "UprobeProgram, XdpProgram"
)


def test_unknown_kind_lists_valid_kinds(tmp_path: Path) -> None:
    assert problems_of(tmp_path, {"x.yaml": xdp().replace("XdpProgram", "XdpProgam")}) == [
        "x.yaml:2: kind: unknown kind 'XdpProgam' (did you mean 'XdpProgram'?); valid kinds: "
        f"{ALL_KINDS}"
    ]


def test_foreign_manifest_is_called_out(tmp_path: Path) -> None:
    text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"
    assert problems_of(tmp_path, {"d.yaml": text}) == [
        f"d.yaml:2: kind: unknown kind 'Deployment'; valid kinds: {ALL_KINDS} (apiVersion "
        "'apps/v1' is not bpfman.io/v1alpha1: is this a bpfman manifest?)"
    ]


def test_later_bpfman_kinds_are_not_supported_yet(tmp_path: Path) -> None:
    assert problems_of(tmp_path, {"x.yaml": xdp().replace("XdpProgram", "TcNsProgram")}) == [
        f"x.yaml:2: kind: kind TcNsProgram is not supported yet; supported kinds: {ALL_KINDS}"
    ]


def test_missing_kind(tmp_path: Path) -> None:
    assert problems_of(tmp_path, {"x.yaml": xdp().replace("kind: XdpProgram\n", "")}) == [
        f"x.yaml:1: kind: required field is missing; expected one of: {ALL_KINDS}"
    ]


def test_wrong_api_version(tmp_path: Path) -> None:
    assert problems_of(tmp_path, {"x.yaml": xdp().replace("v1alpha1", "v1")}) == [
        "x.yaml:1: apiVersion: must be bpfman.io/v1alpha1 (got 'bpfman.io/v1')"
    ]


def test_missing_spec_and_metadata(tmp_path: Path) -> None:
    text = "apiVersion: bpfman.io/v1alpha1\nkind: XdpProgram\n"
    assert problems_of(tmp_path, {"x.yaml": text}) == [
        "x.yaml:1: metadata: required field is missing; expected a mapping with name",
        "x.yaml:1: spec: required field is missing; expected a mapping with bpffunctionname, "
        "bytecode, interfaceselector, priority",
    ]


def test_status_is_rejected(tmp_path: Path) -> None:
    assert problems_of(tmp_path, {"x.yaml": xdp() + "status: {conditions: []}\n"}) == [
        "x.yaml:12: status: status is reported by bpfman, not written in manifests; remove it"
    ]


# --- the schema files themselves --------------------------------------------------------------


def _schemas() -> dict[str, Any]:
    return {p.name: json.loads(p.read_text()) for p in sorted(SCHEMA_DIR.glob("*.json"))}


def test_schema_files_are_valid_draft_2020_12() -> None:
    schemas = _schemas()
    assert sorted(schemas) == [
        "bpfapplication.json",
        "cgroupskbprogram.json",
        "cgroupsockaddrprogram.json",
        "clusterbpfapplication.json",
        "common.json",
        "fentryprogram.json",
        "fexitprogram.json",
        "hostconfig.json",
        "kprobeprogram.json",
        "tcprogram.json",
        "tcxprogram.json",
        "tracepointprogram.json",
        "uprobeprogram.json",
        "xdpprogram.json",
    ]
    for schema in schemas.values():
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        Draft202012Validator.check_schema(schema)


def _walk(node: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
    """Every subschema that describes a field: properties' values and array items."""
    out = []
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            out.append((f"{path}.{name}", sub))
            out.extend(_walk(sub, f"{path}.{name}"))
        for key in ("items", "additionalProperties", "propertyNames"):
            if isinstance(node.get(key), dict):
                out.append((f"{path}[{key}]", node[key]))
                out.extend(_walk(node[key], f"{path}[{key}]"))
        for name, sub in node.get("$defs", {}).items():
            out.append((f"{path}#{name}", sub))
            out.extend(_walk(sub, f"{path}#{name}"))
    return out


def test_every_field_has_a_description() -> None:
    for file, schema in _schemas().items():
        for path, sub in _walk(schema, file):
            assert "description" in sub or "$ref" in sub, f"{path} has no description"
            if UNSUPPORTED in sub:
                assert sub.get("not") == {}, f"{path} is marked unsupported but accepted"


# Annotations take any key (Kubernetes'); bpfman.io/prune is the one bpfman reads, and checks.
OPEN_MAPS = ("etadata.annotations",)  # metadata and namespacedMetadata


def test_kind_schemas_close_every_object() -> None:
    for file, schema in _schemas().items():
        for path, sub in [(file, schema), *_walk(schema, file)]:
            if sub.get("type") == "object" and "properties" in sub:
                if path.endswith(OPEN_MAPS):
                    continue  # a map of free-form keys with a few known ones
                assert sub.get("additionalProperties") is False, f"{path} accepts unknown fields"


def test_schemas_work_unchanged_with_a_standard_validator(tmp_path: Path) -> None:
    """Editors and CI use the files as they are, resolving $ref to common.json themselves: they
    must accept the valid fixtures and reject what bpfman rejects."""
    registry: Registry = Registry()
    for path in SCHEMA_DIR.glob("*.json"):
        registry = registry.with_resource(
            path.as_uri(), Resource.from_contents(json.loads(path.read_text()))
        )

    def valid(doc: dict[str, Any]) -> bool:
        validator = Draft202012Validator(
            {"$ref": schema_path(doc["kind"]).as_uri()}, registry=registry
        )
        return validator.is_valid(doc)

    for path in sorted((DATA_DIR / "valid").rglob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert valid(doc), path
    good = yaml.safe_load(xdp())
    assert valid(good)
    bad_selector = {"matchExpressions": [{"key": "a", "operator": "In"}]}
    for field, value in [("priority", 1001), ("nodeselector", bad_selector), ("priorty", 1)]:
        assert not valid({**good, "spec": {**good["spec"], field: value}})
    assert set(KINDS) == {json.loads(schema_path(k).read_text())["title"] for k in KINDS}
