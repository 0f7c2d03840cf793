"""`bpfman convert` and the v0.5.x message of `bpfman validate`, through the installed executable
(no kernel: neither reads nor changes the host)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests import support

V05_APP = """\
apiVersion: bpfman.io/v1alpha1
kind: BpfApplication
metadata:
  name: app-counter
spec:
  nodeselector: {}
  bytecode:
    image:
      url: quay.io/bpfman-bytecode/go-app-counter:latest
      imagepullpolicy: Always
  programs:
    - type: Tracepoint
      tracepoint:
        bpffunctionname: tracepoint_kill_recorder
        names: [syscalls/sys_enter_kill]
    - type: XDP
      xdp:
        bpffunctionname: xdp_stats
        interfaceselector: {primarynodeinterface: true}
        priority: 55
"""

CONVERTED = """\
apiVersion: bpfman.io/v1alpha1
kind: ClusterBpfApplication
metadata:
  name: app-counter
spec:
  nodeSelector: {}
  byteCode:
    image:
      url: quay.io/bpfman-bytecode/go-app-counter:latest
      imagePullPolicy: Always
  programs:
    - name: tracepoint_kill_recorder
      type: TracePoint
      tracepoint:
        links:
          - name: syscalls/sys_enter_kill
    - name: xdp_stats
      type: XDP
      xdp:
        links:
          - interfaceSelector:
              primaryNodeInterface: true
            priority: 55
"""


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [support.BPFMAN, *args], cwd=cwd, capture_output=True, text=True, input=""
    )


def test_convert_prints_a_diff_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "app.yaml").write_text(V05_APP)
    p = run(tmp_path, "convert", "app.yaml")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("--- a/app.yaml\n+++ b/app.yaml\n@@ ")
    assert "-kind: BpfApplication\n+kind: ClusterBpfApplication\n" in p.stdout
    assert "-        bpffunctionname: xdp_stats\n" in p.stdout
    assert "+    - name: xdp_stats\n" in p.stdout
    assert (tmp_path / "app.yaml").read_text() == V05_APP


def test_convert_write_rewrites_the_file_and_a_second_run_changes_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / "app.yaml").write_text(V05_APP)
    p = run(tmp_path, "convert", "--write", "app.yaml")
    assert p.returncode == 0, p.stderr
    assert p.stdout.endswith("Rewrote 1 file.\n")
    assert (tmp_path / "app.yaml").read_text() == CONVERTED
    again = run(tmp_path, "convert", "app.yaml")
    assert (again.returncode, again.stdout) == (
        0,
        "No changes: every manifest is already in the current form.\n",
    )


def test_convert_refuses_what_it_cannot_convert_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "app.yaml").write_text(
        V05_APP.replace("priority: 55", "priority: 55\n        color: red")
    )
    p = run(tmp_path, "convert", "--write", "app.yaml")
    assert p.returncode == 1
    assert p.stderr == (
        "Error: app.yaml:21: spec.programs[1].xdp.color: 'color' of an XDP program has no "
        "equivalent in the current format; remove it or rewrite it by hand; nothing was written\n"
    )
    assert "color: red" in (tmp_path / "app.yaml").read_text()


def test_validate_names_the_v05_format_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "app.yaml").write_text(V05_APP)
    p = run(tmp_path, "validate", "app.yaml")
    assert p.returncode == 1
    problems = [line for line in p.stderr.splitlines() if line.startswith("  ")]
    assert problems == [
        "  app.yaml:2: kind: this is bpfman-operator v0.5.x's BpfApplication format (lowercase "
        "bytecode and nodeselector, each program's settings beside its bpffunctionname), which "
        "current bpfman-operator and bpfman no longer read; `bpfman convert app.yaml` rewrites "
        "it into the current one (add --write to save it)"
    ]
