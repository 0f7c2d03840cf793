"""The progress line of a long apply or destroy, on a real pseudo-terminal (issue 15).

Each test runs the ``bpfman`` executable with its stdout, stderr and stdin on a pty (as a
person's terminal), reads the raw bytes it wrote, and replays them on a small screen model
(``screen``) to see what the person is left looking at. Nothing here measures time.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import termios
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.address import Address
from reconciler.apply.interrupt import PAUSE_AT_ENV, PAUSE_MARKER, PAUSE_STEP_ENV
from tests import support
from tests.cli.conftest import EXAMPLES, Bpfman, ManifestDir, tracepoint_manifest

pytestmark = pytest.mark.kernel

TRACEPOINTS = (
    "getpid",
    "getppid",
    "getuid",
    "getgid",
    "geteuid",
    "getegid",
    "gettid",
    "getpgrp",
)
ESC = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
COUNTER = re.compile(r"\[(\d+)/8\] ")


def eight_tracepoints(mdir: ManifestDir) -> str:
    """A source of 8 tracepoint manifests, one program each: an apply of 8 steps."""
    bc = mdir.bytecode(EXAMPLES / "bytecode" / "tracepoint_counter.o")
    for i, tp in enumerate(TRACEPOINTS, 1):
        mdir.write(f"tp{i}.yaml", tracepoint_manifest(f"tp-{i}", bc, f"syscalls/sys_enter_{tp}"))
    return mdir.source


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPFMAN_")}
    env.pop("NO_COLOR", None)
    env["TERM"] = "xterm-256color"
    env.update(extra)
    return env


def on_pty(
    b: Bpfman,
    *args: str,
    env: dict[str, str] | None = None,
    on_output: Callable[[bytes, subprocess.Popen[bytes]], None] | None = None,
    columns: int = 200,
) -> tuple[int, bytes]:
    """Run ``bpfman ARGS`` on a new pty of ``columns`` columns: (exit code, every raw byte it
    wrote). ``on_output(all_so_far, proc)`` is called after each read."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    cmd = [support.BPFMAN, "--bpffs-root", str(b.root), "--state-dir", str(b.state), *args]
    proc = subprocess.Popen(
        cmd, stdin=slave, stdout=slave, stderr=slave, env=env or _env(), start_new_session=True
    )
    os.close(slave)
    raw = b""
    try:
        while True:
            if not select.select([master], [], [], 120)[0]:
                raise AssertionError(f"bpfman {' '.join(args)} went quiet:\n{raw!r}")
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the last writer closed the pty
                break
            if not chunk:
                break
            raw += chunk
            if on_output is not None:
                on_output(raw, proc)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, raw


def screen(raw: bytes) -> list[str]:
    """The lines left on the screen by ``raw``: ``\\r`` goes to column 0, ``ESC[2K`` erases the
    line, other escape sequences (colours) show nothing, characters overwrite."""
    lines: list[str] = []
    line: list[str] = []
    col = 0
    i = 0
    text = raw
    while i < len(text):
        m = ESC.match(text, i)
        if m:
            if m.group() == b"\x1b[2K":
                line = []
            i = m.end()
            continue
        ch = text[i : i + 1]
        i += 1
        if ch == b"\r":
            col = 0
        elif ch == b"\n":
            lines.append("".join(line).rstrip())
            line, col = [], 0
        else:
            # Multi-byte characters: take the whole UTF-8 sequence.
            while i < len(text) and (text[i] & 0xC0) == 0x80:
                ch += text[i : i + 1]
                i += 1
            while len(line) < col:
                line.append(" ")
            if col < len(line):
                line[col] = ch.decode()
            else:
                line.append(ch.decode())
            col += 1
    if line:
        lines.append("".join(line).rstrip())
    return lines


def progress_redraws(raw: bytes) -> list[str]:
    """Every progress line drawn: the text after each ``\\r ESC[2K`` that starts with a
    counter (colour codes removed)."""
    plain = ESC.sub(lambda m: b"" if m.group() != b"\x1b[2K" else m.group(), raw)
    found = []
    for part in plain.split(b"\r\x1b[2K")[1:]:
        text = part.split(b"\r")[0].split(b"\n")[0].decode(errors="replace")
        if COUNTER.match(text):
            found.append(text)
    return found


