import json
import os
import subprocess
import sys
import threading

import pytest

from reconciler.lock import ApplyLock, LockTimeout
from reconciler.state import Record, StateError, StateStore


def test_state_round_trip_and_owner_only(tmp_path):
    store = StateStore(tmp_path / "s")
    store.save({"A/b[c]": Record("A/b[c]", {"x": 1}, origin="f.yaml:1", prog_id=3)})
    assert store.load()["A/b[c]"].attributes == {"x": 1}
    assert (os.stat(tmp_path / "s").st_mode & 0o777) == 0o700
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["state.json"]  # no temp files left


def test_the_snapshot_is_one_record_a_line_in_address_order(tmp_path):
    store = StateStore(tmp_path)
    records = {a: Record(a, {"n": i, "nested": {"z": [1, None]}}) for i, a in enumerate("ba")}
    store.save(records)
    lines = (tmp_path / "state.json").read_text().splitlines()
    assert lines[0] == '{"format_version": 1, "records": ['
    assert [json.loads(line.rstrip(","))["address"] for line in lines[1:-1]] == ["a", "b"]
    assert lines[-1] == "]}"
    assert store.load() == records
    store.save({})
    assert json.loads((tmp_path / "state.json").read_text()) == {
        "format_version": 1,
        "records": [],
    }


def test_missing_state_is_empty(tmp_path):
    assert StateStore(tmp_path / "nothing").load() == {}


@pytest.mark.parametrize(
    "content, why",
    [
        ("{", "truncated"),
        ('{"format_version": 1, "rec', "truncated"),
        ("", "empty"),
        ("[]", "corrupt"),
        ("\x00\x17garbage", "not valid JSON"),
        ('{"format_version": 1, "records": [{"bad": 1}]}', "corrupt"),
    ],
)
def test_corrupt_state_is_reported_never_trusted_and_moved_aside(tmp_path, content, why):
    (tmp_path / "state.json").write_text(content)
    store = StateStore(tmp_path)
    assert store.load() == {}  # nothing of it is trusted
    (problem,) = store.problems
    assert problem.corrupt and why in str(problem) and "state.json" in str(problem)
    assert (tmp_path / "state.json").read_text() == content  # a plain load changes nothing
    store.load(repair=True)
    (aside,) = tmp_path.glob("state.json.corrupt-*")
    assert aside.read_text() == content  # kept for a post-mortem
    assert "moved aside to state.json.corrupt-" in str(store.problems[0])
    fresh = StateStore(tmp_path)
    assert fresh.load() == {} and fresh.problems == []  # a valid, empty snapshot now


def test_newer_format_is_refused(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"format_version": 99, "records": []}))
    with pytest.raises(StateError, match="newer"):
        StateStore(tmp_path).load()
    with pytest.raises(StateError):
        StateStore(tmp_path).load(repair=True)
    assert not list(tmp_path.glob("*.corrupt-*"))  # a newer bpfman's state is never moved


