"""Upstream-style manifests naming bytecode images plan and apply through a local mirror, on the
real kernel: the plan shows the reference and the digest it resolved to, a moved tag is a
replacement, a saved plan applies exactly the image it showed, and bpftool sees the programs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests import support
from tests.images.registry import Registry

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]
V1 = REPO / "tests" / "bpf" / "tracepoint_counter.o"
V2 = REPO / "tests" / "bpf" / "tracepoint_counter_v2.o"
URL = "quay.io/bpfman-bytecode/tracepoint-counter:latest"
ADDRESS = "TracepointProgram/tp-images[syscalls/sys_enter_getpid]"

# As upstream writes it (bpfman's examples/config), with a host's own name for it.
MANIFEST = """apiVersion: bpfman.io/v1alpha1
kind: TracepointProgram
metadata:
  name: tp-images
  labels: {app: counter}
spec:
  bpffunctionname: tp_count
  names: [syscalls/sys_enter_getpid]
  bytecode:
    image:
      url: %s
      imagepullpolicy: %s
"""


class Host:
    def __init__(self, tmp: Path, root: Path, registry: Registry) -> None:
        self.root, self.state, self.src = root, tmp / "state", tmp / "src"
        self.src.mkdir()
        self.config = tmp / "config.yaml"
        self.config.write_text(
            json.dumps(
                {
                    "images": {
                        "insecure_registries": [registry.host],
                        "mirrors": {"quay.io": registry.host},
                    }
                }
            )
        )

    def manifest(self, policy: str = "IfNotPresent", url: str = URL) -> None:
        (self.src / "tp.yaml").write_text(MANIFEST % (url, policy))

    def run(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BPFMAN_")}
        p = subprocess.run(
            [support.BPFMAN, "--bpffs-root", str(self.root), "--state-dir", str(self.state),
             "--config", str(self.config), *args],
            capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120,
        )  # fmt: skip
        assert p.returncode == expect, f"bpfman {' '.join(args)}: {p.stdout}{p.stderr}"
        return p

    def plan(self, *more: str) -> dict:
        return json.loads(self.run("plan", str(self.src), "--json", *more).stdout)

    def apply(self, *what: str) -> None:
        self.run("apply", *(what or (str(self.src),)), "--auto-approve")


def build(host: Host, obj: Path, registry: Registry) -> str:
    """Build and push ``obj`` as the upstream-named image (on the mirror); its digest."""
    tag = f"{registry.host}/bpfman-bytecode/tracepoint-counter:latest"
    out = host.run("image", "build", "--bytecode", str(obj), "--tag", tag, "--push").stdout
    return out.split("@", 1)[1].split()[0]


def kernel_tag() -> str:
    """The kernel's tag (hash of the instructions) of our program, read with bpftool; "" when
    no program of that name is loaded (bpftool then exits non-zero)."""
    p = subprocess.run(
        ["bpftool", "-j", "prog", "show", "name", "tp_count"], capture_output=True, text=True
    )
    if p.returncode != 0 or not p.stdout.strip():
        return ""
    progs = json.loads(p.stdout)
    progs = progs if isinstance(progs, list) else [progs]
    return ",".join(sorted({prog["tag"] for prog in progs}))


def settled() -> str:
    """kernel_tag() once programs unloaded just before are gone: the kernel frees an unpinned
    program with deferred work, and bpftool shows it until then."""
    deadline = time.monotonic() + 30
    while kernel_tag() and time.monotonic() < deadline:
        time.sleep(0.1)
    return kernel_tag()


@pytest.fixture
def host(tmp_path, bpffs_root, registry) -> Host:
    h = Host(tmp_path, bpffs_root, registry)
    yield h
    subprocess.run(
        [support.BPFMAN, "--bpffs-root", str(bpffs_root), "--state-dir", str(h.state),
         "destroy", "--auto-approve"],
        capture_output=True,
    )  # fmt: skip


def _change(plan: dict) -> dict:
    (change,) = [c for c in plan["resource_changes"] if c["address"] == ADDRESS]
    return change["change"]


def test_an_image_manifest_plans_applies_and_replaces_when_its_tag_moves(host, registry):
    first = build(host, V1, registry)
    host.manifest()
    change = _change(host.plan())
    assert change["actions"] == ["create"]
    assert change["after"]["bytecode"] == URL
    assert change["after"]["image_digest"] == first
    assert settled() == ""
    host.apply()
    v1_tag = kernel_tag()
    assert v1_tag != ""
    assert host.plan()["has_changes"] is False

    second = build(host, V2, registry)
    # IfNotPresent: the cache answers, the moved tag is not seen.
    assert host.plan()["has_changes"] is False
    host.manifest("Always")
    change = _change(host.plan())
    assert sorted(change["actions"]) == ["create", "delete"]  # a replacement
    assert change["before"]["image_digest"] == first and change["after"]["image_digest"] == second
    assert "image_digest" in change["replace_paths"]
    host.apply()
    assert set(kernel_tag().split(",")) - {v1_tag, ""}, "the second image's program is loaded"
    assert host.plan()["has_changes"] is False


def test_a_saved_plan_applies_the_digest_it_showed(host, registry, tmp_path):
    first = build(host, V1, registry)
    host.manifest("Always")
    host.apply()
    v1_tag = kernel_tag()
    host.run("destroy", "--auto-approve")
    assert settled() == ""

    planfile = tmp_path / "plan.bin"
    host.run("plan", str(host.src), "--out", str(planfile))
    build(host, V2, registry)  # the tag moves after the plan was saved
    host.apply(str(planfile))
    assert kernel_tag() == v1_tag  # the first image's program, not the tag's new one
    record = json.loads(host.run("get", ADDRESS, "--json").stdout)
    assert first in json.dumps(record)
    # The next plan (policy Always) sees the moved tag.
    assert sorted(_change(host.plan())["actions"]) == ["create", "delete"]


def test_an_image_whose_object_lacks_the_function_is_a_plan_error(host, registry):
    build(host, V1, registry)
    (host.src / "tp.yaml").write_text(
        (MANIFEST % (URL, "IfNotPresent")).replace("tp_count", "nope")
    )
    p = host.run("plan", str(host.src), expect=1)
    assert "tp.yaml:7: spec.bpffunctionname: function 'nope' is not in " + URL in p.stderr


def test_an_image_that_cannot_be_pulled_is_a_plan_error_naming_the_field(host, registry):
    host.manifest(url="quay.io/bpfman-bytecode/nothing-here:v1")
    p = host.run("plan", str(host.src), expect=1)
    assert "tp.yaml:11: spec.bytecode.image.url:" in p.stderr and "not found" in p.stderr


def test_plan_refuses_unsigned_images_when_the_host_requires_signatures(host, registry, tmp_path):
    """CI catches it at plan time, before any host loads the image."""
    from tests.images.test_interop_and_signing import _keypair

    build(host, V1, registry)
    private, public = _keypair(tmp_path, "release")
    config = json.loads(host.config.read_text())
    config["signing"] = {"require": True, "keys": [str(public)]}
    host.config.write_text(json.dumps(config))
    host.manifest()
    p = host.run("plan", str(host.src), expect=1)
    assert "tp.yaml:11: spec.bytecode.image.url:" in p.stderr and "is not signed" in p.stderr
    # Signed under the name the manifests use; the signature goes to the mirror.
    host.run("image", "sign", "--key", str(private), URL)
    change = _change(host.plan())
    assert change["actions"] == ["create"]


def test_a_keyless_signed_image_plans_applies_and_survives_prune(host, registry, tmp_path):
    """signing.identities on a host: plan names a wrong signer, the right one loads, and prune
    keeps the bundle, so a later plan verifies from the cache with the registry gone."""
    from tests.images.sigstore_ca import PrivateSigstore
    from tests.images.test_keyless import ISSUER, RELEASE, attach

    digest = build(host, V1, registry)
    ca = PrivateSigstore()
    root = ca.write_trusted_root(tmp_path / "trusted_root.json")
    config = json.loads(host.config.read_text())
    config["signing"] = {
        "require": True,
        "identities": [{"issuer": ISSUER, "subject": RELEASE}],
        "trusted_root": str(root),
    }
    host.config.write_text(json.dumps(config))
    host.manifest()
    repo = "bpfman-bytecode/tracepoint-counter"  # the mirror's copy of the upstream name
    attach(registry, repo, digest, ca.bundle(digest, "someone@example.org", ISSUER))
    p = host.run("plan", str(host.src), expect=1)
    assert "tp.yaml:11: spec.bytecode.image.url:" in p.stderr, p.stderr
    assert f"a valid keyless signature by someone@example.org (issuer {ISSUER})" in p.stderr
    assert kernel_tag() == ""
    attach(registry, repo, digest, ca.bundle(digest, RELEASE, ISSUER))
    host.manifest("Always")
    assert _change(host.plan())["actions"] == ["create"]
    host.apply()
    assert kernel_tag() != ""
    host.run("image", "prune")
    registry.stop()
    host.manifest("IfNotPresent")
    assert host.plan()["has_changes"] is False


def test_the_watcher_follows_a_moved_tag_and_keeps_the_program_when_the_registry_is_down(
    host, registry, tmp_path
):
    """bpfman watch with an image manifest (policy Always): the first reconcile loads it, a
    reconcile after the tag moved replaces it, and one with the registry gone fails, saying why,
    and leaves the program running."""
    build(host, V1, registry)
    host.manifest("Always")
    log = tmp_path / "watch.log"
    base = [support.BPFMAN, "--bpffs-root", str(host.root), "--state-dir", str(host.state),
            "--config", str(host.config)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPFMAN_")}
    with log.open("ab") as out:
        proc = subprocess.Popen([*base, "watch", "--interval", "3600", str(host.src)],
                                stdout=out, stderr=out, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "result=applied" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        v1_tag = kernel_tag()
        assert v1_tag != "", log.read_text()

        build(host, V2, registry)
        asked = subprocess.run([*base, "reconcile"], capture_output=True, text=True, timeout=120)
        assert asked.returncode == 0 and asked.stdout.startswith("Reconciled: applied"), asked
        assert set(kernel_tag().split(",")) - {v1_tag, ""}, "the second image's program"
        assert settled() not in ("", v1_tag)
        v2_tag = kernel_tag()

        registry.stop()
        asked = subprocess.run([*base, "reconcile"], capture_output=True, text=True, timeout=120)
        assert asked.returncode != 0, asked
        assert "tp.yaml:11: spec.bytecode.image.url" in log.read_text()
        assert kernel_tag() == v2_tag  # a failed reconcile unloads nothing
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=60) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_prune_keeps_what_records_and_manifests_name(host, registry, tmp_path):
    build(host, V1, registry)
    host.manifest()
    host.apply()
    other = f"{registry.host}/bpfman/unrelated:v1"
    host.run("image", "build", "--bytecode", str(V2), "--tag", other, "--push")
    blobs = host.state / "images" / "blobs" / "sha256"
    before = {p.name for p in blobs.iterdir()}
    assert "removed 0" not in host.run("image", "prune", "--dry-run").stdout
    assert {p.name for p in blobs.iterdir()} == before  # a dry run removes nothing
    host.run("image", "prune")
    after = {p.name for p in blobs.iterdir()}
    assert after < before
    # What the record names is whole: a plan needs no registry.
    registry.stop()
    assert host.plan()["has_changes"] is False
    p = host.run("image", "pull", other, "--pull-policy", "Never", expect=1)
    assert "not in the image cache" in p.stderr


APPLICATION = """apiVersion: bpfman.io/v1alpha1
kind: ClusterBpfApplication
metadata:
  name: counter-app