def assert_no_fragment(lines: list[str]) -> None:
    """No line of the final screen holds (a piece of) a progress line."""
    for line in lines:
        assert not COUNTER.search(line), f"a progress fragment is left on screen: {line!r}"


def test_apply_and_destroy_on_a_terminal_show_progress_and_leave_the_log(
    no_leaks, bpfman: Bpfman, mdir: ManifestDir
) -> None:
    source = eight_tracepoints(mdir)
    code, raw = on_pty(bpfman, "apply", source, "--auto-approve")
    assert code == 0, raw
    drawn = progress_redraws(raw)
    # Every step was shown with its counter and address, in order, with the time elapsed.
    for done in range(8):
        assert any(
            d.startswith(f"[{done}/8] TracepointProgram/tp-") and re.search(r"\(\d+\.\ds\)$", d)
            for d in drawn
        ), (done, drawn)
    assert any(d.startswith("[3/8] TracepointProgram/tp-") for d in drawn)
    assert "\x1b[1m[3/8]\x1b[0m" in raw.decode(), "the counter is bold when colours are on"
    # What stays on the screen is the per-action log and the summary, as without a terminal.
    lines = screen(raw)
    assert_no_fragment(lines)
    done_lines = [x for x in lines if ": Loading complete after " in x]
    assert len(done_lines) == 8
    assert all(re.search(r"\[prog_id=\d+ link_id=\d+\]$", x) for x in done_lines), done_lines
    assert lines[-2:] == ["", "Apply complete! Resources: 8 added, 0 changed, 0 destroyed."]
    # Each step's first line starts a clean line: the progress line was erased right before it.
    for address in (x.split(":")[0] for x in done_lines):
        assert f"\r\x1b[2K{address}: Loading...".encode() in raw

    code, raw = on_pty(bpfman, "destroy", "--auto-approve")
    assert code == 0, raw
    drawn = progress_redraws(raw)
    assert any(d.startswith("[3/8] TracepointProgram/tp-") for d in drawn), drawn
    lines = screen(raw)
    assert_no_fragment(lines)
    assert sum(": Unloading complete after " in x for x in lines) == 8
    assert lines[-1] == "Destroy complete! Resources: 0 added, 0 changed, 8 destroyed."


def test_no_progress_through_a_pipe_with_json_or_on_a_dumb_terminal(
    no_leaks, bpfman: Bpfman, mdir: ManifestDir
) -> None:
    source = eight_tracepoints(mdir)
    piped = bpfman.run("apply", source, "--auto-approve")
    assert "\r" not in piped.stdout + piped.stderr
    assert "\x1b" not in piped.stdout + piped.stderr
    assert "Apply complete! Resources: 8 added, 0 changed, 0 destroyed." in piped.stdout

    code, raw = on_pty(bpfman, "destroy", "--auto-approve", "--json")
    assert code == 0, raw
    assert b"\x1b" not in raw
    assert b"\r" not in raw.replace(b"\r\n", b"\n")  # the pty's own newline translation aside
    assert json.loads(raw.decode().replace("\r\n", "\n"))["result"]["destroyed"] == 8

    code, raw = on_pty(bpfman, "apply", source, "--auto-approve", env=_env(TERM="dumb"))
    assert code == 0, raw
    # Colours are cli.py's business; cursor control there is none.
    assert b"\x1b[2K" not in raw and not progress_redraws(raw)
    assert b"\r" not in raw.replace(b"\r\n", b"\n")
    assert "Apply complete! Resources: 8 added, 0 changed, 0 destroyed." in screen(raw)
    assert "8 destroyed" in bpfman.run("destroy", "--auto-approve").stdout


def test_no_color_keeps_the_line_without_colour(
    no_leaks, bpfman: Bpfman, mdir: ManifestDir
) -> None:
    """NO_COLOR concerns colour, not cursor control: the line is drawn, without bold."""
    source = eight_tracepoints(mdir)
    code, raw = on_pty(bpfman, "apply", source, "--auto-approve", env=_env(NO_COLOR="1"))
    assert code == 0, raw
    assert progress_redraws(raw)
    assert not re.search(rb"\x1b\[[0-9;]*m", raw), "no colour code with NO_COLOR"
    assert_no_fragment(screen(raw))
    code, raw = on_pty(bpfman, "--no-color", "destroy", "--auto-approve")
    assert code == 0, raw
    assert progress_redraws(raw)
    assert not re.search(rb"\x1b\[[0-9;]*m", raw)
    assert screen(raw)[-1] == "Destroy complete! Resources: 0 added, 0 changed, 8 destroyed."