HOLDER = """
import sys, time
from pathlib import Path
from reconciler.lock import ApplyLock
lock = ApplyLock(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_second_locker_times_out_naming_the_holder(tmp_path):
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(LockTimeout, match=rf"pid {p.pid} .* since "):
            ApplyLock(tmp_path, timeout=0.3).acquire()
    finally:
        p.kill()
        p.wait()
    # A lock left by a dead process is no obstacle: the kernel released the flock.
    with ApplyLock(tmp_path, timeout=0.3):
        pass


def test_a_waiter_is_told_once_whom_it_waits_for_and_gets_the_lock_when_freed(tmp_path):
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    told: list[str] = []
    try:
        assert p.stdout.readline().strip() == "locked"
        threading.Timer(0.5, p.kill).start()  # the holder goes while we wait
        with ApplyLock(tmp_path, timeout=30, on_wait=told.append):
            pass
    finally:
        p.kill()
        p.wait()
    assert len(told) == 1
    assert told[0].startswith(f"Waiting for the state lock held by pid {p.pid} (bpfman ")
    assert told[0].endswith("; up to 30s (--lock-timeout)")
    # Not told when there is nothing to wait for.
    with ApplyLock(tmp_path, timeout=30, on_wait=told.append):
        pass
    assert len(told) == 1


def test_the_lock_is_reentrant_within_a_thread_and_exclusive_across_threads(tmp_path):
    """An apply holds it for the whole transaction; code inside (the state repair) may ask for
    it again without waiting for itself. Another thread still waits."""
    outer = ApplyLock(tmp_path, timeout=0)
    with outer:
        with ApplyLock(tmp_path, timeout=0):  # nested: at once
            pass
        assert (tmp_path / "lock").read_text()  # the outer one still holds it, named
        failed: list[Exception] = []

        def other() -> None:
            try:
                ApplyLock(tmp_path, timeout=0.2).acquire()
            except LockTimeout as e:
                failed.append(e)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert len(failed) == 1
    assert (tmp_path / "lock").read_text() == ""  # released by the outermost only

    got: list[bool] = []

    def again() -> None:
        with ApplyLock(tmp_path, timeout=0):
            got.append(True)

    t = threading.Thread(target=again)
    t.start()
    t.join()
    assert got == [True]


def test_journal_replays_over_the_snapshot_and_compacts(tmp_path):
    store = StateStore(tmp_path)
    store.save({"a": Record("a", {"v": 1}), "b": Record("b", {"v": 1})})
    store.put(Record("a", {"v": 2}))
    store.delete("b")
    store.put(Record("c", {"v": 3}))
    fresh = StateStore(tmp_path)  # what a new process (or the next run after a crash) sees
    recs = fresh.load()
    assert {k: r.attributes for k, r in recs.items()} == {"a": {"v": 2}, "c": {"v": 3}}
    store.compact(recs)
    assert not (tmp_path / "journal.jsonl").exists()
    assert {k: r.attributes for k, r in StateStore(tmp_path).load().items()} == {
        "a": {"v": 2},
        "c": {"v": 3},
    }


def test_torn_last_journal_line_is_ignored_but_corruption_inside_is_not(tmp_path):
    store = StateStore(tmp_path)
    store.put(Record("a", {"v": 1}))
    with open(tmp_path / "journal.jsonl", "a") as f:
        f.write('{"op":"put","rec')  # a crash in the middle of an append
    fresh = StateStore(tmp_path)
    assert list(fresh.load()) == ["a"] and fresh.problems == []


def test_corrupt_journal_line_inside_drops_what_it_could_have_changed(tmp_path):
    store = StateStore(tmp_path)
    store.save({"a": Record("a", {"v": 1}), "b": Record("b", {"v": 1})})
    store.put(Record("a", {"v": 2}))
    with open(tmp_path / "journal.jsonl", "a") as f:
        f.write("garbage\n")  # which address did this line change? unknown
    store.put(Record("c", {"v": 3}))
    store.delete("a")
    fresh = StateStore(tmp_path)
    # Only what lines after the corrupt one establish is trusted; a, b are re-derived from pins.
    assert {k: r.attributes for k, r in fresh.load().items()} == {"c": {"v": 3}}
    (problem,) = fresh.problems
    assert problem.corrupt and "journal.jsonl: line 2 is corrupt" in str(problem)
    fresh.load(repair=True)
    assert len(list(tmp_path.glob("journal.jsonl.corrupt-*"))) == 1
    assert not (tmp_path / "journal.jsonl").exists()
    again = StateStore(tmp_path)
    assert list(again.load()) == ["c"] and again.problems == []


def test_a_step_begun_and_never_recorded_drops_its_record(tmp_path):
    store = StateStore(tmp_path)
    store.save({"a": Record("a", {"v": 1}), "b": Record("b", {"v": 1})})
    store.begin("a", "replace")  # killed after this: the kernel may run either version of a
    store.begin("b", "replace")
    store.put(Record("b", {"v": 2}))
    fresh = StateStore(tmp_path)
    assert {k: r.attributes for k, r in fresh.load().items()} == {"b": {"v": 2}}
    assert fresh.interrupted == {"a": "replace"}
    (problem,) = fresh.problems
    assert not problem.corrupt and "interrupted during a (replace)" in str(problem)
    # A torn record line after its intent: still interrupted, never half-trusted.
    store.begin("b", "delete")
    with open(tmp_path / "journal.jsonl", "a") as f:
        f.write('{"op":"del","addr')
    assert list(StateStore(tmp_path).load()) == []


def test_a_kill_inside_a_save_or_a_compaction_loses_nothing(tmp_path):
    """The compaction's window (snapshot written, journal not yet removed: the ``compacted``
    pause point) and a save killed before its rename (a temporary file left behind)."""
    store = StateStore(tmp_path)
    rec = Record("A/b[c]", {"x": 1}, prog_id=7)
    store.begin(rec.address, "create")
    store.put(rec)
    (tmp_path / ".state-killed").write_text('{"format_version": 1, "reco')

    class Killed(Exception):
        pass

    def kill() -> None:
        raise Killed

    with pytest.raises(Killed):
        store.compact({rec.address: rec}, saved=kill)
    assert (tmp_path / "journal.jsonl").exists()  # every line of it is in the snapshot too
    again = StateStore(tmp_path)
    assert again.load() == {rec.address: rec} and again.problems == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.jsonl", "state.json"]
