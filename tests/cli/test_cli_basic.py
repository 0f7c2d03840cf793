"""CLI behaviour that needs no kernel: version, validation, argument errors."""

from __future__ import annotations

import json
import subprocess

from tests import support
from tests.cli.conftest import EXAMPLES, ManifestDir, xdp_manifest


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([support.BPFMAN, *args], capture_output=True, text=True, input="")


def test_version():
    p = run("--version")
    assert p.returncode == 0 and p.stdout.startswith("bpfman ")


def test_validate_examples():
    p = run("validate", str(EXAMPLES))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("Success! 4 manifests valid.")


def test_validate_reports_file_line_and_changes_nothing(tmp_path):
    m = ManifestDir(tmp_path)
    m.write(
        "bad.yaml",
        xdp_manifest("fw", m.bytecode(EXAMPLES / "bytecode" / "xdp_counter.o"), priority=5000),
    )
    p = run("validate", str(tmp_path))
    assert p.returncode == 1
    assert "manifests/bad.yaml:" in p.stderr and "priority" in p.stderr
    doc = json.loads(run("validate", str(tmp_path), "--json").stdout)
    assert doc["valid"] is False and doc["problems"]


def test_missing_source_directory(tmp_path):
    p = run("validate", str(tmp_path / "nope"))
    assert p.returncode == 1 and p.stderr.startswith("Error: ") and "not a directory" in p.stderr


def test_bad_address_for_get(tmp_path):
    root = "/sys/fs/bpf/bpfman-test-absent"  # a root on bpffs (tmp_path is not): never created
    p = run("--state-dir", str(tmp_path), "--bpffs-root", root, "get", "nonsense")
    assert p.returncode == 1 and "expected KIND/NAME[INDEX]" in p.stderr


def test_without_privileges_one_clear_error(tmp_path):
    import shutil

    import pytest

    if not support.is_root() or not shutil.which("setpriv"):
        pytest.skip("needs root to drop to an unprivileged user")
    probe = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            support.BPFMAN,
            "--version",
        ],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip("the checkout is not readable by an unprivileged user")
    m = ManifestDir(tmp_path / "src")
    m.write("x.yaml", xdp_manifest("fw", m.bytecode(EXAMPLES / "bytecode" / "xdp_counter.o")))
    tmp_path.chmod(0o755)
    p = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            support.BPFMAN,
            "--state-dir",
            str(tmp_path / "state"),
            "apply",
            m.source,
            "--auto-approve",
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 1
    assert p.stderr.startswith("Error: ") and "must run as root" in p.stderr
    assert "Traceback" not in p.stderr
