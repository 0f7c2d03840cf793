"""Container selectors resolved through a real podman (its libpod API on a private socket), end
to end through the ``bpfman`` executable: uprobes attach inside the selected containers, XDP in
a selected pod's network namespace, plans follow containers starting and stopping, and a
runtime that does not answer is a plan error. The kernel is observed with bpftool, ip and
podman inspect, never only through bpfman."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support
from tests.cli.conftest import EXAMPLES, Bpfman, ManifestDir
from tests.containers.podman import TARGET, Podman

pytestmark = pytest.mark.kernel


@pytest.fixture
def bpfman(bpffs_root: Path, state_dir: Path, podman: Podman, tmp_path: Path) -> Iterator[Bpfman]:
    config = tmp_path / "config.yaml"
    config.write_text(f"containers:\n  runtime: podman\n  socket: {podman.socket}\n")
    b = ConfiguredBpfman(bpffs_root, state_dir)
    b.config = config
    yield b
    b.run("destroy", "--auto-approve", expect=None)


class ConfiguredBpfman(Bpfman):
    config: Path

    def run(self, *args: str, **kw):  # type: ignore[no-untyped-def, override]
        return super().run("--config", str(self.config), *args, **kw)


@pytest.fixture
def mdir(tmp_path: Path) -> ManifestDir:
    return ManifestDir(tmp_path / "src")


@pytest.fixture
def containers(podman: Podman) -> Iterator[list[str]]:
    """The names of the containers a test starts; each removed after it, pass or fail."""
    names: list[str] = []
    yield names
    for name in names:
        podman.podman("rm", "-f", "-t", "0", name, check=False)


def start(podman: Podman, names: list[str], pod: str, container: str = "app", **labels: str) -> int:
    name = support.unique(f"bpfman-{pod}-")
    names.append(name)
    return podman.run(name, "shop", pod, container, **labels)


def probe_counts() -> dict[int, int]:
    """bpftool's view: each uprobe_hits program behind a perf-event link, with the calls its
    map counted (this bpftool cannot show a uprobe link's file; what the probe counts can)."""
    out = {}
    for link in support.bpftool_json("link", "show"):  # type: ignore[union-attr]
        if link.get("type") != "perf_event":
            continue
        prog = support.bpftool_json("prog", "show", "id", str(link["prog_id"]))
        for map_id in prog.get("map_ids", []):  # type: ignore[union-attr]
            info = support.bpftool_json("map", "show", "id", str(map_id))
            if info.get("name") == "uprobe_hits_map":  # type: ignore[union-attr]
                out[link["prog_id"]] = support.map_u64(f"id {map_id}")
    return out


def wait_for(predicate, what: str) -> None:
    for _ in range(600):
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")


def counts_only(prog_id: int, pid: int) -> None:
    """The probe ``prog_id`` counts the calls of container process ``pid`` and nobody else's:
    it counts while the process runs, stands still while it is stopped (other containers,
    running the same code from their own copy of the image, go on), and resumes."""
    wait_for(lambda: probe_counts()[prog_id] > 0, "the probe counted a call")
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(0.2)  # a call in flight when it stopped lands now
        frozen = probe_counts()[prog_id]
        for _ in range(5):  # the process calls ten times a second when it runs
            time.sleep(0.1)
            assert probe_counts()[prog_id] == frozen
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: probe_counts()[prog_id] > frozen, "the probe counted again")


def plan(b: Bpfman, source: str) -> dict:
    return json.loads(b.run("plan", source, "--json", expect=None).stdout)


def changes(doc: dict) -> list[tuple[str, list[str]]]:
    assert not doc["errors"], doc["errors"]
    return sorted(
        (c["address"], c["change"]["actions"])
        for c in doc["resource_changes"]
        if c["change"]["actions"] != ["no-op"]
    )


def uprobe_program(bytecode: str) -> str:
    return f"""apiVersion: bpfman.io/v1alpha1
kind: UprobeProgram
metadata: {{name: probe}}
spec:
  bpffunctionname: uprobe_hits
  bytecode: {{path: {bytecode}}}
  target: {TARGET}
  func_name: bpfman_probe_me
  containers:
    namespace: shop
    pods: {{matchLabels: {{app: web}}}}
    containernames: [app]
"""


def test_a_uprobe_program_attaches_inside_each_selected_container_and_follows_them(
    no_leaks, bpfman, mdir, podman, containers
):
    bc = mdir.bytecode(EXAMPLES / "bytecode" / "uprobe_counter.o")
    mdir.write("up.yaml", uprobe_program(bc))
    web1 = start(podman, containers, "web-1", app="web")
    start(podman, containers, "db-1", app="db")  # not selected: another app
    bpfman.run("apply", mdir.source, "--auto-approve")

    (prog,) = probe_counts()
    address = "UprobeProgram/probe[shop/web-1/app:/probe_target:bpfman_probe_me]"
    entry = json.loads(bpfman.run("get", address, "--json").stdout)
    assert entry["attributes"]["container_pid"] == web1
    counts_only(prog, web1)
    assert changes(plan(bpfman, mdir.source)) == []
    assert changes(plan(bpfman, mdir.source)) == []  # remembered, with the same containers

    # A second selected container appears: the remembered plan must not hide it.
    web2 = start(podman, containers, "web-2", app="web")
    second = "UprobeProgram/probe[shop/web-2/app:/probe_target:bpfman_probe_me]"
    assert changes(plan(bpfman, mdir.source)) == [(second, ["create"])]
    bpfman.run("apply", mdir.source, "--auto-approve")
    (prog2,) = set(probe_counts()) - {prog}
    counts_only(prog2, web2)

    # One stops: its attachment goes (the plan again is not the remembered one).
    podman.stop(containers[0])
    assert changes(plan(bpfman, mdir.source)) == [(address, ["delete"])]
    bpfman.run("apply", mdir.source, "--auto-approve")
    assert set(probe_counts()) == {prog2}
    bpfman.run("destroy", "--auto-approve")
    assert probe_counts() == {}


