"""SOURCE as a user gives it: a single manifest file, git repositories served for real (a
``git daemon`` and a plain HTTP server this module starts and always stops), refused transports
that must run nothing and leave nothing, and credentials in URLs that must appear nowhere."""

from __future__ import annotations

import functools
import http.server
import json
import os
import select
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.apply.interrupt import PAUSE_MARKER, PAUSE_STEP_ENV
from tests import support
from tests.cli.conftest import EXAMPLES, Bpfman, tracepoint_manifest

TP_O = EXAMPLES / "bytecode" / "tracepoint_counter.o"
TRACEPOINT = "syscalls/sys_enter_getpid"
ADDRESS = f"TracepointProgram/tp[{TRACEPOINT}]"
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("BPFMAN_")}
    full.update(env or {})
    return subprocess.run(
        [support.BPFMAN, *args], capture_output=True, text=True, input="", env=full, timeout=60
    )


def make_source(d: Path) -> Path:
    """``d/fw.yaml``: one tracepoint manifest, its object beside it."""
    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(TP_O, d / TP_O.name)
    (d / "fw.yaml").write_text(tracepoint_manifest("tp", TP_O.name, TRACEPOINT))
    return d / "fw.yaml"


def bare_repo(served: Path, name: str = "repo.git") -> Path:
    """A bare repository ``served/NAME`` holding the source of :func:`make_source`, ready for
    the git protocol and for dumb HTTP (``update-server-info``)."""
    work = served.parent / f"work-{name}"
    make_source(work)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run([*GIT, "-C", str(work), "add", "."], check=True)
    subprocess.run([*GIT, "-C", str(work), "commit", "-qm", "tp"], check=True)
    bare = served / name
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    subprocess.run(["git", "-C", str(bare), "update-server-info"], check=True)
    return bare


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"git daemon exited: {proc.communicate()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"git daemon is not listening on port {port}")


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[str]:
    """A real ``git daemon`` serving ``repo.git`` on 127.0.0.1; its base URL. Always stopped."""
    served = tmp_path / "served"
    served.mkdir()
    bare_repo(served)
    port = free_port()
    proc = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            f"--base-path={served}",
            "--export-all",
            f"--port={port}",
            "--listen=127.0.0.1",
            str(served),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_listening(port, proc)
        yield f"git://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_repo(tmp_path: Path) -> Iterator[str]:
    """``repo.git`` over dumb HTTP from a server in this process; its URL. Always stopped."""
    served = tmp_path / "http"
    served.mkdir()
    bare_repo(served)
    handler = functools.partial(_Quiet, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}/repo.git"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def one_error(p: subprocess.CompletedProcess) -> str:
    shown = f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    assert p.returncode == 1, shown
    assert p.stderr.count("Error:") == 1 and "Traceback" not in p.stderr, shown
    return p.stderr


# --- git over a real daemon: git's reason kept ---------------------------------------------------


def test_git_daemon_source_validates_and_a_missing_repository_keeps_gits_reason(git_daemon):
    ok = run("validate", f"{git_daemon}/repo.git")
    assert ok.returncode == 0 and "Success! 1 manifest valid." in ok.stdout, ok.stderr

    err = one_error(run("validate", f"{git_daemon}/nope.git"))
    assert f"cannot clone {git_daemon}/nope.git: fatal: remote error: " in err
    assert "not exported" in err  # the daemon's own words, through git
    assert "'\n" not in err and not err.rstrip().endswith("'")  # no stray quote


def test_unreachable_git_host_keeps_gits_reason():
    err = one_error(run("validate", f"git://127.0.0.1:{free_port()}/repo.git"))
    assert "fatal: unable to connect to 127.0.0.1" in err and "Connection refused" in err


# --- refused transports: nothing runs, nothing is left ---------------------------------------


def _ext_checks(tmp_path: Path, *command: str, b: Bpfman | None = None) -> None:
    private = tmp_path / "tmp"
    private.mkdir(exist_ok=True)
    marker = tmp_path / "pwned"
    prefix = ["--bpffs-root", str(b.root), "--state-dir", str(b.state)] if b else []
    for source in (f"ext::sh -c touch% {marker}", f"ext://sh -c touch% {marker}"):
        err = one_error(run(*prefix, *command, source, env={"TMPDIR": str(private)}))
        assert "file://, https://, http://, ssh://, git:// or user@host:path" in err
        assert not marker.exists()
        assert list(private.iterdir()) == []  # no bpfman-src-* (nor anything else) created


def test_ext_transport_runs_nothing_and_leaks_no_temporary_directory(tmp_path):
    _ext_checks(tmp_path, "validate")


@pytest.mark.kernel
def test_ext_transport_is_refused_by_plan_and_apply(no_leaks, bpfman, tmp_path):
    _ext_checks(tmp_path, "plan", b=bpfman)
    _ext_checks(tmp_path, "apply", "--auto-approve", b=bpfman)


def test_option_like_source_is_refused():
    err = one_error(run("validate", "--", "--upload-pack=touch /tmp/bpfman-pwned"))
    assert "starts with '-', which git would take as an option" in err
    assert not Path("/tmp/bpfman-pwned").exists()


# --- a single manifest file as SOURCE -----------------------------------------------------------


