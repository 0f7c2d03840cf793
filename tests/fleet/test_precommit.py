"""bpfman's pre-commit hook (.pre-commit-hooks.yaml), run by the real pre-commit on sample
config repositories made here with ``git init``: ``pre-commit try-repo`` and a real commit.

The hook is ``language: python``: pre-commit installs the hook repository (this checkout's
package, copied into a git repository once per session) into a virtualenv of its own, from the
pip index the machine is configured with, so nothing but pre-commit need be installed. No
``bpfman`` is on PATH here, so the hook can only have run the one it installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import support

HOOKS = support.REPO / ".pre-commit-hooks.yaml"
VENV_BIN = support.REPO / ".venv" / "bin"
TP_O = support.REPO / "manifests" / "examples" / "bytecode" / "tracepoint_counter.o"

GOOD = """apiVersion: bpfman.io/v1alpha1
kind: TracepointProgram
metadata:
  name: pc-good
spec:
  bpffunctionname: tp_hits
  bytecode:
    path: ../bytecode/tracepoint_counter.o
  names: [syscalls/sys_enter_getppid]
"""
BAD = GOOD.replace("pc-good", "pc-bad").replace("tp_hits", "no_such_function")


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


@pytest.fixture(scope="session")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pre-commit's cache for the session: the hook's virtualenv is built once."""
    return tmp_path_factory.mktemp("pre-commit-home")


@pytest.fixture
def env(tmp_path: Path, shared: Path) -> dict[str, str]:
    """pre-commit's environment: its cache shared by the session, no bpfman on PATH."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("BPFMAN_", "PRE_COMMIT"))}
    e["PATH"] = os.pathsep.join(
        p for p in e["PATH"].split(os.pathsep) if not (Path(p) / "bpfman").exists()
    )
    e["PRE_COMMIT_HOME"] = str(shared)
    e["GIT_CONFIG_GLOBAL"] = str(tmp_path / "gitconfig")  # no user's hooksPath or templates
    (tmp_path / "gitconfig").write_text("[init]\n\tdefaultBranch = main\n")
    return e


@pytest.fixture(scope="session")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A git repository holding bpfman as pre-commit fetches a hook repository: the package,
    its build files and the hook definition (this checkout's, committed or not). Returns it
    and its commit."""
    repo = tmp_path_factory.mktemp("hook-repo")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml"):
        shutil.copy(support.REPO / name, repo / name)
    shutil.copytree(support.REPO / "reconciler", repo / "reconciler", ignore=ignore)
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull}
    git(repo, "init", "-q", env=env)
    git(repo, "add", "-A", env=env)
    assert git(repo, "commit", "-q", "-m", "bpfman", env=env).returncode == 0
    return repo, git(repo, "rev-parse", "HEAD", env=env).stdout.strip()


def config_repo(tmp: Path, env: dict[str, str]) -> Path:
    """A config repository: manifests/ naming ../bytecode/, as in the docs."""
    repo = tmp / "config"
    (repo / "manifests").mkdir(parents=True)
    (repo / "bytecode").mkdir()
    shutil.copy(TP_O, repo / "bytecode")
    (repo / "manifests" / "good.yaml").write_text(GOOD)
    assert git(repo, "init", "-q", env=env).returncode == 0
    git(repo, "add", "-A", env=env)
    return repo


def pre_commit(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "pre-commit"), *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def test_the_hook_definition_is_valid_for_pre_commit():
    p = subprocess.run(
        [str(VENV_BIN / "pre-commit"), "validate-manifest", str(HOOKS)],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    (hook,) = yaml.safe_load(HOOKS.read_text())
    assert hook["id"] == "bpfman-validate"
    assert hook["entry"] == "bpfman validate"
    assert hook["pass_filenames"] is False  # the whole source, once: see contrib/ci/README.md


def test_try_repo_passes_a_valid_manifest(tmp_path: Path, env, hooks):
    source, _ = hooks
    repo = config_repo(tmp_path, env)
    p = pre_commit(repo, env, "try-repo", str(source), "bpfman-validate")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "bpfman validate" in p.stdout and "Passed" in p.stdout


def test_try_repo_fails_an_invalid_manifest_with_bpfmans_file_line(tmp_path: Path, env, hooks):
    source, _ = hooks
    repo = config_repo(tmp_path, env)
    (repo / "manifests" / "bad.yaml").write_text(BAD)
    git(repo, "add", "manifests/bad.yaml", env=env)
    p = pre_commit(repo, env, "try-repo", str(source), "bpfman-validate")
    assert p.returncode == 1, p.stdout
    assert "Failed" in p.stdout
    assert "Error: a manifest is invalid (1 problem); nothing was changed:" in p.stdout
    assert "manifests/bad.yaml:6: spec.bpffunctionname:" in p.stdout
    assert "no_such_function" in p.stdout


def test_the_hook_runs_only_when_a_manifest_or_bytecode_changes(tmp_path: Path, env, hooks):
    source, _ = hooks
    repo = config_repo(tmp_path, env)
    assert git(repo, "commit", "-q", "-m", "first", env=env).returncode == 0
    (repo / "README.md").write_text("docs\n")
    git(repo, "add", "README.md", env=env)
    p = pre_commit(repo, env, "try-repo", str(source), "bpfman-validate")
    assert p.returncode == 0
    assert "(no files to check)Skipped" in p.stdout


def test_a_commit_is_refused_by_the_installed_hook(tmp_path: Path, env, hooks):
    """The way a config repository uses it: .pre-commit-config.yaml, `pre-commit install`,
    `git commit`; `args: [--path, manifests]` so other YAML in the repository is not read."""
    source, rev = hooks
    repo = config_repo(tmp_path, env)
    config = {
        "repos": [
            {
                "repo": str(source),
                "rev": rev,
                "hooks": [{"id": "bpfman-validate", "args": ["--path", "manifests"]}],
            }
        ]
    }
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config))
    (repo / "mkdocs.yml").write_text("site_name: not a manifest\n")  # outside --path
    git(repo, "add", "-A", env=env)
    p = pre_commit(repo, env, "install")
    assert p.returncode == 0, p.stderr
    p = git(repo, "commit", "-m", "good", env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "bpfman validate" in p.stdout + p.stderr

    (repo / "manifests" / "bad.yaml").write_text(BAD)
    git(repo, "add", "-A", env=env)
    p = git(repo, "commit", "-m", "bad", env=env)
    assert p.returncode == 1
    assert "bad.yaml:6: spec.bpffunctionname:" in p.stdout + p.stderr
    assert git(repo, "rev-list", "--count", "HEAD", env=env).stdout.strip() == "1"
