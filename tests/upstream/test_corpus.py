"""Manifests written the way upstream writes them (tests/upstream/corpus, see its README) work
unchanged: each directory validates, plans and applies on the running kernel, its bytecode
pulled as images under upstream's names through a mirror, its network programs attached inside
a namespace this test creates (there, the primary interface is the test's veth) and checked
with bpftool; a v0.5.x application is one line naming `bpfman convert`, and what convert writes
plans and applies too."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.kernel.sys import netns as namespaces
from tests import support

pytestmark = pytest.mark.kernel

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
OBJECT = HERE / "bpf" / "app_counters.o"
IMAGES = (
    "app-counters", "xdp-pass-private", "go-xdp-counter", "go-tc-counter", "go-tcx-counter",
    "go-tracepoint-counter", "go-kprobe-counter", "go-uprobe-counter",
)  # fmt: skip


class LoopbackBridge:
    """127.0.0.1:PORT inside a network namespace, forwarded to a port on the host's loopback:
    bpfman runs inside the test's namespace and still reaches the registry, with no address
    outside loopback. The listening socket is made inside the namespace (a socket keeps the
    namespace it was created in); the connections onward are made from this one."""

    def __init__(self, netns: str, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        with namespaces.enter(netns):
            self.listener = socket.socket()
            self.listener.bind(("127.0.0.1", 0))
            self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                inside, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                outside = socket.create_connection(self.target, timeout=10)
                outside.settimeout(None)
            except OSError:
                inside.close()  # the registry is gone: say so to the client, keep serving
                continue
            self.open += [inside, outside]
            for a, b in ((inside, outside), (outside, inside)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        for s in self.open:
            s.close()


class Host:
    """bpfman as a host inside the test's namespace: its own bpffs root, state and config."""

    def __init__(self, tmp: Path, bpffs_root: Path, netns: str, mirror: str) -> None:
        self.root, self.state, self.netns = bpffs_root, tmp / "state", netns
        secrets = tmp / "pull-secrets"
        secrets.mkdir()
        (secrets / "regcred.json").write_text(json.dumps({"auths": {}}))
        self.config = tmp / "config.yaml"
        self.config.write_text(
            json.dumps(
                {
                    "images": {
                        "insecure_registries": [mirror],
                        "mirrors": {"quay.io": mirror},
                        "pull_secrets_dir": str(secrets),
                    }
                }
            )
        )

    def run(self, *args: str, expect: int | None = 0) -> subprocess.CompletedProcess[str]:
        cmd = ["nsenter", f"--net={self.netns}", "--", support.BPFMAN, "--bpffs-root",
               str(self.root), "--state-dir", str(self.state), "--config", str(self.config),
               "--no-color", *args]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("BPFMAN_")}
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, input="")
        if expect is not None:
            assert p.returncode == expect, f"bpfman {' '.join(args)}: {p.stdout}{p.stderr}"
        return p

    def plan(self, *source: str) -> dict:
        """The plan's JSON; with errors (exit 1) too: tests say which errors are expected."""
        p = self.run("plan", *source, "--json", expect=None)
        assert p.returncode in (0, 1) and p.stdout, p.stderr
        return json.loads(p.stdout)


@pytest.fixture
def host(tmp_path, bpffs_root, registry, veth, no_leaks) -> Iterator[Host]:
    # In the test's namespace, eth0 carries the default route: the "primary node interface".
    support.sh("ip", "-n", veth.ns_a, "addr", "add", "10.231.0.1/24", "dev", "eth0")
    support.sh("ip", "-n", veth.ns_b, "addr", "add", "10.231.0.2/24", "dev", "peer0")
    support.sh("ip", "-n", veth.ns_a, "route", "add", "default", "via", "10.231.0.2")
    bridge = LoopbackBridge(veth.netns_a, int(registry.host.rsplit(":", 1)[1]))
    h = Host(tmp_path, bpffs_root, veth.netns_a, f"127.0.0.1:{bridge.port}")
    for name in IMAGES:  # upstream's names, on the mirror: what quay.io/... resolves to here
        h.run("image", "build", "--bytecode", str(OBJECT), "--tag",
              f"127.0.0.1:{bridge.port}/bpfman-bytecode/{name}:latest", "--push")  # fmt: skip
    try:
        yield h
    finally:
        h.run("destroy", "--auto-approve", expect=None)
        bridge.close()