def test_an_application_uprobe_link_selects_containers_by_name(
    no_leaks, bpfman, mdir, podman, containers
):
    bc = mdir.bytecode(EXAMPLES / "bytecode" / "uprobe_counter.o")
    mdir.write(
        "app.yaml",
        f"""apiVersion: bpfman.io/v1alpha1
kind: ClusterBpfApplication
metadata: {{name: counters}}
spec:
  byteCode: {{path: {bc}}}
  programs:
    - name: uprobe_hits
      type: UProbe
      uprobe:
        links:
          - target: {TARGET}
            function: bpfman_probe_me
            containers:
              namespace: shop
              pods: {{}}
              containerNames: [sidecar]
""",
    )
    start(podman, containers, "api-1", "app")
    sidecar = start(podman, containers, "api-1", "sidecar")
    bpfman.run("apply", mdir.source, "--auto-approve")
    (prog,) = probe_counts()
    counts_only(prog, sidecar)  # not the app container's calls, though it runs the same code
    address = (
        "ClusterBpfApplication/counters[uprobe_hits:shop/api-1/sidecar:/probe_target:"
        "bpfman_probe_me]"
    )
    entry = json.loads(bpfman.run("get", address, "--json").stdout)
    assert entry["attributes"]["container_pid"] == sidecar


def test_xdp_attaches_in_a_selected_pods_network_namespace(
    no_leaks, bpfman, mdir, podman, containers, request
):
    bc = mdir.bytecode(EXAMPLES / "bytecode" / "xdp_counter.o")
    mdir.write(
        "app.yaml",
        f"""apiVersion: bpfman.io/v1alpha1
kind: BpfApplication
metadata: {{name: fw}}
spec:
  byteCode: {{path: {bc}}}
  programs:
    - name: xdp_stats
      type: XDP
      xdp:
        links:
          - interfaceSelector: {{interfaces: [vc0]}}
            xdpMode: generic
            networkNamespaces:
              namespace: shop
              pods: {{matchLabels: {{app: web}}}}
""",
    )
    # The pod's namespace is a named one, as CNI plugins and netavark make them (under
    # /run/netns), which bpfman's observer reads; a veth pair of our own inside it.
    name = support.unique("bpfman-pod-")
    support.sh("ip", "netns", "add", name)
    request.addfinalizer(lambda: support.sh("ip", "netns", "del", name, check=False))
    pid = start(podman, containers, "web-7", netns=f"ns:/run/netns/{name}", app="web")
    enter = ("nsenter", f"--net=/run/netns/{name}")
    support.sh(*enter, "ip", "link", "add", "vc0", "type", "veth", "peer", "name", "vc1")
    support.sh(*enter, "ip", "link", "set", "vc0", "up")
    support.sh(*enter, "ip", "link", "set", "vc1", "up")
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{name}").st_ino
    host_lo = support.sh("ip", "-j", "link", "show", "lo").stdout
    bpfman.run("apply", mdir.source, "--auto-approve")
    (vc0,) = json.loads(support.sh(*enter, "ip", "-j", "link", "show", "vc0").stdout)
    assert vc0.get("xdp", {}).get("prog", {}).get("id"), vc0
    xdp = json.loads(support.sh(*enter, "bpftool", "-j", "net", "show").stdout)[0]["xdp"]
    assert [x["devname"] for x in xdp] == ["vc0"]
    # The host's own loopback is untouched.
    assert support.sh("ip", "-j", "link", "show", "lo").stdout == host_lo
    bpfman.run("destroy", "--auto-approve")
    (vc0,) = json.loads(support.sh(*enter, "ip", "-j", "link", "show", "vc0").stdout)
    assert "xdp" not in vc0


def test_a_runtime_that_does_not_answer_is_a_plan_error_naming_the_socket(
    bpffs_root, state_dir, mdir, tmp_path
):
    socket = tmp_path / "down.sock"
    config = tmp_path / "config.yaml"
    config.write_text(f"containers: {{runtime: podman, socket: {socket}}}\n")
    bc = mdir.bytecode(EXAMPLES / "bytecode" / "uprobe_counter.o")
    path = mdir.write("up.yaml", uprobe_program(bc))
    b = Bpfman(bpffs_root, state_dir)
    p = b.run("--config", str(config), "plan", mdir.source, expect=1)
    where = path.relative_to(mdir.root / "manifests")
    said = p.stderr + p.stdout
    assert f"{where}:9: spec.containers: cannot reach the podman API at unix://{socket}" in said
    assert "podman system service --time=0" in p.stderr + p.stdout