spec:
  byteCode:
    image:
      url: %s
      imagePullPolicy: Always
  programs:
    - name: tp_count
      type: TracePoint
      tracepoint:
        links:
          - name: syscalls/sys_enter_getpid
"""


def test_an_application_names_its_image_in_camel_case(host, registry):
    digest = build(host, V1, registry)
    (host.src / "app.yaml").write_text(APPLICATION % URL)
    plan = host.plan()
    (change,) = plan["resource_changes"]
    assert (
        change["address"] == "ClusterBpfApplication/counter-app[tp_count:syscalls/sys_enter_getpid]"
    )
    assert change["change"]["after"]["image_digest"] == digest
    host.apply()
    assert kernel_tag() != ""
    assert host.plan()["has_changes"] is False


def test_an_image_built_by_another_tool_is_loaded_and_attached(host, registry, tmp_path):
    from tests.images.test_interop_and_signing import umoci_image

    labels = {"io.ebpf.programs": '{"tp_count":"tracepoint"}', "io.ebpf.maps": "{}"}
    destination = f"{registry.host}/bpfman-bytecode/tracepoint-counter:latest"
    umoci_image(tmp_path / "umoci", V1, labels, destination, "v2s2")
    host.manifest()
    assert _change(host.plan())["after"]["image_digest"].startswith("sha256:")
    host.apply()
    assert kernel_tag() != ""  # bpftool shows tp_count loaded
    assert host.plan()["has_changes"] is False
