"""A git remote that accepts the connection and then says nothing must not hold bpfman forever,
and no way out of a clone may leave the clone behind: --git-timeout, SIGTERM, and a SIGKILL
whose leftover the next clone removes. The remote is a socket on 127.0.0.1 that this module
opens and always closes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support


@pytest.fixture
def stalled_remote() -> Iterator[str]:
    """``git://127.0.0.1:PORT/repo.git`` served by a listener that accepts every connection and
    never answers (held open until the test ends)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield f"git://127.0.0.1:{server.getsockname()[1]}/repo.git"
    finally:
        stop.set()
        t.join(5)
        for c in held:
            c.close()
        server.close()


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPFMAN_")}
    env["TMPDIR"] = str(tmp)  # the clone directory is made here, where the test can see it
    return env


def _clones(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith("bpfman-src-"))


def _git_processes(url: str) -> list[str]:
    """``PID ARGS`` of the live processes whose command line names the remote (/proc, not ps:
    procps is not on every fresh machine)."""
    server = url.rsplit("/", 1)[0]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if server in args and state != "Z":
            found.append(f"{entry.name} {args}")
    return found


def _wait_for_clone_dir(tmp: Path, p: subprocess.Popen[str]) -> None:
    for _ in range(500):
        if _clones(tmp) or p.poll() is not None:
            return
        time.sleep(0.02)


def test_a_stalled_remote_is_given_up_after_git_timeout(
    tmp_path: Path, stalled_remote: str
) -> None:
    p = subprocess.run(
        [support.BPFMAN, "validate", "--git-timeout", "1", stalled_remote],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=60,
    )
    assert p.returncode == 1, p.stderr
    assert p.stderr.startswith("Error: cannot clone git://127.0.0.1:"), p.stderr
    assert "did not finish within 1 s" in p.stderr and "--git-timeout" in p.stderr
    assert "Traceback" not in p.stderr
    assert _clones(tmp_path) == []
    assert _git_processes(stalled_remote) == []  # git and its helpers were stopped with it


def test_git_timeout_error_keeps_stdout_json(tmp_path: Path, stalled_remote: str) -> None:
    p = subprocess.run(
        [support.BPFMAN, "validate", "--json", "--git-timeout", "0.5", stalled_remote],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=60,
    )
    assert p.returncode == 1
    doc = json.loads(p.stdout)
    assert "did not finish within 0.5 s" in doc["error"]


def test_sigterm_during_a_clone_removes_it(tmp_path: Path, stalled_remote: str) -> None:
    p = subprocess.Popen(
        [support.BPFMAN, "validate", stalled_remote],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
    )
    try:
        _wait_for_clone_dir(tmp_path, p)
        assert _clones(tmp_path), "the clone never started"
        p.send_signal(signal.SIGTERM)
        _out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 143, err
    assert err.strip() == "Error: terminated (SIGTERM)"
    assert _clones(tmp_path) == []
    assert _git_processes(stalled_remote) == []


def test_the_next_clone_removes_what_a_sigkill_left(tmp_path: Path, stalled_remote: str) -> None:
    p = subprocess.Popen(
        [support.BPFMAN, "validate", stalled_remote],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(tmp_path),
    )
    try:
        _wait_for_clone_dir(tmp_path, p)  # type: ignore[arg-type]
        left = _clones(tmp_path)
        assert left, "the clone never started"
        assert left[0].startswith(f"bpfman-src-{p.pid}-")
    finally:
        p.kill()
        p.wait()
    # git dies with bpfman (the kernel's parent-death signal), even of a SIGKILL.
    for _ in range(500):
        if not _git_processes(stalled_remote):
            break
        time.sleep(0.02)
    assert _git_processes(stalled_remote) == []
    assert _clones(tmp_path) == left
    later = subprocess.run(
        [support.BPFMAN, "validate", "--git-timeout", "0.5", stalled_remote],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=60,
    )
    assert later.returncode == 1
    assert _clones(tmp_path) == []  # the dead run's clone, and its own


def test_duration_flags_refuse_values_that_never_end(tmp_path: Path) -> None:
    for flag, value in [
        ("--lock-timeout", "nan"),
        ("--lock-timeout", "inf"),
        ("--lock-timeout", "-1"),
        ("--git-timeout", "nan"),
    ]:
        p = subprocess.run(
            [support.BPFMAN, "apply", "--json", flag, value, str(tmp_path)],
            capture_output=True,
            text=True,
            env=_env(tmp_path),
            timeout=60,
        )
        assert p.returncode == 2, (flag, value, p.stderr)
        assert "is not a number of seconds from 0 to 86400" in p.stderr
        assert "is not a number of seconds" in json.loads(p.stdout)["error"]
