"""loader.ParseMemo: a source read again (the watcher after an edit) parses only the files whose
bytes changed and gives the same answer as a fresh read; the load hands the plan cache the
digests of the bytes it read (kustomized files included)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from reconciler import plancache
from reconciler.spec import ParseMemo, load_manifests, loader, yamlread
from reconciler.spec.model import ManifestError

OBJ = Path(__file__).resolve().parents[2] / "bench" / "tp_bench.o"


def _manifest(name: str, point: str = "sys_enter_acct", extra: str = "") -> str:
    return (
        "apiVersion: bpfman.io/v1alpha1\n"
        "kind: TracepointProgram\n"
        f"metadata:\n  name: {name}\n"
        "spec:\n"
        "  bpffunctionname: tp_bench\n"
        "  bytecode:\n    path: tp.o\n"
        f"  names: [syscalls/{point}]\n{extra}"
    )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    if not OBJ.exists():
        pytest.skip("bench/tp_bench.o is built by `make bytecode`")
    (tmp_path / "tp.o").write_bytes(OBJ.read_bytes())
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.yaml").write_text(_manifest(name))
    return tmp_path


class Parses:
    """Counts yamlread's parses (one per file read)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = yamlread.read_documents

        def counted(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(yamlread, "read_documents", counted)


def _load(root: Path, memo: ParseMemo | None) -> list:
    return load_manifests(root, allowed_bytecode_dirs=(), memo=memo)


def test_only_changed_files_are_parsed_and_the_answer_is_a_fresh_read_s(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memo, parses = ParseMemo(), Parses(monkeypatch)
    assert _load(source, memo) == _load(source, None)
    assert parses.count == 6  # 3 files, with and without the memo
    # An edit of one file, same size (what a stat fingerprint could miss):
    (source / "b.yaml").write_text(_manifest("b", "sys_enter_add"))
    parses.count = 0
    again = _load(source, memo)
    assert parses.count == 1
    assert again == _load(source, None)
    assert [m.spec.get("names") for m in again if m.name == "b"] == [["syscalls/sys_enter_add"]]


def test_a_new_checkout_of_the_source_parses_only_what_changed(
    source: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A git source is checked out into a new directory per commit: the files that did not
    change are not parsed again, and what is returned lies in the new directory."""
    memo, parses = ParseMemo(), Parses(monkeypatch)
    _load(source, memo)
    commit = tmp_path_factory.mktemp("checkouts") / "next"
    shutil.copytree(source, commit)
    (commit / "b.yaml").write_text(_manifest("b", "sys_enter_add"))
    parses.count = 0
    again = _load(commit, memo)
    assert parses.count == 1
    assert again == _load(commit, None)
    docs, _ = loader.load_file(commit / "a.yaml", commit, commit, memo=memo)
    assert memo.hits == 3 and docs[0].path == commit / "a.yaml"


def test_what_it_returns_is_a_copy(source: Path) -> None:
    memo = ParseMemo()
    path = source / "a.yaml"
    memo.round()
    first, _ = loader.load_file(path, source, source, memo=memo)
    first[0].data["spec"]["names"].append("changed by a caller")
    memo.round()
    second, _ = loader.load_file(path, source, source, memo=memo)
    assert memo.hits == 1
    assert second[0].data["spec"]["names"] == ["syscalls/sys_enter_acct"]


def test_problems_are_remembered_too(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (source / "c.yaml").write_text(_manifest("c", extra="  priority: on\n"))
    memo, parses = ParseMemo(), Parses(monkeypatch)
    answers = []
    for m in (memo, memo, None):
        with pytest.raises(ManifestError) as e:
            _load(source, m)
        answers.append(e.value.problems)
    assert answers[0] == answers[1] == answers[2]
    assert any("c.yaml:10: spec.priority" in str(p) for p in answers[0])
    assert parses.count == 3 + 0 + 3


def test_a_file_too_large_to_keep_is_parsed_every_time(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ParseMemo, "MAX_ENTRY", 10)
    memo, parses = ParseMemo(), Parses(monkeypatch)
    first = _load(source, memo)
    assert _load(source, memo) == first
    assert parses.count == 6 and memo.hits == 0


def test_a_file_not_read_in_a_round_is_forgotten(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memo, parses = ParseMemo(), Parses(monkeypatch)
    _load(source, memo)
    (source / "c.yaml").rename(source / "c.off")
    _load(source, memo)
    (source / "c.off").rename(source / "c.yaml")
    parses.count = 0
    _load(source, memo)
    assert parses.count == 1  # c.yaml again: its entry went with the round that did not read it


def test_the_plan_cache_digests_the_bytes_that_were_parsed(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digests: dict[str, bytes] = {}
    load_manifests(source, allowed_bytecode_dirs=(), memo=ParseMemo(), digests=digests)
    a = (source / "a.yaml").read_bytes()
    assert digests[str(source / "a.yaml")] == hashlib.sha256(a).digest()
    assert str(source / "nothing.yaml") not in digests
    expected = plancache.manifests_digest(source)
    reads: list[Path] = []
    real = plancache.read_manifest_bytes

    def counted(path: Path) -> bytes:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(plancache, "read_manifest_bytes", counted)
    assert plancache.manifests_digest(source, digests=digests.get) == expected
    assert reads == []  # every manifest came from the load


def test_a_kustomized_source_s_digests_cover_every_file_the_build_read(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    k = source / "k"
    k.mkdir()
    (k / "tp.o").write_bytes((source / "tp.o").read_bytes())
    (k / "d.yaml").write_text(_manifest("d"))
    (k / "patch.yaml").write_text("- op: replace\n  path: /spec/names/0\n  value: syscalls/x\n")
    (k / "kustomization.yaml").write_text(
        "resources: [d.yaml]\n"
        "patches:\n  - path: patch.yaml\n    target: {kind: TracepointProgram, name: d}\n"
    )
    digests: dict[str, bytes] = {}
    load_manifests(source, allowed_bytecode_dirs=(), digests=digests)
    for name in ("a.yaml", "k/kustomization.yaml", "k/d.yaml", "k/patch.yaml"):
        assert digests[str(source / name)] == hashlib.sha256((source / name).read_bytes()).digest()
    reads: list[Path] = []
    real = plancache.read_manifest_bytes

    def counted(path: Path) -> bytes:
        reads.append(path)
        return real(path)

    expected = plancache.manifests_digest(source, [str(k / "d.yaml"), str(k / "patch.yaml")])
    monkeypatch.setattr(plancache, "read_manifest_bytes", counted)
    read = [str(k / "d.yaml"), str(k / "patch.yaml")]
    assert plancache.manifests_digest(source, read, digests.get) == expected
    assert reads == []
