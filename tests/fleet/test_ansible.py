"""The Ansible collection (contrib/ansible) driven by the real ``ansible-playbook``.

The example playbook (contrib/ansible/examples/site.yml, its group_vars and the role
``bpfman.host.bpfman``) runs against localhost over the local connection, with a private bpffs
root, state dir, labels file and manifest destination, so nothing touches the host's own bpfman.
Results are read twice: as a person sees them (the default callback's text, ``--diff``) and as
data (a small callback plugin, written by the test, records every task result as a JSON line);
the kernel is checked with bpftool.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import support

ANSIBLE = support.REPO / "contrib" / "ansible"
EXAMPLES = ANSIBLE / "examples"
VENV = support.REPO / ".venv" / "bin"
PLAYBOOK = VENV / "ansible-playbook"
TRACEPOINT_O = support.REPO / "manifests" / "examples" / "bytecode" / "tracepoint_counter.o"
MODULE_TASK = "Plan and apply the eBPF manifests with bpfman"
TP = "syscalls/sys_enter_getppid"

pytestmark = pytest.mark.skipif(not PLAYBOOK.exists(), reason="ansible-core is not installed")

RECORDER = '''
import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    """Appends every task result to $RECORD_RESULTS_TO as one JSON line."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "record"
    CALLBACK_NEEDS_ENABLED = True

    def _record(self, status, result):
        data = getattr(result, "result", None)
        if data is None:
            data = result._result
        task = getattr(result, "task", None) or result._task
        line = {"task": task.get_name(), "status": status, "result": data, "t": time.time()}
        with open(os.environ["RECORD_RESULTS_TO"], "a") as f:
            f.write(json.dumps(line, default=str) + "\\n")

    def v2_runner_on_ok(self, result):
        self._record("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record("failed", result)

    def v2_runner_on_skipped(self, result):
        self._record("skipped", result)
'''


def tracepoint_manifest(name: str, role: str, extra: str = "") -> str:
    return f"""apiVersion: bpfman.io/v1alpha1
kind: TracepointProgram
metadata:
  name: {name}
spec:
  bpffunctionname: tp_hits
{extra}  nodeselector:
    matchLabels:
      role: {role}
  bytecode:
    path: ../bytecode/tracepoint_counter.o
  names: [{TP}]
"""


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    results: list[dict]
    adhoc: bool = False

    def task(self, name: str) -> dict:
        # Role tasks are named "ROLE : NAME".
        found = [r for r in self.results if r["task"].split(" : ", 1)[-1] == name]
        assert len(found) == 1, f"task {name!r} ran {len(found)} times\n{self.stdout}"
        return found[0]

    @property
    def module(self) -> dict:
        if self.adhoc:
            return self.results[0]
        return self.task(MODULE_TASK)


@dataclass
class Fleet:
    """One managed host (localhost, in the inventory group ``web``) and the example playbook."""

    tmp: Path
    root: Path
    state: Path
    src: Path  # the manifest directory on the "controller"
    dest: Path  # where the role ships it on the "host"
    labels_file: Path

    def env(self, record: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BPFMAN_", "ANSIBLE_"))}
        home = self.tmp / "ansible-home"
        env.update(
            HOME=str(self.tmp / "home"),
            ANSIBLE_CONFIG=str(self.tmp / "ansible.cfg"),
            ANSIBLE_HOME=str(home),
            ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
            ANSIBLE_REMOTE_TEMP=str(self.tmp / "remote-tmp"),
            ANSIBLE_PERSISTENT_CONTROL_PATH_DIR=str(home / "pc"),
            ANSIBLE_COLLECTIONS_PATH=str(ANSIBLE),
            ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
            ANSIBLE_CALLBACK_PLUGINS=str(self.tmp / "callbacks"),
            ANSIBLE_CALLBACKS_ENABLED="record",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_RETRY_FILES_ENABLED="false",
            ANSIBLE_DEPRECATION_WARNINGS="false",
            ANSIBLE_LOCALHOST_WARNING="false",
            PYTHONWARNINGS="ignore",
            RECORD_RESULTS_TO=str(record),
        )
        return env

    def playbook(self, *args: str, **extra_vars: object) -> Run:
        record = self.tmp / "record.jsonl"
        record.unlink(missing_ok=True)
        evars = {
            "bpfman_executable": str(VENV / "bpfman"),
            "bpfman_bpffs_root": str(self.root),
            "bpfman_state_dir": str(self.state),
            "bpfman_labels_file": str(self.labels_file),
            "bpfman_manifests_dir": str(self.src),
            "bpfman_manifests_dest": str(self.dest),
            **extra_vars,
        }
        cmd = [str(PLAYBOOK), "-i", str(self.tmp / "inventory.ini"), str(EXAMPLES / "site.yml")]
        cmd += ["-e", json.dumps(evars), *args]
        p = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            cwd=self.tmp,
            env=self.env(record),
            timeout=120,
        )
        results = [json.loads(line) for line in record.read_text().splitlines()]
        return Run(p.returncode, p.stdout, p.stderr, results)

    def module(self, *flags: str, **params: object) -> Run:
        """Runs the module alone (``ansible -m``), with this host's private root and state."""
        record = self.tmp / "record.jsonl"
        record.unlink(missing_ok=True)
        args = {
            "bpfman": str(VENV / "bpfman"),
            "bpffs_root": str(self.root),
            "state_dir": str(self.state),
            "labels_file": str(self.labels_file),
            **params,
        }
        cmd = [str(VENV / "ansible"), "all", "-i", str(self.tmp / "inventory.ini")]
        cmd += ["-m", "bpfman.host.bpfman_apply", "-a", json.dumps(args), *flags]
        env = self.env(record) | {"ANSIBLE_LOAD_CALLBACK_PLUGINS": "true"}
        p = subprocess.run(
            cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=self.tmp, env=env
        )
        results = [json.loads(line) for line in record.read_text().splitlines()]
        assert len(results) == 1, p.stdout + p.stderr
        return Run(p.returncode, p.stdout, p.stderr, results, adhoc=True)

    def bpfman(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(VENV / "bpfman"), "--bpffs-root", str(self.root), "--state-dir", str(self.state)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("BPFMAN_")}
        return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env)

    def pin(self, name: str, what: str) -> Path:
        return self.root / "TracepointProgram" / name / TP.replace("/", "%2F") / what


@pytest.fixture
def fleet(tmp_path: Path, bpffs_root: Path, state_dir: Path, no_leaks) -> Iterator[Fleet]:
    for d in ("home", "ansible-home", "remote-tmp", "callbacks"):
        (tmp_path / d).mkdir()
    (tmp_path / "callbacks" / "record.py").write_text(RECORDER)
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")
    python = VENV / "python"
    (tmp_path / "inventory.ini").write_text(
        "[web]\n"
        f"localhost ansible_connection=local ansible_python_interpreter={python}"
        " ansible_become=false\n"
    )
    src = tmp_path / "controller" / "ebpf"
    (src / "bytecode").mkdir(parents=True)
    (src / "manifests").mkdir()
    shutil.copy(TRACEPOINT_O, src / "bytecode" / TRACEPOINT_O.name)
    (src / "manifests" / "web.yaml").write_text(tracepoint_manifest("ans-web", "web"))
    (src / "manifests" / "db.yaml").write_text(tracepoint_manifest("ans-db", "db"))
    f = Fleet(
        tmp=tmp_path,
        root=bpffs_root,
        state=state_dir,
        src=src,
        dest=tmp_path / "host" / "etc-bpfman" / "manifests",
        labels_file=tmp_path / "host" / "etc-bpfman" / "labels.yaml",
    )
    try:
        yield f
    finally:
        # Whatever the test left loaded goes, whether it passed or not (no_leaks then checks).
        f.bpfman("destroy", "--auto-approve")


def tp_hits_progs() -> set[int]:
    return {p["id"] for p in support.bpftool_json("prog", "show") if p.get("name") == "tp_hits"}  # type: ignore[union-attr]


@pytest.mark.kernel
def test_check_mode_shows_the_plan_and_changes_nothing(fleet: Fleet):
    before = tp_hits_progs()

    run = fleet.playbook("--check", "--diff")

    assert run.rc == 0, run.stdout + run.stderr
    result = run.module["result"]
    assert result["changed"] is True
    plan = result["plan"]
    assert plan["has_changes"] is True and plan["summary"] == {"add": 1, "change": 0, "destroy": 0}
    # The group_vars' labels (role: web) were used, from a staged copy of the labels file.
    assert [c["address"] for c in plan["resource_changes"]] == [f"TracepointProgram/ans-web[{TP}]"]
    assert "apply" not in result
    # --diff printed the plan as bpfman renders it, and the labels file as it would be written.
    assert f"# TracepointProgram/ans-web[{TP}] will be loaded" in run.stdout
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in run.stdout
    assert '+"role": "web"' in run.stdout
    # Nothing changed: no pin, no program, no labels file, no shipped manifests, no state.
    assert not fleet.root.exists() or not any(fleet.root.iterdir())
    assert tp_hits_progs() - before == set()
    assert not fleet.labels_file.exists() and not fleet.dest.exists()
    assert not (fleet.state / "state.json").exists()
    staged = run.task("Stage the labels and manifests for check mode")["result"]["path"]
    assert not os.path.exists(staged)  # the staging directory is gone again


@pytest.mark.kernel
def test_apply_loads_what_the_plan_showed_and_a_second_run_changes_nothing(fleet: Fleet):
    run = fleet.playbook("--diff")

    assert run.rc == 0, run.stdout + run.stderr
    result = run.module["result"]
    assert result["changed"] is True
    assert f"# TracepointProgram/ans-web[{TP}] will be loaded" in run.stdout
    (outcome,) = result["apply"]["outcomes"]
    assert outcome["address"] == f"TracepointProgram/ans-web[{TP}]"
    # bpftool, not bpfman, says the program is there and attached through the pinned link.
    prog = support.bpftool_json("prog", "show", "pinned", str(fleet.pin("ans-web", "prog")))
    link = support.bpftool_json("link", "show", "pinned", str(fleet.pin("ans-web", "link")))
    assert prog["id"] == outcome["prog_id"] and prog["name"] == "tp_hits"  # type: ignore[index]
    assert link["prog_id"] == outcome["prog_id"]  # type: ignore[index]
    assert not (fleet.root / "TracepointProgram" / "ans-db").exists()  # selects role: db only
    assert fleet.labels_file.read_text().count('"role": "web"') == 1
    assert (fleet.dest / "manifests" / "web.yaml").exists()

    again = fleet.playbook("--diff")

    assert again.rc == 0, again.stdout + again.stderr
    assert again.module["result"]["changed"] is False
    assert again.module["result"]["plan"]["has_changes"] is False
    assert "will be loaded" not in again.stdout
    assert "changed=0" in again.stdout.split("PLAY RECAP", 1)[1]
    assert support.bpftool_json("link", "show", "pinned", str(fleet.pin("ans-web", "link")))

    # A manifest removed on the controller is removed on the host, and its program unloaded.
    (fleet.src / "manifests" / "web.yaml").unlink()
    removed = fleet.playbook()
    assert removed.rc == 0, removed.stdout + removed.stderr
    assert removed.module["result"]["apply"]["result"]["destroyed"] == 1
    assert not (fleet.dest / "manifests" / "web.yaml").exists()
    assert not fleet.pin("ans-web", "prog").exists()


@pytest.mark.kernel
def test_state_absent_destroys_and_then_reports_no_change(fleet: Fleet):
    labels = {"role": "web"}
    loaded = fleet.module(source=str(fleet.src), labels=labels)
    assert loaded.rc == 0 and loaded.module["result"]["changed"] is True, loaded.stdout
    assert fleet.pin("ans-web", "link").exists()

    check = fleet.module("--check", "--diff", state="absent")
    assert check.rc == 0, check.stdout + check.stderr
    assert check.module["result"]["changed"] is True
    assert f"TracepointProgram/ans-web[{TP}] will be unloaded" in check.stdout
    assert fleet.pin("ans-web", "link").exists()

    gone = fleet.module(state="absent")
    assert gone.rc == 0, gone.stdout + gone.stderr
    assert gone.module["result"]["changed"] is True
    assert gone.module["result"]["apply"]["result"]["destroyed"] == 1
    assert not fleet.pin("ans-web", "prog").exists()

    again = fleet.module(state="absent")
    assert again.rc == 0 and again.module["result"]["changed"] is False, again.stdout


@pytest.mark.kernel
def test_a_bad_manifest_fails_the_task_with_bpfmans_message(fleet: Fleet):
    # Line 7 holds the misspelt field.
    (fleet.src / "manifests" / "web.yaml").write_text(
        tracepoint_manifest("ans-web", "web", extra="  priorty: 5\n")
    )
    before = tp_hits_progs()

    run = fleet.playbook()

    assert run.rc == 2, run.stdout + run.stderr
    failed = run.module
    assert failed["status"] == "failed"
    msg = failed["result"]["msg"]
    assert msg.startswith("Error: a manifest is invalid (1 problem); nothing was changed:"), msg
    assert "manifests/web.yaml:7: spec.priorty: unknown field 'priorty'" in msg
    assert failed["result"]["diagnostics"][0]["line"] == 7
    assert "manifests/web.yaml:7: spec.priorty" in run.stdout  # what the operator reads
    assert tp_hits_progs() - before == set()
    assert not fleet.root.exists() or not any(fleet.root.iterdir())


@pytest.mark.kernel
def test_a_git_source_with_ref_and_path(fleet: Fleet, tmp_path: Path):
    repo = tmp_path / "repo"
    shutil.copytree(fleet.src, repo / "fleet")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "manifests"], check=True)
    subprocess.run([*git, "tag", "v1"], check=True)

    source = {"source": f"file://{repo}", "ref": "v1", "path": "fleet", "labels": {"role": "web"}}
    check = fleet.module("--check", **source)
    assert check.rc == 0, check.stdout + check.stderr
    assert check.module["result"]["changed"] is True
    assert not fleet.root.exists() or not any(fleet.root.iterdir())

    run = fleet.module(**source)

    assert run.rc == 0, run.stdout + run.stderr
    result = run.module["result"]
    assert result["changed"] is True
    assert result["plan"]["source"] == f"file://{repo}@v1"
    assert result["plan"]["revision"]  # the commit v1 names
    assert fleet.pin("ans-web", "link").exists()
    assert not (fleet.root / "TracepointProgram" / "ans-db").exists()


def test_the_module_documents_itself_and_the_example_playbook_parses(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        HOME=str(tmp_path),
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "local-tmp"),
        ANSIBLE_CONFIG=str(tmp_path / "none.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(ANSIBLE),
        ANSIBLE_NOCOLOR="1",
        PYTHONWARNINGS="ignore",
    )
    doc = subprocess.run(
        [str(VENV / "ansible-doc"), "--json", "bpfman.host.bpfman_apply"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert doc.returncode == 0, doc.stderr
    info = json.loads(doc.stdout)["bpfman.host.bpfman_apply"]
    assert {"source", "path", "ref", "labels", "labels_file", "config", "bpffs_root"} <= set(
        info["doc"]["options"]
    )
    assert {"plan", "msg"} <= set(info["return"])
    syntax = subprocess.run(
        [str(PLAYBOOK), "--syntax-check", "-i", str(EXAMPLES / "inventory.ini")]
        + [str(EXAMPLES / "site.yml")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert syntax.returncode == 0, syntax.stdout + syntax.stderr


@pytest.mark.kernel
def test_the_role_installs_bpfman_from_a_wheel_and_applies_with_it(fleet: Fleet, tmp_path: Path):
    """The role's install path: a wheel built from this checkout (schemas and dispatchers are
    package data) is copied to the host and installed into a virtualenv there; the apply then
    runs the bpfman that was installed, not the checkout's."""
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [str(VENV / "pip"), "wheel", "-q", "--no-deps", "-w", str(wheels), str(support.REPO)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("bpfman-*.whl")
    venv = tmp_path / "host" / "opt-bpfman"
    run = fleet.playbook(
        bpfman_install="auto",
        bpfman_venv=str(venv),
        bpfman_executable=str(venv / "bin" / "bpfman"),
        bpfman_package_file=str(wheel),
        bpfman_python=str(VENV / "python"),
    )
    assert run.rc == 0, run.stdout + run.stderr
    installed = venv / "bin" / "bpfman"
    assert installed.exists()
    version = subprocess.run([str(installed), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and "bpfman" in version.stdout
    (outcome,) = run.module["result"]["apply"]["outcomes"]
    prog = support.bpftool_json("prog", "show", "pinned", str(fleet.pin("ans-web", "prog")))
    assert prog["id"] == outcome["prog_id"]  # type: ignore[index]
