"""The CI examples in contrib/ci/: valid for GitHub and GitLab (their official schemas, vendored
in check-jsonschema, offline), clean for yamllint, and the steps they call run for real here,
against a real source and a private bpffs root and state dir, with a fake ``gh``/``curl`` that
records what would be posted."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import support

CI = support.REPO / "contrib" / "ci"
GITHUB = CI / "github-actions.yml"
GITLAB = CI / "gitlab-ci.yml"
VENV_BIN = support.REPO / ".venv" / "bin"
TP_O = support.REPO / "manifests" / "examples" / "bytecode" / "tracepoint_counter.o"
TP = "syscalls/sys_enter_getppid"

MANIFEST = f"""apiVersion: bpfman.io/v1alpha1
kind: TracepointProgram
metadata:
  name: ci-{{name}}
spec:
  bpffunctionname: tp_hits
  bytecode:
    path: ../bytecode/tracepoint_counter.o
  names: [{TP}]
"""
BAD = """apiVersion: bpfman.io/v1alpha1
kind: TracepointProgram
metadata:
  name: ci-bad
spec:
  bpffunctionname: tp_hits
  bytecode:
    path: ../bytecode/missing.o
  names: [syscalls/sys_enter_getppid]
"""

# A stand-in for gh and curl: records its arguments, its stdin and the file a --body-file or
# --data-urlencode body@FILE names (as it was when posted), one JSON line per call.
RECORDER = """#!/usr/bin/env python3
import json, os, sys
args = sys.argv[1:]
body = None
for i, a in enumerate(args):
    if a == "--body-file":
        body = open(args[i + 1]).read()
    if a.startswith("body@"):
        body = open(a[len("body@"):]).read()
stdin = "" if sys.stdin.isatty() else sys.stdin.read()
with open(os.environ["RECORD"], "a") as f:
    f.write(json.dumps({"tool": os.path.basename(sys.argv[0]), "args": args,
                        "stdin": stdin, "body": body}) + "\\n")
