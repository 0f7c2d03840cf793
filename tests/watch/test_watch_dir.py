"""``bpfman watch`` on a directory, run as a real subprocess: edits reach the kernel (seen with
bpftool), a broken revision keeps the last good state, an emptied source is refused, drift is
repaired or reported, SIGTERM unloads nothing, and a restart changes nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import support
from tests.cli.conftest import EXAMPLES, tracepoint_manifest

pytestmark = pytest.mark.kernel

TP_O = EXAMPLES / "bytecode" / "tracepoint_counter.o"
PATIENCE = 30.0  # a bound on waiting for the watcher, not a measurement


def perf_links() -> dict[int, int]:
    """link id -> program id of every perf_event link (tracepoints), from bpftool."""
    return {
        link["id"]: link["prog_id"]
        for link in support.bpftool_json("link", "show")  # type: ignore[union-attr]
        if link.get("type") == "perf_event"  # type: ignore[union-attr]
    }


def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {PATIENCE:g}s: {what}")
        time.sleep(0.05)


def write_atomically(path: Path, text: str) -> None:
    """As editors save: a temporary file renamed over the old one."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Watch:
    def __init__(self, root: Path, state: Path, log: Path) -> None:
        self.root, self.state, self.log = root, state, log
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> list[str]:
        return [
            support.BPFMAN,
            "--bpffs-root",
            str(self.root),
            "--state-dir",
            str(self.state),
            *args,
        ]

    def start(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BPFMAN_")}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.cli("watch", *args), stdout=out, stderr=out, env=env)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def text(self) -> str:
        return self.log.read_text()

    def reconciles(self) -> list[str]:
        return [line for line in self.text().splitlines() if " reconcile " in line]


@pytest.fixture
def watch(bpffs_root: Path, state_dir: Path, tmp_path: Path, no_leaks: None) -> Iterator[Watch]:
    w = Watch(bpffs_root, state_dir, tmp_path / "watch.log")
    try:
        yield w
    finally:
        if w.proc is not None and w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()
        subprocess.run(w.cli("destroy", "--auto-approve"), capture_output=True, input="")


def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(TP_O, src / TP_O.name)
    return src


def test_edits_converge_bad_revisions_keep_the_last_good_and_exit_unloads_nothing(
    watch: Watch, tmp_path: Path
) -> None:
    before = set(perf_links())
    src = source(tmp_path)
    fw = src / "fw.yaml"
    fw.write_text(tracepoint_manifest("tp", TP_O.name, "syscalls/sys_enter_getpid"))
    watch.start("--interval", "3600", str(src))
    ours = lambda: set(perf_links()) - before  # noqa: E731
    eventually(lambda: len(ours()) == 1, "the first program attached")

    # An edit saved by rename: one more tracepoint.
    write_atomically(
        fw,
        tracepoint_manifest(
            "tp", TP_O.name, "syscalls/sys_enter_getpid, syscalls/sys_enter_getppid"
        ),
    )
    eventually(lambda: len(ours()) == 2, "the edit attached a second program")
    attached = ours()

    # A half-written file is never applied: the last good state stays, the log says where.
    (src / "half.yaml").write_text("apiVersion: bpfman.io/v1alpha1\nkind: [\n")
    eventually(lambda: "half.yaml:3: YAML syntax error" in watch.text(), "the failure said")
    assert ours() == attached
    (src / "half.yaml").unlink()

    # Everything removed: refused, nothing unloaded.
    fw.unlink()
    eventually(lambda: "result=refused" in watch.text(), "the empty source refused")
    assert ours() == attached

    # Back again; then SIGTERM: exit 0, nothing unloaded.
    fw.write_text(
        tracepoint_manifest(
            "tp", TP_O.name, "syscalls/sys_enter_getpid, syscalls/sys_enter_getppid"
        )
    )
    n = len(watch.reconciles())
    eventually(lambda: len(watch.reconciles()) > n, "a reconcile after the manifest came back")
    assert watch.stop() == 0
    assert "nothing was unloaded" in watch.text()
    assert ours() == attached

    # A restart with the same source and kernel changes nothing.
    watch.start("--interval", "3600", str(src))
    n = len(watch.reconciles())
    eventually(lambda: "result=no-changes reason=start" in watch.text(), "the restart reconciled")
    assert ours() == attached
    assert watch.stop() == 0
    assert "\x1b" not in watch.text()


@pytest.mark.parametrize("mode", ["repair", "report"])
def test_drift_is_repaired_or_reported_each_interval(
    watch: Watch, tmp_path: Path, mode: str
) -> None:
    before = set(perf_links())
    src = source(tmp_path)
    (src / "fw.yaml").write_text(tracepoint_manifest("tp", TP_O.name, "syscalls/sys_enter_getpid"))
    watch.start("--interval", "1", "--drift", mode, str(src))
    ours = lambda: set(perf_links()) - before  # noqa: E731
    eventually(lambda: len(ours()) == 1, "the program attached")
    (link,) = ours()
    # Someone removes bpfman's pins: the link (held only by its pin) goes with them.
    subprocess.run(["rm", "-rf", str(watch.root / "TracepointProgram")], check=True)
    eventually(lambda: link not in perf_links(), "the link gone with its pin")
    if mode == "repair":
        eventually(lambda: len(ours()) == 1, "drift repaired")
        eventually(lambda: "drift_repaired=1" in watch.text(), "the repair logged")
    else:
        eventually(lambda: " drift " in watch.text(), "the drift reported")
        assert ours() == set()
    assert watch.stop() == 0