def prog_names() -> set[str]:
    return {p.get("name", "") for p in support.bpftool_json("prog", "show")}  # type: ignore[union-attr]


def tcx_programs() -> set[str]:
    """Names of the programs on tcx links (bpftool 7.1 predates tcx: the link type is its
    number, 11, and net show does not list them)."""
    names = {p["id"]: p.get("name", "") for p in support.bpftool_json("prog", "show")}  # type: ignore[union-attr,index]
    return {
        names.get(link["prog_id"], "")
        for link in support.bpftool_json("link", "show")  # type: ignore[union-attr]
        if link.get("type") in ("tcx", 11)  # type: ignore[union-attr]
    }


def net_in(netns: str) -> dict:
    out = subprocess.run(
        ["nsenter", f"--net={netns}", "--", "bpftool", "-j", "net", "show", "dev", "eth0"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (doc,) = json.loads(out)
    return doc


ADDRESS = re.compile(r"\b[A-Za-z]+/[a-z0-9][-a-z0-9.]*\[[^\]\s]+\]")
# What a host's kernel cannot do (this one has no kprobes, fentry or freplace): each said in one
# line naming the manifest's address and line and what to do about it.
CANNOT = ("kernel", "does not support")


def creates(plan: dict) -> set[str]:
    return {c["address"] for c in plan["resource_changes"] if c["change"]["actions"] == ["create"]}


def blocked(plan: dict) -> list[str]:
    """The addresses this host's kernel cannot take, from the plan's errors, which must all be
    of that one kind: a hook several programs want without freplace is left out whole."""
    out = []
    for error in plan["errors"]:
        assert all(words in error for words in CANNOT), error
        assert ("run it on a kernel that has them" in error) or ("keep one program" in error)
        named = ADDRESS.findall(error)
        assert named, error
        out += named  # a hook's programs go together (--exclude keeps hooks whole)
    return out


def apply_what_the_host_allows(host: Host, *source: str) -> set[str]:
    """Plan (the errors all things the kernel cannot do), then apply everything else; the
    addresses applied."""
    plan = host.plan(*source)
    excluded = blocked(plan)
    narrowed = [a for x in excluded for a in ("--exclude", x)]
    again = host.plan(*source, *narrowed)
    assert not again["errors"], again["errors"]
    host.run("apply", *source, *narrowed, "--auto-approve")
    return creates(plan) - set(excluded)


def test_the_operator_samples_plan_and_apply_unchanged(host: Host) -> None:
    plan = host.plan(str(CORPUS / "operator"))
    assert plan["skipped_resources"] == {
        "bpfman.io/v1alpha1 ClusterBpfApplicationState": 1,
        "bpfman.io/v1alpha1 Config": 1,
    }
    made = creates(plan)
    assert {
        "ClusterBpfApplication/corpus-cluster-app[xdp_stats:eth0]",
        "ClusterBpfApplication/corpus-cluster-app[stats:eth0/ingress]",
        "ClusterBpfApplication/corpus-cluster-app[stats:eth0/egress]",
        "ClusterBpfApplication/corpus-cluster-app[tcx_stats:eth0/ingress]",
        "ClusterBpfApplication/corpus-cluster-app[fentry_counter:do_unlinkat]",
        "ClusterBpfApplication/corpus-cluster-app[kprobe_counter:try_to_wake_up]",
        "ClusterBpfApplication/corpus-cluster-app[tracepoint_kill_recorder:syscalls/sys_enter_kill]",
        "ClusterBpfApplication/corpus-cluster-app[uprobe_counter:libc:malloc]",
        "ClusterBpfApplication/corpus-if-discovery[tcx_stats:eth0/egress]",
        "ClusterBpfApplication/corpus-private[xdp_stats:eth0]",
        "BpfApplication/corpus-app[xdp_stats:eth0]",
        "BpfApplication/corpus-app[tcx_stats:eth0/egress]",
    } <= made, sorted(made)
    assert not any("corpus-no-links" in a for a in made)
    applied = apply_what_the_host_allows(host, str(CORPUS / "operator"))
    names = prog_names()
    assert {"tracepoint_kill_recorder"[:15], "uprobe_counter", "uretprobe_count"} <= {
        n[:15] for n in names
    }, names
    # Seen by bpftool, in the test's namespace. This kernel has no freplace, so the three XDP
    # programs on eth0 (a dispatcher's work) were left out, and one TCX link per hook remains.
    xdp_applied = any("[xdp_stats:eth0]" in a for a in applied)
    assert bool(net_in(host.netns)["xdp"]) == xdp_applied
    assert "tcx_stats" in tcx_programs()
    assert any("tcx_stats" in a for a in applied)
    assert not host.plan(str(CORPUS / "operator"), *excluding(host, "operator"))["has_changes"]


def excluding(host: Host, corpus_dir: str, *more: str) -> list[str]:
    found = blocked(host.plan(str(CORPUS / corpus_dir), *more))
    return [a for x in found for a in ("--exclude", x)]


def test_the_examples_overlays_plan_and_apply_unchanged(host: Host) -> None:
    # Each overlay alone, as bpfman's examples are deployed one at a time (chosen with --path,
    # so that its ../../base is inside the source).
    for example in ("go-xdp-counter", "go-tc-counter", "go-tcx-counter",
                    "go-tracepoint-counter", "go-kprobe-counter"):  # fmt: skip
        plan = host.plan(str(CORPUS), "--path", f"examples/default/{example}")
        assert len(creates(plan)) == 1
        blocked(plan)  # nothing but what the kernel cannot do
        assert plan["skipped_resources"] == {
            "apps/v1 DaemonSet": 1, "v1 Namespace": 1, "v1 ServiceAccount": 1,
        }  # fmt: skip
    # The map-sharing example names its owner, which must be in the same source.
    alone = host.run("plan", str(CORPUS), "--path", "examples/default/go-xdp-counter-sharing-map",
                     expect=1).stderr  # fmt: skip
    assert "bpfman.io/ownedByProgram=go-xdp-counter-example" in alone
    assert "--path examples/default/go-xdp-counter-sharing-map are read" in alone
    plan = host.plan(str(CORPUS), "--path", "examples/all")
    (shared,) = [c for c in plan["resource_changes"] if "sharing-map" in c["address"]]
    assert shared["change"]["uses_maps_of"] == [
        "ClusterBpfApplication/go-xdp-counter-example[xdp_stats:eth0]"
    ], shared
    applied = apply_what_the_host_allows(host, str(CORPUS), "--path", "examples/all")
    assert any("tracepoint" in a for a in applied) and any("tcx" in a for a in applied)
    assert "tracepoint_kil" in {n[:14] for n in prog_names()}
    assert "tcx_stats" in tcx_programs()


def test_v05_kinds_plan_and_apply_and_a_v05_application_is_converted(
    host: Host, tmp_path: Path
) -> None:
    made = creates(host.plan(str(CORPUS / "v05")))
    assert "XdpProgram/go-xdp-counter-example[eth0]" in made and len(made) == 8, sorted(made)
    applied = apply_what_the_host_allows(host, str(CORPUS / "v05"))
    assert "UprobeProgram/go-uprobe-counter-example[libc:malloc]" in applied, applied
    assert "uprobe_counter" in prog_names()

    p = host.run("validate", str(CORPUS / "v05-application"), expect=1)
    assert p.stderr.count("\n  ") == 1, p.stderr  # one problem
    assert "v0.5.x's BpfApplication format" in p.stderr and "bpfman convert" in p.stderr
    converted = tmp_path / "converted"
    shutil.copytree(CORPUS / "v05-application", converted)
    host.run("convert", str(converted / "bytecode.yaml"), "--write")
    made = creates(host.plan(str(converted)))
    assert "ClusterBpfApplication/app-counter[xdp_stats:eth0]" in made, sorted(made)
    applied = apply_what_the_host_allows(host, str(converted))
    assert "ClusterBpfApplication/app-counter[xdp_stats:eth0]" in applied


def test_container_selectors_need_a_runtime_and_say_which(host: Host, tmp_path: Path) -> None:
    """Where no container runtime answers, the plan says so in one line per selector, naming
    the socket it tried and what to do (tests/containers runs them against a real podman)."""
    host.run("validate", str(CORPUS / "containers"))
    config = json.loads(host.config.read_text())
    config["containers"] = {"runtime": "podman", "socket": str(tmp_path / "no-podman.sock")}
    host.config.write_text(json.dumps(config))
    p = host.run("plan", str(CORPUS / "containers"), expect=1)
    assert str(tmp_path / "no-podman.sock") in p.stderr, p.stderr