"""


def load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


# --- the files themselves -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "schema"), [(GITHUB, "vendor.github-workflows"), (GITLAB, "vendor.gitlab-ci")]
)
def test_valid_against_the_official_schema(path: Path, schema: str):
    p = subprocess.run(
        [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "ok -- validation done" in p.stdout


def test_schemas_do_catch_a_broken_file(tmp_path: Path):
    """The check is not vacuous: a job without runs-on/steps and a job with no script fail."""
    broken_gh = tmp_path / "gh.yml"
    broken_gh.write_text('"on": push\njobs:\n  x:\n    stepz: []\n')
    broken_gl = tmp_path / "gl.yml"
    broken_gl.write_text("x:\n  stage: build\n  scriptz: [true]\n")
    for path, schema in ((broken_gh, "vendor.github-workflows"), (broken_gl, "vendor.gitlab-ci")):
        p = subprocess.run(
            [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", schema, str(path)],
            capture_output=True,
            text=True,
        )
        assert p.returncode == 1, (schema, p.stdout)


def test_yamllint_is_clean():
    p = subprocess.run(
        [str(VENV_BIN / "yamllint"), "--strict", str(GITHUB), str(GITLAB)],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stdout + p.stderr


def test_github_workflow_validates_everywhere_plans_on_requests_applies_on_main():
    doc = load(GITHUB)
    assert set(doc["on"]) == {"push", "pull_request"}
    jobs = doc["jobs"]
    assert list(jobs) == ["validate", "plan", "apply"]
    assert "if" not in jobs["validate"]  # every push and pull request
    assert "self-hosted" in jobs["plan"]["runs-on"] and "self-hosted" in jobs["apply"]["runs-on"]
    assert "pull_request" in jobs["plan"]["if"]
    # A fork's pull request never runs on a host runner.
    assert "head.repo.full_name == github.repository" in jobs["plan"]["if"]
    assert jobs["plan"]["permissions"]["pull-requests"] == "write"
    assert "refs/heads/main" in jobs["apply"]["if"] and "push" in jobs["apply"]["if"]
    post = jobs["plan"]["steps"][-1]
    assert post["run"].startswith("contrib/ci/post-comment.sh")
    assert post["if"].startswith("always()")  # a failed plan is commented too
    # Untrusted values reach the shell through the environment, never pasted into a script.
    for job in jobs.values():
        for step in job["steps"]:
            assert "${{" not in step.get("run", ""), step


def test_gitlab_pipeline_has_the_same_three_stages():
    doc = load(GITLAB)
    assert doc["stages"] == ["validate", "plan", "apply"]
    assert "rules" not in doc["validate"]
    assert doc["plan"]["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}]
    assert doc["plan"]["tags"] == doc["apply"]["tags"] == ["bpfman-host"]
    assert doc["plan"]["after_script"] == ["contrib/ci/post-comment.sh bpfman-plan.md"]
    assert doc["plan"]["artifacts"]["paths"] == ["bpfman-plan.md"]
    assert doc["plan"]["artifacts"]["when"] == "always"
    assert doc["apply"]["rules"] == [{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"}]


def commands(path: Path) -> list[str]:
    """Every shell line the file runs."""
    doc = load(path)
    out: list[str] = []
    if path == GITHUB:
        for job in doc["jobs"].values():
            out += [s["run"] for s in job["steps"] if "run" in s]
    else:
        for job in doc.values():
            if isinstance(job, dict):
                out += job.get("script", []) + job.get("after_script", [])
    return out


@pytest.mark.parametrize("path", [GITHUB, GITLAB])
def test_every_script_called_exists_is_executable_and_parses(path: Path):
    called = {m for c in commands(path) for m in re.findall(r"contrib/ci/[\w.-]+\.sh", c)}
    assert {Path(c).name for c in called} >= {"validate.sh", "plan-markdown.sh", "apply.sh"}
    for rel in called:
        script = support.REPO / rel
        assert os.access(script, os.X_OK), rel
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, rel


# --- the steps, run here ----------------------------------------------------------------------


def config_repo(tmp: Path, *, bad: bool = False) -> Path:
    """A config repository as the workflows expect it: manifests/, bytecode/, contrib/ci/."""
    repo = tmp / "config"
    (repo / "manifests").mkdir(parents=True)
    (repo / "bytecode").mkdir()
    shutil.copy(TP_O, repo / "bytecode")
    name = support.unique("t")
    (repo / "manifests" / "tp.yaml").write_text(MANIFEST.format(name=name))
    if bad:
        (repo / "manifests" / "bad.yaml").write_text(BAD)
    shutil.copytree(CI, repo / "contrib" / "ci")
    return repo


def fake_tools(tmp: Path) -> Path:
    bin_ = tmp / "fakebin"
    bin_.mkdir(exist_ok=True)
    for tool in ("gh", "curl"):
        (bin_ / tool).write_text(RECORDER)
        (bin_ / tool).chmod(0o755)
    return bin_


def environment(tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BPFMAN_", "GITHUB_", "GITLAB_", "CI_"))
    }
    env["PATH"] = f"{fake_tools(tmp)}:{VENV_BIN}:{env['PATH']}"
    env["RECORD"] = str(tmp / "record.jsonl")
    env.update(extra)
    return env


def recorded(tmp: Path) -> list[dict]:
    path = tmp / "record.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def run(cmd: list[str] | str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, shell=isinstance(cmd, str)
    )


def test_validate_step(tmp_path: Path):
    """No root, no host: as on a GitHub-hosted runner or in a Docker image."""
    repo = config_repo(tmp_path)
    env = environment(tmp_path)
    (step,) = [s["run"] for s in load(GITHUB)["jobs"]["validate"]["steps"] if "validate" in str(s)]
    env["BPFMAN_MANIFESTS"] = load(GITHUB)["env"]["BPFMAN_MANIFESTS"]
    p = run(step, repo, env)
    assert p.returncode == 0, p.stderr
    assert "Success! 1 manifest valid." in p.stdout
    (repo / "manifests" / "bad.yaml").write_text(BAD)
    p = run(step, repo, env)
    assert p.returncode == 1
    assert "bad.yaml:8: spec.bytecode.path:" in p.stderr
    # The manifests alone are not a source here: their bytecode is outside manifests/.
    (repo / "manifests" / "bad.yaml").unlink()
    p = run(["contrib/ci/validate.sh", "manifests"], repo, env)
    assert p.returncode == 1 and "leaves the source root" in p.stderr


@pytest.fixture
def host(bpffs_root: Path, state_dir: Path):
    """bpfman's environment for a private root and state dir; everything applied is destroyed."""
    env = {"BPFMAN_BPFFS_ROOT": str(bpffs_root), "BPFMAN_STATE_DIR": str(state_dir)}
    yield env
    subprocess.run(
        [support.BPFMAN, "destroy", "--auto-approve"],
        env={**os.environ, **env},
        capture_output=True,
    )


