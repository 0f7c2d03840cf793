"""Container selectors resolved through the host's container runtime (docs/containers.md): what
a selector picks, the attachments and addresses it expands to, how a runtime that does not
answer is reported, and that the remembered plan notices containers coming and going."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reconciler.containers import Container, Selector, select
from reconciler.hostfacts import Host
from reconciler.kernel.types import UprobePoint, XdpPoint
from reconciler.plancache import RecordingHost, _same_answers
from reconciler.spec import ManifestError, load_desired
from tests.unit.spec_support import StubHost, write_tree


def container(cid: str, ns: str, pod: str, name: str, pid: int, **labels: str) -> Container:
    every = {
        "io.kubernetes.pod.namespace": ns,
        "io.kubernetes.pod.name": pod,
        "io.kubernetes.container.name": name,
        **labels,
    }
    return Container(cid, ns, pod, name, every, pid, f"/proc/{pid}/ns/net")


RUNNING = [
    container("c3", "shop", "web-2", "app", 303, app="web"),
    container("c1", "shop", "web-1", "app", 101, app="web"),
    container("c2", "shop", "web-1", "sidecar", 102, app="web"),
    container("c4", "shop", "db-1", "db", 404, app="db"),
    container("c5", "other", "web-9", "app", 505, app="web"),
]

UPROBE = """
apiVersion: bpfman.io/v1alpha1
kind: UprobeProgram
metadata: {name: up}
spec:
  bpffunctionname: uprobe_malloc
  bytecode: {path: ../bytecode/spec_progs.o}
  func_name: malloc
  target: /usr/bin/app
  containers:
    namespace: shop
    pods: {matchLabels: {app: web}}
    containernames: [app]
"""

APP_XDP = """
apiVersion: bpfman.io/v1alpha1
kind: ClusterBpfApplication
metadata: {name: fw}
spec:
  byteCode: {path: ../bytecode/spec_progs.o}
  programs:
    - name: xdp_stats
      type: XDP
      xdp:
        links:
          - interfaceSelector: {interfaces: [eth0]}
            networkNamespaces:
              namespace: shop
              pods: {matchExpressions: [{key: app, operator: In, values: [web]}]}
"""


def ids(chosen: list[Container]) -> list[str]:
    return [c.id for c in chosen]


def test_a_selector_picks_by_namespace_pod_labels_and_container_name() -> None:
    assert ids(select(RUNNING, Selector("shop", {}))) == ["c4", "c1", "c2", "c3"]
    web = {"matchLabels": {"app": "web"}}
    assert ids(select(RUNNING, Selector("shop", web))) == ["c1", "c2", "c3"]
    assert ids(select(RUNNING, Selector(None, web))) == ["c5", "c1", "c2", "c3"]
    assert ids(select(RUNNING, Selector("shop", web, ("sidecar",)))) == ["c2"]
    not_web = {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}
    assert ids(select(RUNNING, Selector("shop", not_web))) == ["c4"]
    assert select(RUNNING, Selector("nowhere", {})) == []


def test_each_selected_container_is_its_own_uprobe_named_by_pod_and_container(
    tmp_path: Path,
) -> None:
    host = StubHost(running=RUNNING)
    state = load_desired(write_tree(tmp_path, {"u.yaml": UPROBE}), host)
    got = [(str(a.address), a.point, a.attributes["container_pid"]) for a in state.attachments]
    assert got == [
        (
            "UprobeProgram/up[shop/web-1/app:/usr/bin/app:malloc]",
            UprobePoint("/usr/bin/app", "malloc", 0, False, None, 101),
            101,
        ),
        (
            "UprobeProgram/up[shop/web-2/app:/usr/bin/app:malloc]",
            UprobePoint("/usr/bin/app", "malloc", 0, False, None, 303),
            303,
        ),
    ]
    asked = {"namespace": "shop", "pods": {"matchLabels": {"app": "web"}}}
    assert host.asked == [("containers", {**asked, "containerNames": ["app"]})]


def test_a_library_target_is_resolved_in_each_container(tmp_path: Path) -> None:
    text = UPROBE.replace("target: /usr/bin/app", "target: libc")
    host = StubHost(
        running=RUNNING,
        libraries={("libc", 101): "/lib/libc.so.6", ("libc", 303): "/lib/ld-musl.so.1"},
    )
    state = load_desired(write_tree(tmp_path, {"u.yaml": text}), host)
    assert [(a.address.index, a.point.target) for a in state.attachments] == [
        ("shop/web-1/app:libc:malloc", "/lib/libc.so.6"),
        ("shop/web-2/app:libc:malloc", "/lib/ld-musl.so.1"),
    ]


def test_network_namespaces_attach_once_per_pod_in_its_namespace(tmp_path: Path) -> None:
    interfaces: dict[str | None, Any] = {None: ["eth0"]}
    host = StubHost(running=RUNNING, interfaces_=interfaces)
    state = load_desired(write_tree(tmp_path, {"a.yaml": APP_XDP}), host)
    assert [(str(a.address), a.point) for a in state.attachments] == [
        (
            "ClusterBpfApplication/fw[xdp_stats:shop/web-1:eth0]",
            XdpPoint("eth0", netns="/proc/101/ns/net"),
        ),
        (
            "ClusterBpfApplication/fw[xdp_stats:shop/web-2:eth0]",
            XdpPoint("eth0", netns="/proc/303/ns/net"),
        ),
    ]


def test_no_runtime_is_a_plan_error_naming_the_link_and_the_socket(tmp_path: Path) -> None:
    socket = tmp_path / "nobody.sock"
    config = tmp_path / "config.yaml"
    config.write_text(
        f"bytecode_dirs: [{tmp_path / 'bytecode'}]\n"
        f"containers:\n  runtime: podman\n  socket: {socket}\n"
    )
    host = Host(labels_file=None, config_file=config)
    root = write_tree(tmp_path, {"u.yaml": UPROBE})
    try:
        load_desired(root, host)
    except ManifestError as e:
        problems = e.problems
    else:
        raise AssertionError("a selector without a runtime expanded")
    assert problems == [
        f"u.yaml:9: spec.containers: cannot reach the podman API at unix://{socket}: the "
        "socket does not exist; container selectors are resolved through it: start its API "
        f"service (`systemctl enable --now podman.socket`, or `podman system service --time=0 "
        f"unix://{socket}`), or set containers.runtime and containers.socket in the host config "
        f"{config}"
    ]


def test_the_remembered_plan_notices_containers_coming_and_going(tmp_path: Path) -> None:
    host = StubHost(running=RUNNING)
    recording = RecordingHost(host)
    load_desired(write_tree(tmp_path, {"u.yaml": UPROBE}), recording)
    calls = [c for c in recording.calls if c[0] == "containers"]
    assert len(calls) == 1
    assert _same_answers(StubHost(running=list(RUNNING)), calls)
    started = [*RUNNING, container("c6", "shop", "web-3", "app", 606, app="web")]
    assert not _same_answers(StubHost(running=started), calls)
    stopped = [c for c in RUNNING if c.id != "c3"]
    assert not _same_answers(StubHost(running=stopped), calls)
    restarted = [container("c1b", "shop", "web-1", "app", 111, app="web"), *RUNNING[1:]]
    assert not _same_answers(StubHost(running=restarted), calls)
    unrelated = [*RUNNING, container("c7", "shop", "db-2", "db", 707, app="db")]
    assert _same_answers(StubHost(running=unrelated), calls)
