from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import support

EXAMPLES = support.REPO / "manifests" / "examples"
TEST_BPF = support.REPO / "tests" / "bpf"


@dataclass
class Bpfman:
    """Runs the installed ``bpfman`` executable as a user would, with a private root and state."""

    root: Path
    state: Path
    netns: str | None = None

    def run(self, *args: str, check: bool | None = None, input: str | None = None, expect: int = 0):
        cmd = [support.BPFMAN, "--bpffs-root", str(self.root), "--state-dir", str(self.state)]
        cmd += list(args)
        if self.netns:
            cmd = ["nsenter", f"--net=/run/netns/{self.netns}", "--", *cmd]
        env = {k: v for k, v in os.environ.items() if not k.startswith("BPFMAN_")}
        p = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            input=input if input is not None else "",
            env=env,
        )
        if expect is not None and p.returncode != expect:
            raise AssertionError(
                f"bpfman {' '.join(args)} exited {p.returncode}, expected {expect}\n"
                f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}"
            )
        return p


@pytest.fixture
def bpfman(bpffs_root: Path, state_dir: Path):
    b = Bpfman(bpffs_root, state_dir)
    yield b
    # Whatever a test left, take it down (and do not mask the test's own failure).
    subprocess.run(
        [
            support.BPFMAN,
            "--bpffs-root",
            str(bpffs_root),
            "--state-dir",
            str(state_dir),
            "destroy",
            "--auto-approve",
        ],
        capture_output=True,
    )


class ManifestDir:
    """A source directory with bytecode copied in, manifests written by the test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "bytecode").mkdir(parents=True, exist_ok=True)

    def bytecode(self, src: Path, name: str | None = None) -> str:
        dst = self.root / "bytecode" / (name or src.name)
        shutil.copy(src, dst)
        return f"../bytecode/{dst.name}"

    def write(self, rel: str, text: str) -> Path:
        p = self.root / "manifests" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    def remove(self, rel: str) -> None:
        (self.root / "manifests" / rel).unlink()

    @property
    def source(self) -> str:
        return str(self.root)


@pytest.fixture
def mdir(tmp_path: Path) -> ManifestDir:
    return ManifestDir(tmp_path / "src")


def xdp_manifest(
    name: str, bytecode: str, iface: str = "eth0", function: str = "xdp_stats", priority: int = 55
) -> str:
    return f"""apiVersion: bpfman.io/v1alpha1
kind: XdpProgram
metadata:
  name: {name}
spec:
  bpffunctionname: {function}
  bytecode:
    path: {bytecode}
  interfaceselector:
    interfaces: [{iface}]
  priority: {priority}
"""


def tcx_manifest(
    name: str,
    bytecode: str,
    iface: str = "eth0",
    priority: int = 50,
    direction: str = "ingress",
    function: str = "tcx_stats",
) -> str:
    return f"""apiVersion: bpfman.io/v1alpha1
kind: TcxProgram
metadata:
  name: {name}
spec:
  bpffunctionname: {function}
  bytecode:
    path: {bytecode}
  interfaceselector:
    interfaces: [{iface}]
  direction: {direction}
  priority: {priority}
"""


def tracepoint_manifest(name: str, bytecode: str, tp: str, function: str = "tp_hits") -> str:
    return f"""apiVersion: bpfman.io/v1alpha1
kind: TracepointProgram
metadata:
  name: {name}
spec:
  bpffunctionname: {function}
  bytecode:
    path: {bytecode}
  names: [{tp}]
"""


def uprobe_manifest(
    name: str, bytecode: str, target: str, func: str, function: str = "uprobe_hits"
) -> str:
    return f"""apiVersion: bpfman.io/v1alpha1
kind: UprobeProgram
metadata:
  name: {name}
spec:
  bpffunctionname: {function}
  bytecode:
    path: {bytecode}
  target: {target}
  func_name: {func}
"""