def test_single_file_validates_and_other_files_are_refused_clearly(tmp_path):
    fw = make_source(tmp_path / "src")
    p = run("validate", str(fw))
    assert p.returncode == 0 and "Success! 1 manifest valid." in p.stdout, p.stderr
    notes = tmp_path / "src" / "notes.txt"
    notes.write_text("hello\n")
    for command in (("validate",), ("apply", "--auto-approve")):
        err = one_error(run("--state-dir", str(tmp_path / "state"), *command, str(notes)))
        assert "neither a manifest (a .yaml or .yml file) nor a plan saved by" in err
    err = one_error(run("validate", str(fw), "--path", "x"))
    assert "single manifest file: give it without --path" in err


@pytest.mark.kernel
def test_single_manifest_file_plans_and_applies(no_leaks, bpfman, tmp_path):
    fw = make_source(tmp_path / "src")
    plan = bpfman.run("plan", str(fw)).stdout
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in plan
    assert f"bpfman read the manifests in {fw}" in plan
    doc = json.loads(bpfman.run("plan", str(fw), "--json").stdout)
    assert doc["source"] == str(fw)

    out = bpfman.run("apply", str(fw), "--auto-approve").stdout
    assert "Resources: 1 added" in out
    entry = json.loads(bpfman.run("get", ADDRESS, "--json").stdout)
    assert entry["origin"] == "fw.yaml:1"
    prog_id = entry["kernel"]["prog_id"]
    shown = support.bpftool_json("prog", "show", "id", str(prog_id))
    assert shown["id"] == prog_id and shown["type"] == "tracepoint"  # type: ignore[index]
    assert bpfman.run("plan", str(fw), "--detailed-exitcode").returncode == 0

    # A saved plan is told apart from a manifest by its content, whatever its name.
    saved = tmp_path / "reviewed.yaml"
    bpfman.run("plan", str(fw), "--out", str(saved))
    err = one_error(bpfman.run("plan", str(saved), expect=1))
    assert "is a plan saved by `bpfman plan --out`" in err and "bpfman apply" in err
    assert "Apply complete!" in bpfman.run("apply", str(saved)).stdout

    assert "1 destroyed" in bpfman.run("destroy", "--auto-approve").stdout
    support.wait_gone(support.prog_ids, support.prog_ids() - {prog_id}, "programs")


# --- credentials in a URL appear nowhere ------------------------------------------------------

PASSWORD = "hunter2-Sup3rSecret"


def _paused_apply(b: Bpfman, url: str) -> tuple[str, str]:
    """An apply of ``url`` paused after its one step: (the lock file's content while it holds
    the lock, everything it printed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPFMAN_")}
    env[PAUSE_STEP_ENV] = "1"
    proc = subprocess.Popen(
        [support.BPFMAN, "-vv", "--bpffs-root", str(b.root), "--state-dir", str(b.state)]
        + ["apply", url, "--auto-approve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not select.select([proc.stderr], [], [], 0.5)[0]:
                continue
            line = proc.stderr.readline()
            assert line, f"apply ended without pausing: {''.join(seen)}"
            seen.append(line)
            if line.startswith(PAUSE_MARKER):
                break
        else:
            raise AssertionError(f"apply did not pause: {''.join(seen)}")
        lock = (b.state / "lock").read_text()
    finally:
        proc.terminate()  # finishes the step, then stops
        out, err = proc.communicate(timeout=60)
    return lock, out + "".join(seen) + err


@pytest.mark.kernel
def test_a_password_in_the_url_appears_nowhere(no_leaks, bpfman, http_repo, tmp_path):
    url = f"http://deploy:{PASSWORD}@{http_repo}"
    redacted = f"http://deploy:***@{http_repo}"
    outputs: list[str] = []

    def ran(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
        p = bpfman.run("-vv", *args, expect=expect)
        outputs.append(p.stdout + p.stderr)
        return p

    assert "Success! 1 manifest valid." in ran("validate", url).stdout
    plan = ran("plan", url).stdout
    assert f"bpfman read the manifests in {redacted}" in plan
    assert json.loads(ran("plan", url, "--json").stdout)["source"] == redacted
    saved = tmp_path / "saved.plan"
    ran("plan", url, "--ref", "main", "--out", str(saved))
    assert json.loads(saved.read_text())["source"] == f"{redacted}@main"

    lock, printed = _paused_apply(bpfman, url)
    outputs.append(printed)
    assert json.loads(lock)["command"].endswith(f"apply {redacted} --auto-approve")
    outputs.append(lock)
    ran("apply", url, "--auto-approve")  # completes whatever the signal left
    outputs.append(ran("get", ADDRESS, "--json").stdout)
    outputs.append(ran("list", "--json").stdout)
    for f in bpfman.state.iterdir():
        if f.is_file():
            outputs.append(f.read_text(errors="replace"))
    outputs.append(saved.read_text())
    # An unreachable credentialed URL: git's reason, without the password.
    err = one_error(bpfman.run("plan", f"http://deploy:{PASSWORD}@127.0.0.1:1/r.git", expect=1))
    assert "cannot clone http://deploy:***@127.0.0.1:1/r.git: fatal: unable to access" in err
    outputs.append(err)

    for text in outputs:
        assert PASSWORD not in text
    assert "1 destroyed" in ran("destroy", "--auto-approve").stdout
