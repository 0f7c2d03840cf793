"""``bpfman watch`` on a git repository served for real by ``git daemon`` on 127.0.0.1: pushes
converge, an unchanged remote is a no-op, a bad revision keeps the last good one, and the server
going away and coming back is survived. The kernel is read with bpftool."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import tracepoint_manifest
from tests.cli.test_cli_sources import GIT, TP_O, bare_repo, free_port, wait_listening
from tests.watch.test_watch_dir import Watch, eventually, perf_links, watch  # noqa: F401

pytestmark = pytest.mark.kernel


class Daemon:
    def __init__(self, served: Path) -> None:
        self.served = served
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "git",
                "daemon",
                "--reuseaddr",
                f"--base-path={self.served}",
                "--export-all",
                f"--port={self.port}",
                "--listen=127.0.0.1",
                str(self.served),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    served = tmp_path / "served"
    served.mkdir()
    bare_repo(served)
    d = Daemon(served)
    d.start()
    try:
        yield d
    finally:
        d.stop()


def push(tmp_path: Path, text: str, message: str) -> str:
    """Commit ``text`` as fw.yaml in the work tree that bare_repo made, push it; the commit."""
    work = tmp_path / "work-repo.git"
    (work / "fw.yaml").write_text(text)
    subprocess.run([*GIT, "-C", str(work), "commit", "-qam", message], check=True)
    served = tmp_path / "served" / "repo.git"
    subprocess.run([*GIT, "-C", str(work), "push", "-q", str(served), "HEAD:main"], check=True)
    return subprocess.run(
        ["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def status(w: Watch) -> dict:
    p = subprocess.run(w.cli("status", "--json"), capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def test_pushes_converge_and_faults_are_survived(
    watch: Watch,  # noqa: F811
    daemon: Daemon,
    tmp_path: Path,
) -> None:
    before = set(perf_links())
    ours = lambda: set(perf_links()) - before  # noqa: E731
    url = f"git://127.0.0.1:{daemon.port}/repo.git"
    watch.start("--interval", "1", "--retry-interval", "0.5", "--ref", "main", url)
    eventually(lambda: len(ours()) == 1, "the first commit applied")
    first = status(watch)["last_applied_revision"]
    assert len(first) == 40

    # Unchanged remote: reconciles go on (drift checks), and find nothing to do.
    n = len(watch.reconciles())
    eventually(lambda: len(watch.reconciles()) >= n + 2, "two interval reconciles")
    assert all("result=no-changes" in line for line in watch.reconciles()[n:])

    # A push converges, and the status names the new commit.
    both = tracepoint_manifest(
        "tp", TP_O.name, "syscalls/sys_enter_getpid, syscalls/sys_enter_getppid"
    )
    second = push(tmp_path, both, "two tracepoints")
    eventually(lambda: len(ours()) == 2, "the push applied")
    eventually(lambda: status(watch)["last_applied_revision"] == second, "status names it")

    # A broken revision is never applied.
    broken = push(tmp_path, "kind: [\n", "broken")
    eventually(lambda: "fw.yaml:2: YAML syntax error" in watch.text(), "the failure said")
    assert len(ours()) == 2
    st = status(watch)
    assert st["last_applied_revision"] == second and st["last_result"] == "failed"
    assert st["last_attempted_revision"] == broken

    # The server goes away: fetch errors, nothing unloaded; it comes back with a fix.
    daemon.stop()
    eventually(lambda: "cannot fetch" in watch.text(), "the fetch failure logged")
    assert len(ours()) == 2
    third = push(tmp_path, tracepoint_manifest("tp", TP_O.name, "syscalls/sys_enter_getpid"), "1")
    daemon.start()
    eventually(lambda: status(watch)["last_applied_revision"] == third, "the fix applied")
    assert len(ours()) == 1
    assert watch.stop() == 0