def test_a_handful_of_steps_shows_no_progress(no_leaks, bpfman: Bpfman, mdir: ManifestDir) -> None:
    bc = mdir.bytecode(EXAMPLES / "bytecode" / "tracepoint_counter.o")
    for i, tp in enumerate(TRACEPOINTS[:5], 1):
        mdir.write(f"tp{i}.yaml", tracepoint_manifest(f"tp-{i}", bc, f"syscalls/sys_enter_{tp}"))
    code, raw = on_pty(bpfman, "apply", mdir.source, "--auto-approve")
    assert code == 0, raw
    assert b"\x1b[2K" not in raw and not progress_redraws(raw)
    assert "5 destroyed" in bpfman.run("destroy", "--auto-approve").stdout


def _pin_of(b: Bpfman, address: str) -> Path:
    return b.root / Address.parse(address).pin_dir() / "prog"


def test_a_step_that_fails_shows_its_error_on_a_clean_line(
    no_leaks, bpfman: Bpfman, mdir: ManifestDir
) -> None:
    """Step 4 fails at apply time: while the apply is paused at its start (the test-only pause
    point), a directory is put where its program would be pinned, so the kernel layer refuses
    to install over it."""
    source = eight_tracepoints(mdir)
    sabotaged: list[Path] = []

    def sabotage(raw: bytes, proc: subprocess.Popen[bytes]) -> None:
        m = re.search(rb"BPFMAN-TEST-PAUSED step=4 at=begun pid=\d+ address=(\S+)\r?\n", raw)
        if m and not sabotaged:
            pin = _pin_of(bpfman, m.group(1).decode())
            pin.mkdir(parents=True)
            sabotaged.append(pin)
            proc.send_signal(signal.SIGUSR1)

    env = _env(**{PAUSE_STEP_ENV: "4", PAUSE_AT_ENV: "begun"})
    try:
        code, raw = on_pty(bpfman, "apply", source, "--auto-approve", env=env, on_output=sabotage)
    finally:
        for pin in sabotaged:  # bpffs: directories only, removed bottom up
            support.remove_tree(pin.parent.parent)
    assert sabotaged, raw
    assert code == 1, raw
    assert any(d.startswith("[3/8] TracepointProgram/tp-") for d in progress_redraws(raw))
    lines = screen(raw)
    assert_no_fragment(lines)
    errors = [x for x in lines if x.startswith("Error: ")]
    assert len(errors) == 1, lines
    assert "is already installed" in errors[0]
    assert lines[-1] == (
        "Apply stopped; 3 added, 0 changed, 0 destroyed before the error. "
        "Run `bpfman plan` to see what remains."
    )
    # The pause line (stderr) has a line of its own too.
    assert any(x.startswith(PAUSE_MARKER) for x in lines)
    assert "3 destroyed" in bpfman.run("destroy", "--auto-approve").stdout


def test_an_interrupted_apply_leaves_a_clean_terminal(
    no_leaks, bpfman: Bpfman, mdir: ManifestDir
) -> None:
    """SIGINT (Ctrl-C) in step 3: the notice and the final error each on a line of their own."""
    source = eight_tracepoints(mdir)
    sent: list[bool] = []

    def interrupt(raw: bytes, proc: subprocess.Popen[bytes]) -> None:
        if PAUSE_MARKER.encode() in raw and not sent:
            sent.append(True)
            proc.send_signal(signal.SIGINT)

    env = _env(**{PAUSE_STEP_ENV: "3", PAUSE_AT_ENV: "kernel"})
    code, raw = on_pty(bpfman, "apply", source, "--auto-approve", env=env, on_output=interrupt)
    assert code == 1, raw
    lines = screen(raw)
    assert_no_fragment(lines)
    assert any(x.startswith("bpfman: received SIGINT; finishing the current step") for x in lines)
    errors = [x for x in lines if x.startswith("Error: ")]
    assert errors == [
        "Error: interrupted by SIGINT: stopped after 3 of 8 steps; every change "
        "made is applied and recorded. Run `bpfman apply` again to finish."
    ], lines
    assert "3 destroyed" in bpfman.run("destroy", "--auto-approve").stdout
