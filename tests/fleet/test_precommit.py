"""bpfman's pre-commit hook (.pre-commit-hooks.yaml), run by the real pre-commit on sample
config repositories made here with ``git init``: ``pre-commit try-repo`` and a real commit."""

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


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """pre-commit and bpfman from the venv, pre-commit's cache private to the test."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("BPFMAN_", "PRE_COMMIT"))}
    e["PATH"] = f"{VENV_BIN}:{e['PATH']}"
    e["PRE_COMMIT_HOME"] = str(tmp_path / "pre-commit-home")
    e["GIT_CONFIG_GLOBAL"] = str(tmp_path / "gitconfig")  # no user's hooksPath or templates
    (tmp_path / "gitconfig").write_text("[init]\n\tdefaultBranch = main\n")
    return e


def hook_repo(tmp: Path, env: dict[str, str], hooks: str | None = None) -> tuple[Path, str]:
    """A git repository holding bpfman's hook definition (the file in this checkout, committed
    or not), as pre-commit fetches a hook repository. Returns it and its commit."""
    repo = tmp / "hook-repo"
    repo.mkdir()
    (repo / ".pre-commit-hooks.yaml").write_text(hooks or HOOKS.read_text())
    git(repo, "init", "-q", env=env)
    git(repo, "add", "-A", env=env)
    assert git(repo, "commit", "-q", "-m", "hooks", env=env).returncode == 0
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
        ["pre-commit", *args], cwd=repo, env=env, capture_output=True, text=True, check=False
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


def test_try_repo_passes_a_valid_manifest(tmp_path: Path, env):
    hooks, _ = hook_repo(tmp_path, env)
    repo = config_repo(tmp_path, env)
    p = pre_commit(repo, env, "try-repo", str(hooks), "bpfman-validate")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "bpfman validate" in p.stdout and "Passed" in p.stdout


def test_try_repo_fails_an_invalid_manifest_with_bpfmans_file_line(tmp_path: Path, env):
    hooks, _ = hook_repo(tmp_path, env)
    repo = config_repo(tmp_path, env)
    (repo / "manifests" / "bad.yaml").write_text(BAD)
    git(repo, "add", "manifests/bad.yaml", env=env)
    p = pre_commit(repo, env, "try-repo", str(hooks), "bpfman-validate")
    assert p.returncode == 1, p.stdout
    assert "Failed" in p.stdout
    assert "Error: a manifest is invalid (1 problem); nothing was changed:" in p.stdout
    assert "manifests/bad.yaml:6: spec.bpffunctionname:" in p.stdout
    assert "no_such_function" in p.stdout


def test_the_hook_runs_only_when_a_manifest_or_bytecode_changes(tmp_path: Path, env):
    hooks, _ = hook_repo(tmp_path, env)
    repo = config_repo(tmp_path, env)
    assert git(repo, "commit", "-q", "-m", "first", env=env).returncode == 0
    (repo / "README.md").write_text("docs\n")
    git(repo, "add", "README.md", env=env)
    p = pre_commit(repo, env, "try-repo", str(hooks), "bpfman-validate")
    assert p.returncode == 0
    assert "(no files to check)Skipped" in p.stdout


def test_a_commit_is_refused_by_the_installed_hook(tmp_path: Path, env):
    """The way a config repository uses it: .pre-commit-config.yaml, `pre-commit install`,
    `git commit`; `args: [--path, manifests]` so other YAML in the repository is not read."""
    hooks, rev = hook_repo(tmp_path, env)
    repo = config_repo(tmp_path, env)
    config = {
        "repos": [
            {
                "repo": str(hooks),
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


def test_language_python_would_install_bpfman_itself(tmp_path: Path, env):
    """Why the hook is ``language: system``, tried for real: pre-commit's python language
    installs the hook repository into its own virtualenv (that works offline, from the pip
    index configured on the machine), but the installed bpfman cannot find its schemas."""
    src = tmp_path / "bpfman-src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(support.REPO / name, src / name)
    for name in ("reconciler", "schemas"):
        shutil.copytree(support.REPO / name, src / name, ignore=ignore)
    hooks = HOOKS.read_text().replace("language: system", "language: python")
    (src / ".pre-commit-hooks.yaml").write_text(hooks)
    git(src, "init", "-q", env=env)
    git(src, "add", "-A", env=env)
    assert git(src, "commit", "-q", "-m", "src", env=env).returncode == 0
    repo = config_repo(tmp_path, env)
    p = pre_commit(repo, env, "try-repo", str(src), "bpfman-validate")
    if p.returncode != 0 and "site-packages/schemas/common.json" in p.stdout:
        pytest.xfail(
            "a non-editable install has no schemas/: reconciler/spec/schema.py reads them "
            "beside the source tree and pyproject.toml does not package them; once it does, "
            "switch .pre-commit-hooks.yaml to language: python"
        )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Passed" in p.stdout
