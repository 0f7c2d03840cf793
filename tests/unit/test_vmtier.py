"""The VM tier's pytest plugin, with the VM replaced by a fake that runs the guest command here.

Each test runs an inner pytest on a small project whose conftest loads tests/vmtier.py and puts a
fake scripts/vm/vm.py in its place: ``boot`` runs the guest command on this host (with the guest's
environment, ``BPFMAN_IN_VM=1``), so the whole host/guest protocol is exercised without qemu.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CONFTEST = f"""
import os, subprocess, sys, types
from pathlib import Path

sys.path.insert(0, {str(REPO)!r})

fake = types.ModuleType("bpfman_vm")
fake.DEFAULT_TIMEOUT = 600


class VMError(Exception):
    pass


class Assets:
    package, release = "linux-image-fake", "fake"


class Result:
    def __init__(self, status, release, console):
        self.status, self.release, self.timed_out, self.console = status, release, False, console
        self.boot_seconds = 1.5

    def console_tail(self, lines=40):
        return self.console.read_text()[-2000:]


def prepare(log):
    if os.environ.get("FAKE_PREPARE_FAILS"):
        raise VMError("apt-get download linux-image-fake failed")
    return Assets()


def boot(assets, argv, results, *, cwd, env, timeout):
    console = results / "console.log"
    if os.environ.get("FAKE_NO_BOOT"):
        console.write_text("Kernel panic - not syncing: VFS: Unable to mount root fs\\n")
        return Result(None, None, console)
    env = {{**os.environ, **env, "BPFMAN_VM_REPORT": str(results / "reports.jsonl")}}
    env.pop("PYTEST_ADDOPTS", None)
    with open(console, "w") as out:
        proc = subprocess.run(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    (results / "guest-argv").write_text(repr(argv))
    return Result(proc.returncode, "6.1.0-fake", console)


fake.VMError, fake.prepare, fake.boot = VMError, prepare, boot
sys.modules["bpfman_vm"] = fake
pytest_plugins = ["tests.vmtier"]
"""

TESTS = """
import os
import pytest

BOOTS = []


@pytest.mark.vm
def test_vm_passes():
    assert os.environ["BPFMAN_IN_VM"] == "1"
    assert os.environ["BPFMAN_HOST_RELEASE"]


@pytest.mark.vm
def test_vm_fails():
    assert 1 + 1 == 3, "guest arithmetic"


@pytest.mark.vm
def test_vm_skips():
    pytest.skip("no such feature in the guest")


@pytest.mark.vm
@pytest.mark.parametrize("n", [1, 2])
def test_vm_param(n):
    assert n


def test_on_host():
    assert os.environ.get("BPFMAN_IN_VM") is None
"""


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_tier.py").write_text(TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    vm: in the VM\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BPFMAN_", "PYTEST_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_guest_outcomes_come_back_to_the_outer_items(tmp_path: Path) -> None:
    out = _run(tmp_path)
    text = out.stdout
    assert out.returncode == 1, text
    assert "PASSED test_tier.py::test_vm_passes" in text
    assert "FAILED test_tier.py::test_vm_fails - AssertionError: guest arithmetic" in text
    assert "SKIPPED [1] test_tier.py:21: no such feature in the guest" in text
    assert "PASSED test_tier.py::test_vm_param[1]" in text
    assert "PASSED test_tier.py::test_on_host" in text
    # The guest's traceback, not a summary of it.
    assert "assert 1 + 1 == 3" in text
    assert "ran 5 tests in one VM on kernel 6.1.0-fake (linux-image-fake" in text
    assert "1 failed, 4 passed, 1 skipped" in text


def test_one_guest_run_takes_every_selected_vm_test_and_nothing_else(tmp_path: Path) -> None:
    keep = {"BPFMAN_VM_KEEP": "1", "TMPDIR": str(tmp_path)}  # results dir inside tmp_path
    out = _run(tmp_path, "-m", "vm", "-k", "not fails", "-v", **keep)
    assert out.returncode == 0, out.stdout
    kept = out.stdout.split("console log and reports kept in ")[1].split()[0]
    assert Path(kept).parent == tmp_path
    argv = (Path(kept) / "guest-argv").read_text()
    nodeids = [a for a in eval(argv) if a.startswith("test_tier.py")]
    assert nodeids == [
        "test_tier.py::test_vm_passes",
        "test_tier.py::test_vm_skips",
        "test_tier.py::test_vm_param[1]",
        "test_tier.py::test_vm_param[2]",
    ]
    assert "test_on_host" not in out.stdout


def test_skip_vm_skips_the_tier_with_its_reason(tmp_path: Path) -> None:
    out = _run(tmp_path, **{"BPFMAN_SKIP_VM": "1"})
    assert out.returncode == 0, out.stdout
    assert "BPFMAN_SKIP_VM=1: the VM tier is skipped" in out.stdout
    assert "1 passed, 5 skipped" in out.stdout
    assert "vm tier" not in out.stdout


def test_a_vm_that_cannot_be_prepared_fails_every_vm_test(tmp_path: Path) -> None:
    out = _run(tmp_path, **{"FAKE_PREPARE_FAILS": "1"})
    assert out.returncode == 1
    assert "could not prepare the VM: apt-get download linux-image-fake failed" in out.stdout
    assert "5 failed, 1 passed" in out.stdout


def test_a_vm_that_does_not_boot_fails_with_the_console_tail(tmp_path: Path) -> None:
    out = _run(tmp_path, **{"FAKE_NO_BOOT": "1"})
    assert out.returncode == 1
    assert "reported no exit status" in out.stdout
    summary = out.stdout.split("vm tier -")[1]
    assert "guest console, last lines:\nKernel panic" in summary
    assert out.stdout.count("Unable to mount root fs") == 1  # once, not once per test
    assert "5 failed, 1 passed" in out.stdout


def test_inside_the_guest_host_tests_are_skipped(tmp_path: Path) -> None:
    out = _run(tmp_path, **{"BPFMAN_IN_VM": "1", "BPFMAN_HOST_RELEASE": "host"})
    assert "host test: inside the VM only tests marked vm run" in out.stdout
    assert "1 failed, 3 passed, 2 skipped" in out.stdout


@pytest.mark.parametrize("flag", ["-x"])
def test_maxfail_stops_after_a_guest_failure(tmp_path: Path, flag: str) -> None:
    out = _run(tmp_path, flag)
    assert "1 failed, 1 passed" in out.stdout, out.stdout
