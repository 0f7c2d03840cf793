"""A kustomize overlay, as upstream lays out its examples, planned and applied on the running
kernel: the base outside the overlay's directory is read through it, resources of other API
groups are counted once in the plan header, the attached tracepoints are seen with bpftool, and
an edit to the base (outside the source) is seen by the remembered no-op plan."""

from __future__ import annotations

import json

import pytest

from reconciler import cli, commands
from reconciler.spec import kustomize
from tests import support
from tests.cli.conftest import EXAMPLES, tracepoint_manifest

pytestmark = pytest.mark.kernel

TP_O = EXAMPLES / "bytecode" / "tracepoint_counter.o"
OTHERS = """apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec: {template: {spec: {containers: [{name: a, image: quay.io/x/agent:latest}]}}}
---
apiVersion: v1
kind: Namespace
metadata: {name: agent}
"""


def perf_links() -> set[int]:
    return {
        link["id"]
        for link in support.bpftool_json("link", "show")  # type: ignore[union-attr]
        if link.get("type") == "perf_event"  # type: ignore[union-attr]
    }


def test_an_overlay_plans_applies_and_sees_its_base_change(
    no_leaks, bpfman, mdir, monkeypatch, capsys
) -> None:
    before = perf_links()
    code = mdir.bytecode(TP_O).replace("../", "../../../")
    mdir.write("base/tp/tp.yaml", tracepoint_manifest("tp", code, "syscalls/sys_enter_getppid"))
    mdir.write("base/tp/agent.yaml", OTHERS)
    mdir.write("base/tp/kustomization.yaml", "resources: [tp.yaml, agent.yaml]\n")
    mdir.write(
        "default/tp/kustomization.yaml",
        "resources: [../../base/tp]\nnamePrefix: prod-\ncommonLabels: {env: prod}\n",
    )
    # The overlay alone as the source: its base is outside it, so that is refused with the fix.
    alone = bpfman.run("plan", str(mdir.root / "manifests/default/tp"), expect=1).stderr
    assert "../../base/tp is outside the source" in alone and "--path" in alone
    # The repository as the source, the overlay chosen with --path (as for a git source).
    overlay = (str(mdir.root), "--path", "manifests/default/tp")
    out = bpfman.run("--no-color", "plan", *overlay).stdout
    assert (
        "Skipped 2 resources the kustomization lists that bpfman does not load "
        "(1 apps/v1 DaemonSet, 1 v1 Namespace)." in out
    )
    assert out.count("Skipped 2 resources") == 1
    assert "TracepointProgram/prod-tp[syscalls/sys_enter_getppid] will be loaded" in out
    doc = json.loads(bpfman.run("plan", *overlay, "--json").stdout)
    assert doc["skipped_resources"] == {"apps/v1 DaemonSet": 1, "v1 Namespace": 1}
    bpfman.run("apply", *overlay, "--auto-approve")
    assert len(perf_links() - before) == 1
    # Remembered as a no-op, answered without reading a manifest or building the kustomization
    # (the files it read were recorded); then the base (outside the overlay's directory) changes.
    assert "No changes." in bpfman.run("--no-color", "plan", *overlay).stdout

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("loaded or built again although nothing changed")

    with monkeypatch.context() as m:
        m.setattr(commands, "load_desired", refuse)
        m.setattr(commands, "plan_for", refuse)
        m.setattr(kustomize, "build", refuse)
        argv = ["--bpffs-root", str(bpfman.root), "--state-dir", str(bpfman.state)]
        with pytest.raises(SystemExit) as done:
            cli.main([*argv, "--no-color", "plan", *overlay])
        assert done.value.code == 0
        assert "No changes." in capsys.readouterr().out
    mdir.write(
        "base/tp/tp.yaml",
        tracepoint_manifest("tp", code, "syscalls/sys_enter_getppid, syscalls/sys_enter_getpid"),
    )
    out = bpfman.run("--no-color", "plan", *overlay).stdout
    assert "TracepointProgram/prod-tp[syscalls/sys_enter_getpid] will be loaded" in out
    bpfman.run("apply", *overlay, "--auto-approve")
    assert len(perf_links() - before) == 2