def github_expressions(text: str, values: dict[str, str]) -> str:
    """``${{ expr }}`` as GitHub would substitute it, from ``values``."""
    return re.sub(r"\$\{\{\s*(.*?)\s*\}\}", lambda m: values[m.group(1)], text)


def run_github_job(job: str, repo: Path, tmp: Path, host: dict[str, str], event: dict[str, str]):
    """The job's ``run`` steps in order, as a runner would: workflow, job and step env (with
    expressions substituted), step outputs through $GITHUB_OUTPUT, ``if: always()`` steps run
    after a failure and other steps skipped."""
    doc = load(GITHUB)
    outputs: dict[str, str] = {}
    failed = False
    results = []
    for step in doc["jobs"][job]["steps"]:
        if "run" not in step:
            continue  # actions/checkout and the like: the repository is already here
        if failed and not str(step.get("if", "")).startswith("always()"):
            continue
        out_file = tmp / f"output-{step.get('id', 'x')}"
        out_file.write_text("")
        values = {**event, **{f"steps.plan.outputs.{k}": v for k, v in outputs.items()}}
        step_env = {k: github_expressions(str(v), values) for k, v in step.get("env", {}).items()}
        env = environment(
            tmp,
            GITHUB_ACTIONS="true",
            GITHUB_REPOSITORY="example/config",
            GITHUB_OUTPUT=str(out_file),
            **{k: str(v) for k, v in doc["env"].items()},
            **host,
            **step_env,
        )
        p = run(["bash", "-e", "-c", step["run"]], repo, env)
        results.append(p)
        failed = failed or p.returncode != 0
        for line in out_file.read_text().splitlines():
            key, _, value = line.partition("=")
            outputs[key] = value
    return results, outputs


GITHUB_EVENT = {"github.token": "ghs_fake", "github.event.pull_request.number": "42"}


@pytest.mark.kernel
def test_github_plan_job_comments_the_markdown_plan(no_leaks, host, tmp_path: Path):
    repo = config_repo(tmp_path)
    results, outputs = run_github_job("plan", repo, tmp_path, host, GITHUB_EVENT)
    assert [p.returncode for p in results] == [0, 0], [p.stderr for p in results]
    assert outputs == {"has_changes": "true", "markdown": "bpfman-plan.md"}
    markdown = (repo / "bpfman-plan.md").read_text()
    (call,) = recorded(tmp_path)
    assert call["tool"] == "gh"
    assert call["args"] == [
        "pr",
        "comment",
        "42",
        "--repo",
        "example/config",
        "--body-file",
        "bpfman-plan.md",
    ]
    assert call["body"] == markdown
    assert markdown.startswith("<!-- bpfman-plan host=")
    assert "### bpfman plan: 1 to add, 0 to change, 0 to destroy" in markdown
    assert "<summary><code>+</code> <code>TracepointProgram/ci" in markdown
    assert "(<code>tp.yaml:1</code>)" in markdown
    assert "**Plan: 1 to add, 0 to change, 0 to destroy.**" in markdown


