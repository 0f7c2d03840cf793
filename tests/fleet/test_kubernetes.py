"""contrib/kubernetes, checked with the real tools: every resource against the Kubernetes schemas
(kubernetes-validate, offline, strict), both kustomizations rendered by `kubectl kustomize`, the
DaemonSet's command parsed by bpfman's own parser, the ConfigMap variant's directory read by
`bpfman validate` as the kubelet lays it out, the node-labels sidecar run against an HTTPS API
server, and the Containerfile's build steps checked against the repository (and built when a
base image is at hand; there is no registry here)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.cli import build_parser
from reconciler.hostfiles import read_labels_file
from reconciler.watch.listen import parse_listen
from tests.unit.test_contrib_systemd import WATCH, one, parse_unit

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "contrib" / "kubernetes"
BASE = K8S / "base"
VENV_BIN = Path(sys.executable).parent
BPFMAN = VENV_BIN / "bpfman"
VALIDATE = VENV_BIN / "kubernetes-validate"
NODE_LABELS = K8S / "bpfman_node_labels.py"
CONTAINERFILE = K8S / "Containerfile"
# The oldest release the DaemonSet needs (native sidecars, securityContext.appArmorProfile) and
# the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", "1.37.0")
VARIANTS = {"git": K8S, "configmap": K8S / "configmap"}
EBPF_CAPS = {"BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN", "SYS_RESOURCE"}


def kustomization(directory: Path) -> dict[str, Any]:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


def resource_files() -> list[Path]:
    """The Kubernetes resources the base kustomization lists (the files, not directories)."""
    return [BASE / r for r in kustomization(BASE)["resources"]]


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kubernetes_validate(path: Path, version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VALIDATE), "--strict", "--kubernetes-version", version, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    p = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    return [d for d in yaml.safe_load_all(p.stdout) if d]


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, kustomize(VARIANTS[request.param])


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def daemonset_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (ds,) = by_kind(docs, "DaemonSet")
    return ds


def all_containers(ds: dict[str, Any]) -> list[dict[str, Any]]:
    spec = ds["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def watch_container(ds: dict[str, Any]) -> dict[str, Any]:
    (c,) = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "watch"]
    return c


# --- schemas ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", resource_files(), ids=lambda p: p.name)
def test_each_resource_file_validates_strictly(path: Path, version: str) -> None:
    p = kubernetes_validate(path, version)
    assert p.returncode == 0, p.stdout + p.stderr
    # one "passed" line per document: no document was skipped as unknown
    assert p.stdout.count(" passed ") == len(documents(path)), p.stdout


def test_strict_validation_refuses_an_unknown_field(tmp_path: Path) -> None:
    """The check above is worth something: a misspelt field fails it."""
    text = (BASE / "daemonset.yaml").read_text()
    bad = tmp_path / "daemonset.yaml"
    bad.write_text(text.replace("hostNetwork: true", "hostNetwork: true\n      hostNetwrk: true"))
    p = kubernetes_validate(bad, K8S_VERSIONS[-1])
    assert p.returncode != 0
    assert "hostNetwrk" in p.stdout + p.stderr


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_each_variant_renders_with_kustomize_and_validates(
    rendered: tuple[str, list[dict[str, Any]]], version: str, tmp_path: Path
) -> None:
    _, docs = rendered
    out = tmp_path / "rendered.yaml"
    out.write_text(yaml.safe_dump_all(docs))
    p = kubernetes_validate(out, version)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count(" passed ") == len(docs)
    kinds = sorted(d["kind"] for d in docs)
    for kind in ("ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "Namespace"):
        assert kind in kinds
    assert {"Service", "ServiceAccount"} <= set(kinds)


@pytest.mark.parametrize("directory", [K8S, BASE, K8S / "configmap"], ids=["git", "base", "cm"])
def test_every_file_a_kustomization_names_exists(directory: Path) -> None:
    k = kustomization(directory)
    named = list(k.get("resources", []))
    for generator in k.get("configMapGenerator", []):
        named += [f.split("=", 1)[-1] for f in generator.get("files", [])]
    assert named
    for name in named:
        assert (directory / name).exists(), f"{directory.name}/kustomization.yaml: {name}"


# --- the DaemonSet ------------------------------------------------------------------------------


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion of command and args ($$ escapes; unknown names stay)."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        text,
    )


def container_env(c: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, str]:
    """The container's environment as the kubelet builds it (fieldRefs get example values)."""
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind(docs, "ConfigMap")}
    field = {"spec.nodeName": "node-a", "status.podIP": "10.0.0.7"}
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            env[var["name"]] = field[var["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def test_daemonset_runs_a_real_bpfman_watch(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    variant, docs = rendered
    ds = daemonset_of(docs)
    c = watch_container(ds)
    env = container_env(c, docs)
    argv = [expand(a, env) for a in c["command"] + c["args"]]
    assert argv[0] == "/opt/bpfman/.venv/bin/bpfman"
    assert not [a for a in argv if "$(" in a], f"unexpanded variables: {argv}"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "watch"
    if variant == "git":
        assert args.source.startswith("https://") and args.ref and args.path
    else:
        assert args.source == "/etc/bpfman/manifests" and args.ref is None
    assert parse_listen(args.metrics_listen) == ("10.0.0.7", 9101)
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}

    def mounted(path: str) -> dict[str, Any]:
        for mount_path, m in mounts.items():
            if path == mount_path or path.startswith(mount_path + "/"):
                return m
        raise AssertionError(f"{path} is on no volume of the watch container")

    assert mounted(args.labels_file)["readOnly"] is True
    assert mounted(args.config)["readOnly"] is True
    assert not mounted(env["BPFMAN_STATE_DIR"]).get("readOnly")
    assert mounted(env["BPFMAN_BPFFS_ROOT"])["mountPath"] == "/sys/fs/bpf"
    if variant == "configmap":
        assert mounted(args.source)["name"] == "manifests"


def test_the_sidecar_writes_the_labels_file_the_watcher_reads() -> None:
    ds = documents(BASE / "daemonset.yaml")[0]
    (sidecar,) = [c for c in all_containers(ds) if c["name"] == "node-labels"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: started before the watcher
    out = [a.split("=", 1)[1] for a in sidecar["command"] if a.startswith("--out=")]
    watch = watch_container(ds)
    assert [f"--labels-file={out[0]}"] == [a for a in watch["args"] if "--labels-file" in a]
    assert sidecar["startupProbe"]["exec"]["command"][-1] == out[0]
    # both mount the same emptyDir there
    for c in (sidecar, watch):
        (m,) = [m for m in c["volumeMounts"] if out[0].startswith(m["mountPath"] + "/")]
        assert m["name"] == "node-labels"
    # only the sidecar gets an API token
    spec = ds["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert not [m for m in watch["volumeMounts"] if m["name"] == "sa-token"]


def test_no_container_is_privileged_and_the_watcher_has_only_the_ebpf_capabilities() -> None:
    ds = documents(BASE / "daemonset.yaml")[0]
    for c in all_containers(ds):
        sc = c["securityContext"]
        assert sc.get("privileged") is not True, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
    watch = watch_container(ds)
    added = set(watch["securityContext"]["capabilities"]["add"])
    assert added == EBPF_CAPS
    # the same set as the systemd unit's, which documents each one too
    unit = parse_unit(WATCH.read_text())
    bounding = one(unit, "Service", "CapabilityBoundingSet").split()
    assert {c.removeprefix("CAP_") for c in bounding} == added
    # each added capability is justified by a comment right above it
    text = (BASE / "daemonset.yaml").read_text()
    for cap in added:
        assert re.search(rf"(?m)^ +# .+\n +- {cap}$", text), cap
    others = [c for c in all_containers(ds) if c is not watch]
    assert all(c["securityContext"]["runAsNonRoot"] is True for c in others)
    assert "privileged: true" not in text


def test_host_paths_are_the_ones_ebpf_management_needs() -> None:
    ds = documents(BASE / "daemonset.yaml")[0]
    spec = ds["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    host_paths = {v["hostPath"]["path"] for v in volumes.values() if "hostPath" in v}
    assert host_paths == {
        "/sys/fs/bpf",
        "/sys/kernel/tracing",
        "/sys/fs/cgroup",
        "/run/netns",
        "/run/bpfman",
        "/var/lib/bpfman",
    }
    for c in all_containers(ds):
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, f"{c['name']}: no volume {m['name']}"
    netns = [m for m in watch_container(ds)["volumeMounts"] if m["mountPath"] == "/run/netns"]
    assert netns[0]["mountPropagation"] == "HostToContainer"
    assert spec["hostNetwork"] is True and spec["hostPID"] is False


def test_the_metrics_service_reaches_the_watchers_metrics_port() -> None:
    (service,) = documents(BASE / "service.yaml")
    ds = documents(BASE / "daemonset.yaml")[0]
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    watch = watch_container(ds)
    ports = {p["name"]: p["containerPort"] for p in watch["ports"]}
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in ports
    assert port["port"] == ports[port["targetPort"]]
    assert service["metadata"]["annotations"]["prometheus.io/port"] == str(port["port"])
    listen = [a for a in watch["args"] if a.startswith("--metrics-listen=")]
    assert listen[0].endswith(f":{ports['metrics']}")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert watch[probe]["httpGet"]["port"] == "metrics"
    assert watch["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_the_mount_check_init_container_passes_on_this_host() -> None:
    """Its shell script, run here as the pod would run it (bpffs is mounted on this host)."""
    if not os.path.ismount("/sys/fs/bpf"):
        pytest.skip("/sys/fs/bpf is not mounted here")
    ds = documents(BASE / "daemonset.yaml")[0]
    (check,) = [c for c in all_containers(ds) if c["name"] == "check-mounts"]
    p = subprocess.run(check["command"], capture_output=True, text=True, timeout=30, check=False)
    assert p.returncode == 0, p.stderr


# --- the ConfigMap variant, as the kubelet mounts it --------------------------------------------


def kubelet_volume(target: Path, files: dict[str, str]) -> None:
    """A ConfigMap volume as the kubelet's AtomicWriter lays it out: the files in a hidden
    timestamped directory, ``..data`` a symlink to it, and each key a symlink through ``..data``.
    An update writes a new directory and swaps ``..data`` by rename."""
    target.mkdir(exist_ok=True)
    stamp = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    (target / stamp).mkdir()
    for name, text in files.items():
        (target / stamp / name).write_text(text)
    tmp_link = target / "..data_tmp"
    tmp_link.symlink_to(stamp)
    os.replace(tmp_link, target / "..data")
    for name in files:
        link = target / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")


def test_bpfman_reads_the_configmap_directory_as_the_kubelet_mounts_it(tmp_path: Path) -> None:
    docs = kustomize(K8S / "configmap")
    configmaps = {d["metadata"]["name"]: d for d in by_kind(docs, "ConfigMap")}
    manifests = tmp_path / "manifests"
    kubelet_volume(manifests, configmaps["bpfman-manifests"]["data"])
    host = tmp_path / "host"
    kubelet_volume(host, next(v["data"] for k, v in configmaps.items() if "host-config" in k))
    p = subprocess.run(
        [str(BPFMAN), "--config", str(host / "config.yaml"), "validate", str(manifests), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    result = json.loads(p.stdout)
    # read once, through its symlink: ..data and the timestamped directory are skipped
    assert result["valid"] is True, result
    assert result["manifests"] == len(configmaps["bpfman-manifests"]["data"])


def test_the_host_config_is_checked_by_bpfman(tmp_path: Path) -> None:
    """The validation above reads --config: a wrong key in it fails (so the check is real)."""
    manifests = tmp_path / "manifests"
    kubelet_volume(
        manifests,
        {"t.yaml": (K8S / "configmap" / "manifests" / "tracepoint-counter.yaml").read_text()},
    )
    bad = tmp_path / "config.yaml"
    bad.write_text((BASE / "host" / "config.yaml").read_text().replace("cache_dir", "cachedir"))
    p = subprocess.run(
        [str(BPFMAN), "--config", str(bad), "validate", str(manifests)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert p.returncode != 0
    assert "cachedir" in p.stdout + p.stderr


# --- the node-labels sidecar, against an HTTPS API server ---------------------------------------


class FakeApiServer:
    """GET /api/v1/nodes/NAME with a bearer token, over TLS with a private CA."""

    def __init__(self, directory: Path, token: str) -> None:
        from tests.images.registry import make_test_ca

        self.ca, cert, key = make_test_ca(directory / "tls")
        self.token = token
        self.labels: dict[str, str] = {}
        self.status = 200
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append((self.path, self.headers.get("Authorization")))
                if self.headers.get("Authorization") != f"Bearer {server.token}":
                    self.send_error(401)
                    return
                if server.status != 200 or self.path != "/api/v1/nodes/node-a":
                    self.send_error(server.status if server.status != 200 else 404)
                    return
                body = json.dumps(
                    {"kind": "Node", "metadata": {"name": "node-a", "labels": server.labels}}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FakeApiServer]:
    server = FakeApiServer(tmp_path, token="t0ken")
    try:
        yield server
    finally:
        server.close()


def node_labels(api: FakeApiServer, tmp_path: Path, *extra: str) -> list[str]:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    return [
        sys.executable,
        str(NODE_LABELS),
        "--node=node-a",
        f"--out={tmp_path / 'labels' / 'labels.yaml'}",
        f"--api-server={api.url}",
        f"--token-file={token}",
        f"--ca-file={api.ca}",
        *extra,
    ]


def test_node_labels_become_a_labels_file_bpfman_reads(api: FakeApiServer, tmp_path: Path) -> None:
    api.labels = {
        "kubernetes.io/hostname": "node-a",
        "node-role.kubernetes.io/edge": "",
        "gpu": "true",
        "rack": "12",
        "topology.kubernetes.io/zone": "eu-west-1a",
    }
    p = subprocess.run(node_labels(api, tmp_path), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert api.requests == [("/api/v1/nodes/node-a", "Bearer t0ken")]
    out = tmp_path / "labels" / "labels.yaml"
    # bpfman's own reader: "true" and "12" stay strings, "" is a value
    assert read_labels_file(out) == api.labels


def test_node_labels_follow_label_changes_and_survive_api_errors(
    api: FakeApiServer, tmp_path: Path
) -> None:
    api.labels = {"role": "web"}
    out = tmp_path / "labels" / "labels.yaml"
    proc = subprocess.Popen(
        node_labels(api, tmp_path, "--every=0.2"), stderr=subprocess.PIPE, text=True
    )
    try:

        def wait_for(labels: dict[str, str]) -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if out.exists() and read_labels_file(out) == labels:
                    return
                time.sleep(0.05)
            raise AssertionError(f"{out} never held {labels}")

        wait_for({"role": "web"})
        api.status = 403  # RBAC removed: the last good file stays
        time.sleep(1)
        assert read_labels_file(out) == {"role": "web"}
        assert proc.poll() is None
        api.status = 200
        api.labels = {"role": "edge", "gpu": "true"}
        wait_for({"role": "edge", "gpu": "true"})
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert "cannot read node node-a" in stderr


def test_node_labels_once_fails_without_writing(api: FakeApiServer, tmp_path: Path) -> None:
    api.status = 403
    p = subprocess.run(node_labels(api, tmp_path), capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert "403" in p.stderr
    assert not (tmp_path / "labels" / "labels.yaml").exists()


# --- the Containerfile --------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Containerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def test_every_copy_source_exists_and_is_sent_to_the_build() -> None:
    ignore = (K8S / "Containerfile.containerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    sources = []
    for word, rest in instructions():
        if word == "COPY" and "--from=" not in rest:
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            sources += parts[:-1]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert source.rstrip("/") in kept, f"{source} is left out of the build context"


def test_the_build_runs_the_commands_the_repository_documents() -> None:
    runs = " ; ".join(rest for word, rest in instructions() if word == "RUN")
    # the Makefile's flags for the dispatchers
    makefile = (REPO / "Makefile").read_text()
    cflags = re.search(r"(?m)^BPF_CFLAGS := (.*)$", makefile).group(1)  # type: ignore[union-attr]
    cflags = cflags.replace("$(ARCH_INC)", "/usr/include/$(uname -m)-linux-gnu")
    assert f"clang {cflags} -c" in runs
    # scripts/install-deps.sh's editable install
    install = (REPO / "scripts" / "install-deps.sh").read_text()
    assert "-e '.[dev]' --config-settings editable_mode=compat" in install
    assert "pip install -q --no-cache-dir -e . --config-settings editable_mode=compat" in runs
    # Debian packages: those `make install` names, and what a bare base image lacks
    packages = set()
    for m in re.finditer(
        r"apt-get install -y -qq --no-install-recommends ([a-z0-9 .+-]+?) &&", runs
    ):
        packages |= set(m.group(1).split())
    documented = set(re.findall(r"need_pkgs\+=\(([a-z0-9.+-]+)\)", install))
    base_image_gaps = {"python3", "python3-venv", "ca-certificates", "openssh-client"}
    assert packages and packages <= documented | base_image_gaps, packages - documented
    assert {"libbpf1", "git"} <= packages


def test_the_dispatcher_build_step_compiles_the_dispatchers(tmp_path: Path) -> None:
    """The RUN step that compiles the dispatchers, run verbatim on a copy of what it COPYs."""
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed")
    (step,) = [r for w, r in instructions() if w == "RUN" and "clang" in r and "for src" in r]
    shutil.copytree(
        REPO / "reconciler" / "kernel" / "dispatchers",
        tmp_path / "reconciler" / "kernel" / "dispatchers",
        ignore=shutil.ignore_patterns("*.o"),
    )
    p = subprocess.run(
        ["/bin/sh", "-c", step], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr
    sources = sorted((tmp_path / "reconciler" / "kernel" / "dispatchers").glob("*.bpf.c"))
    assert sources
    for src in sources:
        obj = src.with_name(src.name.removesuffix(".bpf.c") + ".o")
        head = obj.read_bytes()[:20]
        assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 247


def test_the_image_builds_when_a_base_image_is_present(tmp_path: Path) -> None:
    """Needs the base image in podman's local storage (no registry is reached from here) and
    network for apt and pip; skipped otherwise."""
    podman = shutil.which("podman")
    base = next(rest.split("=", 1)[1] for w, rest in instructions() if w == "ARG")
    if podman is None:
        pytest.skip("podman is not installed")
    if subprocess.run([podman, "image", "exists", base], check=False).returncode != 0:
        pytest.skip(f"base image {base} is not in podman's local storage (no registry here)")
    if os.environ.get("BPFMAN_TEST_IMAGE_BUILD") != "1":
        pytest.skip("set BPFMAN_TEST_IMAGE_BUILD=1 to build (apt and pip need the network)")
    tag = f"localhost/bpfman-test:{os.getpid()}"
    build = [podman, "build", "-f", str(CONTAINERFILE), "-t", tag]
    build += ["--ignorefile", str(K8S / "Containerfile.containerignore"), str(REPO)]
    p = subprocess.run(build, capture_output=True, text=True, timeout=1800, check=False)
    try:
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        run = [podman, "run", "--rm", "--network=none", tag]
        v = subprocess.run([*run, "--version"], capture_output=True, text=True, check=False)
        assert v.returncode == 0 and v.stdout.startswith("bpfman "), v.stdout + v.stderr
        h = subprocess.run(
            [podman, "run", "--rm", "--entrypoint", "/usr/local/bin/bpfman-node-labels", tag, "-h"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert h.returncode == 0, h.stderr
    finally:
        subprocess.run([podman, "rmi", "-f", tag], capture_output=True, check=False)
