import json
import os
import subprocess
import sys

import pytest

from reconciler.lock import ApplyLock, LockTimeout
from reconciler.state import Record, StateError, StateStore


def test_state_round_trip_and_owner_only(tmp_path):
    store = StateStore(tmp_path / "s")
    store.save({"A/b[c]": Record("A/b[c]", {"x": 1}, origin="f.yaml:1", prog_id=3)})
    assert store.load()["A/b[c]"].attributes == {"x": 1}
    assert (os.stat(tmp_path / "s").st_mode & 0o777) == 0o700
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["state.json"]  # no temp files left


def test_missing_state_is_empty(tmp_path):
    assert StateStore(tmp_path / "nothing").load() == {}


@pytest.mark.parametrize("content", ["{", "[]", '{"format_version": 1, "records": [{"bad": 1}]}'])
def test_corrupt_state_is_reported_not_trusted(tmp_path, content):
    (tmp_path / "state.json").write_text(content)
    with pytest.raises(StateError, match="corrupt"):
        StateStore(tmp_path).load()


def test_newer_format_is_refused(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"format_version": 99, "records": []}))
    with pytest.raises(StateError, match="format_version"):
        StateStore(tmp_path).load()


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
    assert list(StateStore(tmp_path).load()) == ["a"]
    (tmp_path / "journal.jsonl").write_text('garbage\n{"op":"del","address":"a"}\n')
    with pytest.raises(StateError, match="journal.jsonl:1 is corrupt"):
        StateStore(tmp_path).load()