@pytest.mark.kernel
def test_github_plan_job_comments_why_an_invalid_source_has_no_plan(host, tmp_path: Path):
    repo = config_repo(tmp_path, bad=True)
    results, outputs = run_github_job("plan", repo, tmp_path, host, GITHUB_EVENT)
    assert [p.returncode for p in results] == [1, 0]  # the job fails; the comment is posted
    assert outputs["has_changes"] == "false"
    (call,) = recorded(tmp_path)
    assert "### bpfman plan: failed" in call["body"]
    assert "bad.yaml:8: spec.bytecode.path:" in call["body"]


@pytest.mark.kernel
def test_github_apply_job_then_the_plan_has_no_changes(no_leaks, host, tmp_path: Path):
    repo = config_repo(tmp_path)
    results, _ = run_github_job("apply", repo, tmp_path, host, {})
    assert results[-1].returncode == 0, results[-1].stderr
    assert "Apply complete! Resources: 1 added, 0 changed, 0 destroyed." in results[-1].stdout
    listed = run([support.BPFMAN, "list", "--json"], repo, {**os.environ, **host})
    (attachment,) = json.loads(listed.stdout)["attachments"]
    assert attachment["address"].endswith(f"[{TP}]")
    # The next pull request's plan: nothing to do, said as much.
    results, outputs = run_github_job("plan", repo, tmp_path, host, GITHUB_EVENT)
    assert outputs["has_changes"] == "false"
    assert "### bpfman plan: no changes" in recorded(tmp_path)[-1]["body"]
    # apply.sh refuses to run unprivileged rather than apply nothing (`id` says uid 1000).
    env = environment(tmp_path, **host)
    (tmp_path / "fakebin" / "id").write_text("#!/bin/sh\necho 1000\n")
    (tmp_path / "fakebin" / "id").chmod(0o755)
    p = run(["contrib/ci/apply.sh", ".", "--path", "manifests"], repo, env)
    assert p.returncode == 1 and "must run as root" in p.stderr


@pytest.mark.kernel
def test_gitlab_plan_job_posts_a_merge_request_note(no_leaks, host, tmp_path: Path):
    doc = load(GITLAB)
    repo = config_repo(tmp_path)
    env = environment(
        tmp_path,
        GITLAB_CI="true",
        CI_API_V4_URL="https://gitlab.example.com/api/v4",
        CI_PROJECT_ID="7",
        CI_MERGE_REQUEST_IID="3",
        BPFMAN_GITLAB_TOKEN="glpat-secret",
        **{k: str(v) for k, v in doc["variables"].items()},
        **host,
    )
    for line in doc["plan"]["script"] + doc["plan"]["after_script"]:
        p = run(line, repo, env)
        assert p.returncode == 0, (line, p.stderr)
    (call,) = recorded(tmp_path)
    assert call["tool"] == "curl"
    assert call["args"][-1] == "https://gitlab.example.com/api/v4/projects/7/merge_requests/3/notes"
    assert call["args"][-3:-1] == ["--data-urlencode", "body@bpfman-plan.md"]
    assert "--header" in call["args"] and "@-" in call["args"]
    # The token goes to curl on stdin, not on its command line (visible in ps).
    assert call["stdin"] == "PRIVATE-TOKEN: glpat-secret\n"
    assert not any("glpat-secret" in a for a in call["args"])
    assert call["body"] == (repo / "bpfman-plan.md").read_text()
    assert "### bpfman plan: 1 to add, 0 to change, 0 to destroy" in call["body"]


def test_post_comment_outside_ci_prints_the_file(tmp_path: Path):
    md = tmp_path / "p.md"
    md.write_text("### bpfman plan: no changes\n")
    p = run([str(CI / "post-comment.sh"), str(md)], tmp_path, environment(tmp_path))
    assert p.returncode == 0 and p.stdout == md.read_text()
    assert recorded(tmp_path) == []
