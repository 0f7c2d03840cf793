"""Where manifests may make bpfman read: the containment rules of reconciler.spec.paths, through
load_manifests as a caller uses them (fast, no root)."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest

from reconciler.hostfacts import Host, read_bytecode_dirs
from reconciler.spec import HostError, ManifestError, load_manifests
from reconciler.spec.loader import MAX_MANIFEST_SIZE
from reconciler.spec.paths import BytecodePolicy, is_within
from tests.unit.spec_support import bpf_object, xdp


def source(tmp: Path, path: str, extra: dict[str, str] | None = None) -> Path:
    """``tmp/src`` with the test object at ``src/bytecode/spec_progs.o`` and one manifest
    ``src/m/x.yaml`` naming ``path``; ``tmp/outside/spec_progs.o`` is a copy outside it."""
    src = tmp / "src"
    (src / "bytecode").mkdir(parents=True)
    (src / "m").mkdir()
    (tmp / "outside").mkdir()
    shutil.copyfile(bpf_object(), src / "bytecode" / "spec_progs.o")
    shutil.copyfile(bpf_object(), tmp / "outside" / "spec_progs.o")
    (src / "m" / "x.yaml").write_text(xdp(bytecode=f"{{path: {path}}}"))
    for name, text in (extra or {}).items():
        (src / name).write_text(text)
    return src


def problems(root: Path, allowed=(), source_root: Path | None = None) -> list[str]:
    with pytest.raises(ManifestError) as info:
        load_manifests(root, allowed, source_root=source_root)
    return info.value.problems


def test_relative_path_inside_the_source_is_allowed(tmp_path: Path) -> None:
    assert len(load_manifests(source(tmp_path, "../bytecode/spec_progs.o"), ())) == 1


def test_dotdot_leaving_the_source_is_refused(tmp_path: Path) -> None:
    root = source(tmp_path, "../../outside/spec_progs.o")
    [problem] = problems(root)
    assert problem.startswith("m/x.yaml:7: spec.bytecode.path: ../../outside/spec_progs.o leaves")
    assert "bytecode_dirs" in problem


def test_dotdot_that_comes_back_inside_is_allowed(tmp_path: Path) -> None:
    root = source(tmp_path, "../../src/bytecode/spec_progs.o")
    assert len(load_manifests(root, ())) == 1


def test_symlink_leading_outside_is_refused(tmp_path: Path) -> None:
    root = source(tmp_path, "../bytecode/link.o")
    (root / "bytecode" / "link.o").symlink_to(tmp_path / "outside" / "spec_progs.o")
    [problem] = problems(root)
    assert f"through a symlink: {tmp_path.resolve()}/outside/spec_progs.o" in problem


def test_symlink_inside_the_source_is_allowed(tmp_path: Path) -> None:
    root = source(tmp_path, "../bytecode/link.o")
    (root / "bytecode" / "link.o").symlink_to("spec_progs.o")
    assert len(load_manifests(root, ())) == 1


def test_symlinked_directory_leading_outside_is_refused(tmp_path: Path) -> None:
    root = source(tmp_path, "../objs/spec_progs.o")
    (root / "objs").symlink_to(tmp_path / "outside", target_is_directory=True)
    found = problems(root)
    assert any(p.startswith("objs:1: is a symlink to a directory outside") for p in found)
    assert any("m/x.yaml:7: spec.bytecode.path: ../objs/spec_progs.o leaves" in p for p in found)


def test_absolute_path_needs_an_allowed_directory(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    root = source(tmp_path, f"{outside}/spec_progs.o")
    [problem] = problems(root)
    assert "is not under a directory this host allows (allowed: none)" in problem
    assert f"bytecode_dirs: [{outside.resolve()}]" in problem
    assert len(load_manifests(root, [outside])) == 1


def test_allowed_directory_does_not_allow_its_siblings_or_links_out(tmp_path: Path) -> None:
    allowed = tmp_path / "outside"
    (tmp_path / "outside-evil").mkdir()
    shutil.copyfile(bpf_object(), tmp_path / "outside-evil" / "x.o")
    root = source(tmp_path, f"{tmp_path}/outside-evil/x.o")
    assert "not under a directory this host allows" in problems(root, [allowed])[0]
    (allowed / "link.o").symlink_to(tmp_path / "outside-evil" / "x.o")
    (root / "m" / "x.yaml").write_text(xdp(bytecode=f"{{path: {allowed}/link.o}}"))
    assert "through a symlink" in problems(root, [allowed])[0]


def test_absolute_path_into_the_source_is_allowed(tmp_path: Path) -> None:
    root = source(tmp_path, f"{tmp_path}/src/bytecode/spec_progs.o")
    assert len(load_manifests(root, ())) == 1


def test_source_root_above_a_path_subdirectory(tmp_path: Path) -> None:
    """--path m: manifests are read from src/m, bytecode may come from anywhere in src."""
    root = source(tmp_path, "../bytecode/spec_progs.o")
    assert "leaves the source root" in problems(root / "m")[0]
    assert len(load_manifests(root / "m", (), source_root=root)) == 1


def test_no_allowed_dirs_given_means_unconfined(tmp_path: Path) -> None:
    """Trusted callers (the test suites) pass nothing; the CLI always passes a list."""
    root = source(tmp_path, "../../outside/spec_progs.o")
    assert len(load_manifests(root)) == 1


def test_manifest_symlink_leading_outside_is_refused(tmp_path: Path) -> None:
    root = source(tmp_path, "../bytecode/spec_progs.o")
    (tmp_path / "outside" / "y.yaml").write_text("not: read\n")
    (root / "y.yaml").symlink_to(tmp_path / "outside" / "y.yaml")
    [problem] = problems(root)
    assert problem.startswith("y.yaml:1: is a symlink to a file outside the source root")


def test_manifest_symlink_inside_is_read_once(tmp_path: Path) -> None:
    root = source(tmp_path, "../bytecode/spec_progs.o")
    (root / "m" / "alias.yml").symlink_to("x.yaml")
    assert "XdpProgram/xdp-counter is defined twice" in problems(root)[0]


def test_oversized_manifest_is_refused_unread(tmp_path: Path) -> None:
    root = source(tmp_path, "../bytecode/spec_progs.o")
    with (root / "big.yaml").open("wb") as f:
        f.truncate(MAX_MANIFEST_SIZE + 1)
    [problem] = problems(root)
    assert problem.startswith("big.yaml:1: file is 4194305 bytes, over the 4 MiB limit")


def test_policy_on_a_single_file_root(tmp_path: Path) -> None:
    root = source(tmp_path, "../bytecode/spec_progs.o")
    policy = BytecodePolicy.of(root / "m" / "x.yaml")
    assert policy.source_root == (root / "m").resolve()
    assert policy.check(root / "m" / "x.yaml", "../bytecode/spec_progs.o") is not None


def test_host_config_bytecode_dirs(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    assert read_bytecode_dirs(config) == []  # no file: none allowed
    config.write_text("interfaces: {eth0: {xdpmode: generic}}\n")
    assert Host(config_file=config).bytecode_dirs() == []
    config.write_text("bytecode_dirs: [/opt/bpf, /usr/lib/bpf]\n")
    assert Host(config_file=config).bytecode_dirs() == ["/opt/bpf", "/usr/lib/bpf"]
    for bad in ("bytecode_dirs: opt\n", "bytecode_dirs: [opt/bpf]\n", "bytecode_dirs: [/]\n"):
        config.write_text(bad)
        with pytest.raises(HostError, match="bytecode_dirs"):
            read_bytecode_dirs(config)


WITHIN = ["/", "/a", "/a/b", "/ab", "/a/b/c", "/a/../b", "/a/..", "/b", "/a/bc", "/a b/c", "/a/b/"]


def test_is_within_agrees_with_pathlib() -> None:
    """It compares strings; it must answer as ``directory in path.parents`` does."""
    for a, b in itertools.product(map(Path, WITHIN), map(Path, WITHIN)):
        assert is_within(a, b) == (a == b or b in a.parents), (a, b)
