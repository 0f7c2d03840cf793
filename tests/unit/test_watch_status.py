"""The watcher's status file: conditions, atomic writes, tolerant reads, pid identity, rendering.

Times are passed in (``now=``) rather than read from the clock, so nothing here depends on how
fast the machine is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.errors import Diagnostic
from reconciler.watch import status as ws
from reconciler.watch.status import (
    Counts,
    WatchStatus,
    is_running,
    read_status,
    render_text,
    status_document,
    write_status,
)

T0 = 1_700_000_000.0


def _reconciled(now: float = T0) -> WatchStatus:
    st = WatchStatus()
    st.record_start("https://user:s3cret@git.example/o/r.git", now=now)
    st.record_attempt("abc123", now=now + 1)
    st.record_success(
        "abc123",
        counts=Counts(added=2, changed=1),
        programs_by_kind={"xdp": 2, "tc": 1},
        duration_seconds=0.5,
        drift_repaired=1,
        next_reconcile_at=now + 61,
        now=now + 2,
    )
    return st


def _cond(st: WatchStatus, t: str) -> tuple[str, str]:
    c = st.condition(t)
    return c.status, c.reason


# --- conditions -------------------------------------------------------------------------------


def test_fresh_status_is_unknown_not_watching() -> None:
    st = WatchStatus()
    for t in ws.CONDITION_TYPES:
        assert _cond(st, t) == (ws.UNKNOWN, ws.NOT_WATCHING)


def test_success_makes_ready_and_clears_reconciling_and_stalled() -> None:
    st = _reconciled()
    assert _cond(st, ws.READY) == (ws.TRUE, ws.SUCCEEDED)
    assert _cond(st, ws.RECONCILING) == (ws.FALSE, ws.SUCCEEDED)
    assert _cond(st, ws.STALLED) == (ws.FALSE, ws.SUCCEEDED)
    assert st.last_applied_revision == st.last_attempted_revision == "abc123"
    assert st.last_result == ws.APPLIED
    assert st.drift_repaired == 1
    assert st.programs_by_kind == {"tc": 1, "xdp": 2}
    assert "***" in st.source and "s3cret" not in st.source


def test_transition_time_kept_while_status_unchanged() -> None:
    st = _reconciled()
    ready_since = st.condition(ws.READY).last_transition_time
    # Later reconciles that succeed again (or only check for drift) leave Ready's time alone,
    # though its message changes.
    st.record_attempt("abc123", now=T0 + 100)
    assert st.condition(ws.READY).last_transition_time == ready_since
    st.record_success("abc123", result=ws.NO_CHANGES, now=T0 + 101)
    assert st.condition(ws.READY).last_transition_time == ready_since
    assert "no changes" in st.condition(ws.READY).message
    st.record_attempt("def456", now=T0 + 200)
    st.record_success("def456", counts=Counts(changed=1), now=T0 + 201)
    assert st.condition(ws.READY).last_transition_time == ready_since
    assert "def456" in st.condition(ws.READY).message

    # A failure flips it, once; a second failure keeps the failure's time.
    st.record_failure("bad1", "apply failed: boom", now=T0 + 300)
    failed_since = st.condition(ws.READY).last_transition_time
    assert failed_since != ready_since
    st.record_failure("bad2", "apply failed: again", now=T0 + 400)
    assert st.condition(ws.READY).last_transition_time == failed_since
    assert st.condition(ws.READY).message == "apply failed: again"


def test_no_changes_keeps_last_applied_time() -> None:
    st = _reconciled()
    applied_at = st.last_applied_at
    st.record_success("abc123", result=ws.NO_CHANGES, now=T0 + 500)
    assert st.last_applied_at == applied_at
    assert st.last_attempted_at != applied_at  # the attempt itself is still recorded


def test_transient_failure_retries_without_stalling() -> None:
    st = _reconciled()
    st.record_attempt("def456", now=T0 + 10)
    st.record_failure(
        "def456",
        "cannot attach: device busy\nsecond line",
        next_reconcile_at=T0 + 40,
        now=T0 + 11,
    )
    assert _cond(st, ws.READY) == (ws.FALSE, ws.RECONCILIATION_FAILED)
    assert _cond(st, ws.RECONCILING) == (ws.TRUE, ws.RETRYING)
    assert _cond(st, ws.STALLED)[0] == ws.FALSE
    assert st.last_error == "cannot attach: device busy"  # one line
    assert st.last_applied_revision == "abc123"  # still what the host runs
    assert st.last_attempted_revision == "def456"
    assert st.next_reconcile_at == ws.stamp(T0 + 40)


def test_validation_failure_stalls_until_a_good_revision() -> None:
    st = _reconciled()
    diags = [Diagnostic("expected an integer", "hosts/a.yaml", 12, "spec.priority")]
    st.record_failure(
        "bad", "1 problem in hosts/a.yaml", reason=ws.VALIDATION_FAILED, diagnostics=diags
    )
    assert _cond(st, ws.STALLED) == (ws.TRUE, ws.VALIDATION_FAILED)
    assert _cond(st, ws.RECONCILING)[0] == ws.FALSE
    assert st.diagnostics == diags
    st.record_success("good", now=T0 + 20)
    assert _cond(st, ws.STALLED)[0] == ws.FALSE
    assert st.diagnostics == [] and st.last_error is None


def test_empty_source_refused() -> None:
    st = _reconciled()
    st.record_failure(
        "empty",
        "the source holds no manifests; refusing to unload 3 programs (--allow-empty)",
        reason=ws.EMPTY_SOURCE_REFUSED,
        result=ws.REFUSED,
    )
    assert st.last_result == ws.REFUSED
    assert _cond(st, ws.STALLED) == (ws.TRUE, ws.EMPTY_SOURCE_REFUSED)
    assert st.programs_by_kind == {"tc": 1, "xdp": 2}  # nothing was unloaded


def test_diagnostics_capped() -> None:
    st = WatchStatus()
    many = [Diagnostic(f"problem {i}") for i in range(ws.MAX_DIAGNOSTICS + 5)]
    st.record_failure("r", "bad", reason=ws.VALIDATION_FAILED, diagnostics=many)
    assert len(st.diagnostics) == ws.MAX_DIAGNOSTICS + 1
    assert "5 more" in st.diagnostics[-1].message


def test_suspend_and_resume() -> None:
    st = _reconciled()
    st.set_suspended(True, now=T0 + 5)
    assert st.suspended
    assert _cond(st, ws.RECONCILING) == (ws.FALSE, ws.SUSPENDED)
    assert _cond(st, ws.READY)[0] == ws.TRUE  # the host still runs what was applied
    st.record_planned("next", Counts(added=1), now=T0 + 6)
    assert st.last_result == ws.PLANNED
    assert st.last_applied_revision == "abc123"
    assert st.last_attempted_revision == "next"
    assert "would give 1 added" in st.condition(ws.RECONCILING).message
    st.set_suspended(False, now=T0 + 7)
    assert not st.suspended
    assert _cond(st, ws.RECONCILING) == (ws.FALSE, ws.RESUMED)


def test_success_rejects_a_failure_result() -> None:
    with pytest.raises(ValueError):
        WatchStatus().record_success("r", result=ws.FAILED)


# --- the file ---------------------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    st = _reconciled()
    st.record_failure(
        "bad",
        "invalid",
        reason=ws.VALIDATION_FAILED,
        diagnostics=[Diagnostic("expected an integer", "a.yaml", 3, "spec.x"), Diagnostic("m")],
        duration_seconds=0.25,
        now=T0 + 9,
    )
    st.set_suspended(True, now=T0 + 10)
    write_status(tmp_path, st)
    loaded = read_status(tmp_path)
    assert loaded.found and loaded.problem is None
    assert loaded.status == st
    assert (tmp_path / ws.STATUS_FILE).stat().st_mode & 0o777 == 0o600


def test_write_replaces_the_previous_file(tmp_path: Path) -> None:
    write_status(tmp_path, WatchStatus(source="one"))
    write_status(tmp_path, WatchStatus(source="two"))
    assert read_status(tmp_path).status.source == "two"
    assert os.listdir(tmp_path) == [ws.STATUS_FILE]


def test_write_creates_the_state_dir(tmp_path: Path) -> None:
    write_status(tmp_path / "new" / "state", _reconciled())
    assert read_status(tmp_path / "new" / "state").found


def test_failed_rename_leaves_the_old_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_status(tmp_path, _reconciled())
    before = (tmp_path / ws.STATUS_FILE).read_bytes()

    def fail(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ws.os, "replace", fail)
    changed = _reconciled()
    changed.record_failure("other", "boom")
    with pytest.raises(OSError):
        write_status(tmp_path, changed)
    monkeypatch.undo()
    assert (tmp_path / ws.STATUS_FILE).read_bytes() == before
    assert os.listdir(tmp_path) == [ws.STATUS_FILE]  # no temporary file left behind
    assert read_status(tmp_path).status == _reconciled()


def test_failed_write_of_a_first_file_leaves_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(ws.os, "fsync", fail)
    with pytest.raises(OSError):
        write_status(tmp_path, _reconciled())
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []
    assert not read_status(tmp_path).found


def test_missing_file_is_not_watching(tmp_path: Path) -> None:
    loaded = read_status(tmp_path / "never")
    assert not loaded.found and loaded.problem is None
    assert _cond(loaded.status, ws.READY) == (ws.UNKNOWN, ws.NOT_WATCHING)
    text = render_text(loaded, now=T0)
    assert text.startswith("Not watching:")
    doc = status_document(loaded)
    assert doc["found"] is False and doc["watcher_running"] is False
    assert doc["last_applied_revision"] is None


@pytest.mark.parametrize(
    "content, words",
    [
        (b'{"format_version": 1, "source": ', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[]", "expected an object"),
        (b'{"format_version": 1, "drift_repaired": "many"}', "drift_repaired"),
        (b'{"format_version": 1, "suspended": 1}', "suspended"),
        (b'{"format_version": 1, "conditions": [{"status": "True"}]}', "conditions[].type"),
        (b'{"format_version": 1, "watcher": {"pid": true}}', "watcher.pid"),
        (b'{"format_version": 99}', "format_version 99"),
    ],
)
def test_corrupt_file_is_reported(tmp_path: Path, content: bytes, words: str) -> None:
    (tmp_path / ws.STATUS_FILE).write_bytes(content)
    loaded = read_status(tmp_path)
    assert loaded.found
    assert loaded.problem is not None and words in loaded.problem
    assert _cond(loaded.status, ws.READY) == (ws.UNKNOWN, ws.STATUS_UNREADABLE)
    assert render_text(loaded, running=False).startswith("Warning: the status file")
    assert status_document(loaded, running=False)["problem"] == loaded.problem


def test_not_a_regular_file_is_reported(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / ws.STATUS_FILE)  # a FIFO would hang a naive open
    loaded = read_status(tmp_path)
    assert loaded.problem is not None and "FIFO" in loaded.problem


def test_oversized_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / ws.STATUS_FILE).write_bytes(b" " * (ws.MAX_STATUS_SIZE + 1))
    loaded = read_status(tmp_path)
    assert loaded.problem is not None and "over the limit" in loaded.problem


def test_older_file_without_newer_fields_reads(tmp_path: Path) -> None:
    (tmp_path / ws.STATUS_FILE).write_text('{"format_version": 1, "source": "/etc/bpfman"}')
    loaded = read_status(tmp_path)
    assert loaded.problem is None and loaded.status.source == "/etc/bpfman"


# --- is the watcher running? ------------------------------------------------------------------


def test_this_process_is_running() -> None:
    st = WatchStatus()
    st.record_start("/src", now=T0)
    assert st.watcher_pid == os.getpid()
    assert st.watcher_start_ticks is not None
    assert is_running(st)


def test_reused_pid_is_not_the_watcher() -> None:
    # A live process whose start time differs from the recorded one: the pid was reused.
    st = WatchStatus()
    st.record_start("/src", now=T0)
    assert st.watcher_start_ticks is not None
    st.watcher_start_ticks += 1
    assert not is_running(st)


def test_other_boot_is_not_the_watcher() -> None:
    st = WatchStatus()
    st.record_start("/src", now=T0)
    st.watcher_boot_id = "00000000-0000-0000-0000-000000000000"
    assert not is_running(st)


def test_exited_process_is_not_running() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    st = WatchStatus()
    st.record_start("/src", pid=child.pid, now=T0)
    child.wait()  # reaped: the pid names nothing (or, rarely, a stranger with another start)
    assert not is_running(st)


def test_zombie_is_not_running() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        st = WatchStatus()
        st.record_start("/src", pid=child.pid, now=T0)
        # Wait for the exit without reaping it (WNOWAIT): a zombie keeps its pid.
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        fields = ws._proc_stat_fields(child.pid)
        assert fields is not None and fields[0] == "Z"
        assert not is_running(st)
    finally:
        child.wait()


@pytest.mark.parametrize("pid", [None, 0, -1])
def test_no_pid_is_not_running(pid: int | None) -> None:
    assert not is_running(WatchStatus(watcher_pid=pid))


def test_stopped_watcher() -> None:
    st = _reconciled()
    st.record_stop(now=T0 + 100)
    assert st.watcher_pid is None and st.next_reconcile_at is None
    assert _cond(st, ws.RECONCILING) == (ws.FALSE, ws.WATCHER_STOPPED)
    assert not is_running(st)
    assert _cond(st, ws.READY)[0] == ws.TRUE  # what was applied stays applied


# --- rendering --------------------------------------------------------------------------------


def test_text_shows_where_it_stands(tmp_path: Path) -> None:
    st = _reconciled()
    st.record_attempt("bad", now=T0 + 10)
    st.record_failure(
        "bad",
        "1 problem",
        reason=ws.VALIDATION_FAILED,
        diagnostics=[Diagnostic("expected an integer", "hosts/a.yaml", 12, "spec.priority")],
        now=T0 + 11,
    )
    st.set_suspended(True, now=T0 + 12)
    write_status(tmp_path, st)
    text = render_text(read_status(tmp_path), running=True, now=T0 + 20)
    assert "https://user:***@git.example/o/r.git" in text
    assert "s3cret" not in text
    assert "Suspended:       yes" in text
    assert "Last applied:    abc123 at" in text
    assert "Last attempt:    bad at" in text and ": failed" in text
    assert "hosts/a.yaml:12: spec.priority: expected an integer" in text
    assert "Programs:        3 (tc 1, xdp 2)" in text
    assert "Drift:           1 repaired, 0 reported" in text
    rows = {line.split()[0]: line.split()[1:3] for line in text.splitlines()[-3:]}
    assert rows == {
        "Ready": ["False", "ValidationFailed"],
        "Reconciling": ["False", "Suspended"],
        "Stalled": ["True", "ValidationFailed"],
    }


def test_text_escapes_control_characters() -> None:
    st = WatchStatus()
    st.record_failure("r", "bad \x1b[31mred", now=T0)
    text = render_text(ws.StatusFile(Path("/x"), st, found=True), running=False, now=T0)
    assert "\x1b" not in text and "\\x1b" in text


def test_json_document(tmp_path: Path) -> None:
    write_status(tmp_path, _reconciled())
    doc = status_document(read_status(tmp_path), running=False)
    assert doc["format_version"] == ws.DOCUMENT_FORMAT
    assert doc["found"] is True and doc["problem"] is None
    assert doc["watcher_running"] is False
    assert doc["last_applied_revision"] == "abc123"
    assert doc["last_counts"] == {"added": 2, "changed": 1, "destroyed": 0}
    assert [c["type"] for c in doc["conditions"]] == ["Ready", "Reconciling", "Stalled"]
    assert set(doc["conditions"][0]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
    }
    json.dumps(doc)  # serialisable as is
