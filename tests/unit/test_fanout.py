"""fan_out: the same answer as the sequential reading, whatever the child does."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from reconciler.spec import fanout, load_manifests
from reconciler.spec.fanout import fan_out
from reconciler.spec.model import ManifestError

PARENT = os.getpid()


def _square(i: int) -> tuple[int, int]:
    return i, i * i


@pytest.fixture(autouse=True)
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    # The split is what is tested; a one-core CI runner must take it too.
    monkeypatch.setattr(fanout, "_cores", lambda: 2)


def test_results_in_order_from_both_halves() -> None:
    items = list(range(1000))
    assert fan_out(_square, items, min_items=10) == [_square(i) for i in items]


def test_the_child_computes_the_second_half() -> None:
    pids = fan_out(lambda _i: os.getpid(), list(range(100)), min_items=10)
    assert set(pids[:50]) == {PARENT}
    assert PARENT not in set(pids[50:])


def test_short_lists_are_not_split() -> None:
    assert set(fan_out(lambda _i: os.getpid(), list(range(20)), min_items=100)) == {PARENT}


@pytest.mark.parametrize("how", ["raise", "kill", "exit"])
def test_a_failing_child_is_redone_here(how: str) -> None:
    def work(i: int) -> int:
        if os.getpid() != PARENT:
            if how == "raise":
                raise ValueError("child only")
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            os._exit(0)  # exits "successfully" having sent nothing
        return i + 1

    assert fan_out(work, list(range(300)), min_items=10) == list(range(1, 301))


def test_an_error_here_stops_the_child() -> None:
    def work(i: int) -> int:
        if os.getpid() == PARENT and i == 3:
            raise KeyError("parent")
        return i

    with pytest.raises(KeyError):
        fan_out(work, list(range(100)), min_items=10)
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # no child left behind


def _manifest(i: int, priority: int) -> str:
    return (
        "apiVersion: bpfman.io/v1alpha1\n"
        "kind: TracepointProgram\n"
        "metadata:\n"
        f"  name: tp-{i:04d}\n"
        "spec:\n"
        "  bpffunctionname: f\n"
        "  bytecode:\n"
        "    path: /nonexistent/x.o\n"
        "  names: [syscalls/sys_enter_acct]\n"
        f"  priority: {priority}\n"
    )


def test_manifest_errors_are_the_same_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source large enough to be split reports exactly what the sequential reading reports:
    the same problems, in file and line order, from both halves."""
    for i in range(fanout.MIN_ITEMS + 50):
        bad = 5000 if i % 97 == 0 else 0
        (tmp_path / f"m{i:04d}.yaml").write_text(_manifest(i, bad))
    answers = []
    for off in ("", "1"):
        monkeypatch.setenv("BPFMAN_NO_FANOUT", off)
        with pytest.raises(ManifestError) as e:
            load_manifests(tmp_path, allowed_bytecode_dirs=())
        answers.append(e.value.problems)
    assert answers[0] == answers[1]
    assert any("m0097.yaml" in str(p) for p in answers[0])
    assert any("m0194.yaml" in str(p) for p in answers[0])


def test_valid_manifests_are_the_same_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child's documents come back with the defaults the schema filled in, as read here."""
    obj = Path(__file__).resolve().parents[2] / "bench" / "tp_bench.o"
    if not obj.exists():
        pytest.skip("bench/tp_bench.o is built by `make bytecode`")
    (tmp_path / "tp.o").write_bytes(obj.read_bytes())
    for i in range(fanout.MIN_ITEMS + 10):
        text = _manifest(i, 0).replace("/nonexistent/x.o", "tp.o").replace(": f\n", ": tp_bench\n")
        (tmp_path / f"m{i:04d}.yaml").write_text(text.replace("  priority: 0\n", ""))
    answers = []
    for off in ("", "1"):
        monkeypatch.setenv("BPFMAN_NO_FANOUT", off)
        answers.append(load_manifests(tmp_path, allowed_bytecode_dirs=()))
    assert answers[0] == answers[1]
    assert len(answers[0]) == fanout.MIN_ITEMS + 10


def test_no_fork_while_other_threads_run() -> None:
    import threading

    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert set(fan_out(lambda _i: os.getpid(), list(range(100)), min_items=10)) == {PARENT}
    finally:
        stop.set()
        other.join()
