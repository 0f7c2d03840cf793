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

    def start(self, *args: str, env_extra: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BPFMAN_")}
        env.update(env_extra or {})
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


def test_suspend_plans_only_and_resume_applies(watch: Watch, tmp_path: Path) -> None:
    before = set(perf_links())
    src = source(tmp_path)
    fw = src / "fw.yaml"
    fw.write_text(tracepoint_manifest("tp", TP_O.name, "syscalls/sys_enter_getpid"))
    suspended = subprocess.run(
        watch.cli("suspend", "--reason", "maintenance window"), capture_output=True, text=True
    )
    assert suspended.returncode == 0, suspended.stderr
    watch.start("--interval", "3600", str(src))
    eventually(lambda: "result=planned" in watch.text(), "a suspended reconcile")
    assert "maintenance window" in watch.text()
    assert set(perf_links()) == before  # planned, not applied
    resumed = subprocess.run(watch.cli("resume"), capture_output=True, text=True)
    assert resumed.returncode == 0 and "Resumed" in resumed.stdout
    eventually(lambda: len(set(perf_links()) - before) == 1, "applied once resumed")
    assert watch.stop() == 0


def test_sigkill_mid_reconcile_then_a_restart_converges(watch: Watch, tmp_path: Path) -> None:
    """The crash harness's pause point holds the watcher inside its first step (kernel changed,
    not recorded); SIGKILL; a new watcher converges with nothing leaked (no_leaks)."""
    from reconciler.apply.interrupt import PAUSE_AT_ENV, PAUSE_MARKER, PAUSE_STEP_ENV

    before = set(perf_links())
    src = source(tmp_path)
    names = "syscalls/sys_enter_getpid, syscalls/sys_enter_getppid"
    (src / "fw.yaml").write_text(tracepoint_manifest("tp", TP_O.name, names))
    watch.start(
        "--interval", "3600", str(src), env_extra={PAUSE_STEP_ENV: "1", PAUSE_AT_ENV: "kernel"}
    )
    eventually(lambda: PAUSE_MARKER in watch.text(), "the watcher paused inside a step")
    assert watch.proc is not None
    watch.proc.kill()
    watch.proc.wait()
    watch.start("--interval", "3600", str(src))
    eventually(lambda: "result=applied reason=start" in watch.text(), "the restart applied")
    eventually(lambda: len(set(perf_links()) - before) == 2, "both programs attached")
    assert watch.stop() == 0


def test_a_cli_apply_during_a_reconcile_waits_then_has_nothing_to_do(
    watch: Watch, tmp_path: Path
) -> None:
    from reconciler.apply.interrupt import PAUSE_AT_ENV, PAUSE_MARKER, PAUSE_STEP_ENV

    before = set(perf_links())
    src = source(tmp_path)
    (src / "fw.yaml").write_text(tracepoint_manifest("tp", TP_O.name, "syscalls/sys_enter_getpid"))
    watch.start(
        "--interval", "3600", str(src), env_extra={PAUSE_STEP_ENV: "1", PAUSE_AT_ENV: "kernel"}
    )
    eventually(lambda: PAUSE_MARKER in watch.text(), "the watcher paused inside a step")
    cli = subprocess.Popen(
        watch.cli("apply", "--auto-approve", str(src)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert cli.stderr is not None
        waiting = cli.stderr.readline()
        assert waiting.startswith("Waiting for the state lock held by pid"), waiting
        assert " watch " in waiting
        assert watch.proc is not None
        watch.proc.send_signal(signal.SIGUSR1)  # let the reconcile go on
        out, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 0, err
    assert "Apply complete! Resources: 0 added, 0 changed, 0 destroyed." in out
    assert len(set(perf_links()) - before) == 1
    assert watch.stop() == 0


def test_status_reconcile_on_demand_and_metrics(watch: Watch, tmp_path: Path) -> None:
    import json
    import socket
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    before = set(perf_links())
    src = source(tmp_path)
    (src / "fw.yaml").write_text(tracepoint_manifest("tp", TP_O.name, "syscalls/sys_enter_getpid"))
    with socket.socket() as s:  # a free port on loopback for the metrics endpoint
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    watch.start("--interval", "3600", "--metrics-listen", str(port), str(src))
    eventually(lambda: "result=applied" in watch.text(), "the first reconcile")

    st = json.loads(
        subprocess.run(watch.cli("status", "--json"), capture_output=True, text=True).stdout
    )
    assert st["watcher_running"] is True
    assert st["last_result"] == "applied"
    assert st["programs_by_kind"] == {"TracepointProgram": 1}
    ready = {c["type"]: c["status"] for c in st["conditions"]}
    assert ready == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}

    # On demand: bpfman reconcile waits for the watcher's answer.
    asked = subprocess.run(watch.cli("reconcile"), capture_output=True, text=True, timeout=120)
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.startswith("Reconciled: no-changes")
    assert "reason=SIGHUP" in watch.text()

    # A bad revision: the status says why and where; Ready goes False, the program stays.
    (src / "bad.yaml").write_text("apiVersion: bpfman.io/v1alpha1\nkind: [\n")
    eventually(lambda: "bad.yaml:3" in watch.text(), "the failure logged")
    st = json.loads(
        subprocess.run(watch.cli("status", "--json"), capture_output=True, text=True).stdout
    )
    assert st["last_result"] == "failed" and st["last_applied_revision"] is None
    assert any(d["file"] and d["file"].endswith("bad.yaml") for d in st["diagnostics"])
    conditions = {c["type"]: c for c in st["conditions"]}
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["reason"] == "ValidationFailed"
    assert len(set(perf_links()) - before) == 1

    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    assert samples[("bpfman_reconciles_total", (("result", "applied"),))] == 1
    assert samples[("bpfman_reconciles_total", (("result", "failed"),))] >= 1
    assert samples[("bpfman_managed_programs", (("kind", "TracepointProgram"),))] == 1
    assert watch.stop() == 0
    stopped = subprocess.run(watch.cli("status"), capture_output=True, text=True)
    assert stopped.returncode == 0 and "TracepointProgram" in stopped.stdout


def test_a_reconcile_during_a_cli_apply_waits_then_plans_against_it(
    watch: Watch, tmp_path: Path
) -> None:
    """The reverse of the test above: a CLI apply of the new revision (from a copy of the
    source) holds the lock mid-step; the same edit lands in the watched source; the watcher
    waits for the lock, then plans against what the CLI did: nothing to do."""
    from reconciler.apply.interrupt import PAUSE_AT_ENV, PAUSE_MARKER, PAUSE_STEP_ENV

    before = set(perf_links())
    src = source(tmp_path)
    fw = src / "fw.yaml"
    fw.write_text(tracepoint_manifest("tp", TP_O.name, "syscalls/sys_enter_getpid"))
    watch.start("--interval", "3600", str(src))
    eventually(lambda: "result=applied" in watch.text(), "the first reconcile")
    both = tracepoint_manifest(
        "tp", TP_O.name, "syscalls/sys_enter_getpid, syscalls/sys_enter_getppid"
    )
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    (copy / "fw.yaml").write_text(both)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPFMAN_")}
    env.update({PAUSE_STEP_ENV: "1", PAUSE_AT_ENV: "kernel"})
    cli = subprocess.Popen(
        watch.cli("apply", "--auto-approve", str(copy)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert cli.stderr is not None
        assert cli.stderr.readline().startswith(PAUSE_MARKER)
        n = len(watch.reconciles())
        fw.write_text(both)  # the watcher sees it now, and must wait for the CLI's lock
        eventually(lambda: "Waiting for the state lock" in watch.text(), "the watcher waiting")
        assert len(watch.reconciles()) == n
        cli.send_signal(signal.SIGUSR1)
        out, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 0, err
    assert "Apply complete! Resources: 1 added, 0 changed, 0 destroyed." in out
    eventually(lambda: len(watch.reconciles()) > n, "the watcher's reconcile")
    assert "result=no-changes" in watch.reconciles()[-1]
    assert len(set(perf_links()) - before) == 2
    assert watch.stop() == 0


def test_json_logs_are_json_lines_only(watch: Watch, tmp_path: Path) -> None:
    import json

    src = source(tmp_path)
    (src / "fw.yaml").write_text(tracepoint_manifest("tp", TP_O.name, "syscalls/sys_enter_getpid"))
    watch.start("--interval", "3600", "--log-format", "json", str(src))
    eventually(lambda: '"result": "applied"' in watch.text(), "the first reconcile")
    (src / "bad.yaml").write_text("kind: [\n")
    eventually(lambda: '"result": "failed"' in watch.text(), "a failed reconcile")
    assert watch.stop() == 0
    lines = [json.loads(line) for line in watch.text().splitlines()]
    first = lines[0]
    assert first["msg"] == "bpfman watch starting"
    assert {"version", "source", "bpffs_root", "state_dir"} <= set(first)
    failed = next(x for x in lines if x.get("result") == "failed")
    assert "bad.yaml:2: YAML syntax error" in failed["error"]
    assert lines[-1]["msg"] == "bpfman watch stopped; nothing was unloaded"


def test_sigterm_inside_a_step_finishes_it_and_exits_0(watch: Watch, tmp_path: Path) -> None:
    """The watcher is held inside its first step (kernel changed, not yet recorded); SIGTERM
    lets that step finish and be recorded, stops before the next, and exits 0."""
    from reconciler.apply.interrupt import PAUSE_AT_ENV, PAUSE_MARKER, PAUSE_STEP_ENV

    before = set(perf_links())
    src = source(tmp_path)
    names = "syscalls/sys_enter_getpid, syscalls/sys_enter_getppid"
    (src / "fw.yaml").write_text(tracepoint_manifest("tp", TP_O.name, names))
    pause = {PAUSE_STEP_ENV: "1", PAUSE_AT_ENV: "kernel"}
    watch.start("--interval", "3600", str(src), env_extra=pause)
    eventually(lambda: PAUSE_MARKER in watch.text(), "the watcher paused inside a step")
    assert watch.stop() == 0  # SIGTERM
    assert "result=interrupted" in watch.text()
    assert len(set(perf_links()) - before) == 1  # the first step done, the second never begun
    st = subprocess.run(watch.cli("list", "--json"), capture_output=True, text=True)
    assert st.returncode == 0 and st.stdout.count('"address"') == 1  # and recorded


def test_a_mass_change_is_one_settled_reconcile(watch: Watch, tmp_path: Path) -> None:
    """50 manifests land at once (as a `git checkout` writes them): the watcher reconciles the
    settled tree, not 50 partial ones, and ends with all 50 attached."""
    import subprocess as sp

    before = set(perf_links())
    src = source(tmp_path)
    (src / "fw.yaml").write_text(tracepoint_manifest("tp", TP_O.name, "syscalls/sys_enter_getpid"))
    watch.start("--interval", "3600", str(src))
    eventually(lambda: len(set(perf_links()) - before) == 1, "the first program attached")
    n = len(watch.reconciles())
    staged = tmp_path / "staged"
    staged.mkdir()
    for i in range(50):
        (staged / f"m{i:02d}.yaml").write_text(
            tracepoint_manifest(f"m{i:02d}", TP_O.name, "syscalls/sys_enter_getppid")
        )
    sp.run(f"cp {staged}/*.yaml {src}/", shell=True, check=True)
    eventually(lambda: len(set(perf_links()) - before) == 51, "all 51 attached")
    eventually(lambda: "result=" in (watch.reconciles()[-1:] or [""])[0], "settled")
    later = watch.reconciles()[n:]
    assert len(later) <= 3, later  # one settled reconcile (a slow copy may split it once)
    assert all("result=failed" not in line for line in later)
    assert watch.stop() == 0


def test_the_source_directory_deleted_and_made_again(watch: Watch, tmp_path: Path) -> None:
    """Deleted: the reconcile fails (nothing unloaded, not refused as empty: the source is
    missing, not empty); made again: its files are watched anew and an edit converges."""
    before = set(perf_links())
    src = source(tmp_path)
    fw = tracepoint_manifest("tp", TP_O.name, "syscalls/sys_enter_getpid")
    (src / "fw.yaml").write_text(fw)
    watch.start("--interval", "3600", "--retry-interval", "0.2", str(src))
    eventually(lambda: len(set(perf_links()) - before) == 1, "the first program attached")
    shutil.rmtree(src)
    eventually(lambda: "result=failed" in watch.text(), "the missing source reported")
    assert len(set(perf_links()) - before) == 1
    src.mkdir()
    shutil.copy(TP_O, src / TP_O.name)
    (src / "fw.yaml").write_text(fw)
    after = lambda: watch.text().split("result=failed", 1)[1]  # noqa: E731
    eventually(lambda: "result=no-changes" in after(), "the source back")
    both = tracepoint_manifest(
        "tp", TP_O.name, "syscalls/sys_enter_getpid, syscalls/sys_enter_getppid"
    )
    write_atomically(src / "fw.yaml", both)  # seen only if the new directory is watched
    eventually(lambda: len(set(perf_links()) - before) == 2, "the edit in the new directory")
    assert watch.stop() == 0


def test_a_revision_restored_after_a_bad_one_is_remembered_as_itself(
    watch: Watch, tmp_path: Path
) -> None:
    """A no-op reconcile is remembered with the bytes its manifests were parsed from, never
    with those of a bad revision read in between: restoring the good file by rename (same
    inode and mtime, so the watcher reuses its manifests) and then saving the bad one again
    gives a failure again, not a remembered no-op."""
    src = source(tmp_path)
    fw = src / "fw.yaml"
    fw.write_text(tracepoint_manifest("tp", TP_O.name, "syscalls/sys_enter_getpid"))
    bad = tracepoint_manifest("tp", TP_O.name, "syscalls/sys_enter_getpid") + "  priority: 5000\n"
    watch.start("--interval", "3600", str(src))
    eventually(lambda: "result=applied" in watch.text(), "the first revision applied")
    kept = tmp_path / "fw.keep"
    os.link(fw, kept)  # the good file's inode, size and mtime, outside the source

    def next_result() -> str:
        n = len(watch.reconciles())
        eventually(lambda: len(watch.reconciles()) > n, "a reconcile")
        return watch.reconciles()[n].split("result=", 1)[1].split()[0]

    write_atomically(fw, bad)
    assert next_result() == "failed"
    os.replace(kept, fw)  # the good revision back, exactly as it was
    assert next_result() == "no-changes"
    write_atomically(fw, bad)
    assert next_result() == "failed"
