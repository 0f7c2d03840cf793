"""Reading a source as an attacker would write it, through the real executable: what reaches a
terminal, JSON on stdout whatever went wrong, and a source that cannot be read whole plans
nothing (so nothing is unloaded)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import support
from tests.cli.conftest import EXAMPLES, ManifestDir, tracepoint_manifest, xdp_manifest

XDP_OBJECT = EXAMPLES / "bytecode" / "xdp_counter.o"
TP_OBJECT = EXAMPLES / "bytecode" / "tracepoint_counter.o"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BPFMAN_", "NO_COLOR"))}
    return subprocess.run(
        [support.BPFMAN, *args], capture_output=True, text=True, input="", env=clean | (env or {})
    )


def on_a_terminal(*args: str, env: dict[str, str] | None = None) -> str:
    """What a terminal receives from bpfman: stdout and stderr both on a pseudo-terminal."""
    if not shutil.which("script"):
        pytest.skip("script(1) is not installed")
    command = " ".join(f"'{a}'" for a in (support.BPFMAN, *args))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BPFMAN_", "NO_COLOR"))}
    p = subprocess.run(
        ["script", "-qefc", command, "/dev/null"],
        capture_output=True,
        env=clean | {"TERM": "xterm"} | (env or {}),
    )
    return p.stdout.decode(errors="replace")


def test_a_terminal_gets_our_colours_and_nothing_else(tmp_path: Path) -> None:
    m = ManifestDir(tmp_path)
    path = m.write("x.yaml", xdp_manifest("fw", m.bytecode(XDP_OBJECT), priority=5000))
    path.rename(path.with_name("evil\x1b[31m\x1b[2J.yaml"))  # a name of the repository's choice
    shown = on_a_terminal("validate", str(tmp_path))
    assert "\x1b[31;1mError:\x1b[0m" in shown  # ours, in colour
    assert "evil\\x1b[31m\\x1b[2J.yaml:11: spec.priority" in shown
    assert "\x1b[2J" not in shown and "m\x1b[31m" not in shown
    plain = on_a_terminal("validate", str(tmp_path), env={"NO_COLOR": "1"})
    assert "\x1b" not in plain and "Error: " in plain
    assert "\x1b" not in on_a_terminal("--no-color", "validate", str(tmp_path))


def test_a_pipe_never_gets_a_control_character(tmp_path: Path) -> None:
    m = ManifestDir(tmp_path)
    m.write("x.yaml", xdp_manifest('"fw\\e]0;pwned\\a"', m.bytecode(XDP_OBJECT)))
    p = run("validate", str(tmp_path))
    assert p.returncode == 1
    assert "\x1b" not in p.stderr and "\x07" not in p.stderr
    assert "the value 'fw\\x1b]0;pwned\\x07' contains the control character U+001B" in p.stderr


def test_json_stays_json_with_diagnostics_for_every_command(tmp_path: Path) -> None:
    m = ManifestDir(tmp_path)
    m.write("bad.yaml", xdp_manifest("fw", m.bytecode(XDP_OBJECT), priority=5000))
    p = run("validate", str(tmp_path), "--json")
    assert p.returncode == 1 and p.stderr.count("Error:") == 1
    doc = json.loads(p.stdout)
    assert doc["valid"] is False
    assert doc["diagnostics"] == [
        {
            "severity": "error",
            "message": "must be <= 1000 (got 5000)",
            "file": "manifests/bad.yaml",
            "line": 11,
            "field": "spec.priority",
            "address": None,
        }
    ]
    # plan, apply and destroy: a bad host path is refused before anything else, still as JSON.
    for command in (["plan", str(tmp_path)], ["apply", str(tmp_path)], ["destroy"]):
        p = run(
            "--bpffs-root",
            "relative/root",
            "--state-dir",
            str(tmp_path / "s"),
            *command,
            "--json",
            "--auto-approve" if command[0] != "plan" else "--detailed-exitcode",
        )
        assert p.returncode == 1, (command, p.stderr)
        doc = json.loads(p.stdout)
        assert doc["format_version"] == "1.0" and doc["diagnostics"][0]["message"], command
        assert "relative/root" in doc["error"] and p.stderr.startswith("Error: ")


def test_a_bad_log_level_is_an_error_not_a_default(tmp_path: Path) -> None:
    p = run("validate", str(EXAMPLES), env={"BPFMAN_LOG": "chatty"})
    assert p.returncode == 1
    assert p.stderr == (
        "Error: BPFMAN_LOG='chatty' is not a log level; set it to one of debug, info, warning, "
        "error, or unset it (default: warning)\n"
    )
    assert run("validate", str(EXAMPLES), env={"BPFMAN_LOG": "DEBUG"}).returncode == 0


def test_host_config_typos_are_errors_with_a_suggestion(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("bytecode_dir: [/opt/bpf]\ninterfaces:\n  eth0: {xdpmod: native}\n")
    p = run("--config", str(config), "validate", str(EXAMPLES))
    assert p.returncode == 1
    assert p.stderr.startswith(f"Error: the host config {config} is invalid (2 problems)")
    assert "unknown field 'bytecode_dir' (did you mean 'bytecode_dirs'?)" in p.stderr
    assert f"{config}:3: interfaces.eth0.xdpmod: unknown field 'xdpmod' (did you mean" in p.stderr


@pytest.mark.kernel
def test_an_unreadable_part_of_the_source_plans_nothing_and_unloads_nothing(
    bpfman, tmp_path: Path
) -> None:
    """Skipping a directory that cannot be read would plan the unload of its programs."""
    if not shutil.which("setpriv"):
        pytest.skip("setpriv is not installed")
    m = ManifestDir(tmp_path / "src")
    bytecode = m.bytecode(TP_OBJECT)
    m.write(
        "team/tp.yaml", tracepoint_manifest("tp", "../" + bytecode, "syscalls/sys_enter_getpid")
    )
    bpfman.run("apply", m.source, "--auto-approve")
    listed = json.loads(bpfman.run("list", "--json").stdout)["attachments"]
    prog_id = listed[0]["kernel"]["prog_id"]
    team = m.root / "manifests" / "team"
    os.chmod(team, 0)
    try:
        # Root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH cannot read the directory; it can
        # still load programs.
        drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
        base = [support.BPFMAN, "--bpffs-root", str(bpfman.root), "--state-dir", str(bpfman.state)]
        for command in (["plan", m.source], ["apply", m.source, "--auto-approve"]):
            p = subprocess.run([*drop, *base, *command], capture_output=True, text=True)
            assert p.returncode == 1, p.stdout + p.stderr
            assert "manifests/team: cannot read this directory of the source" in p.stderr
            assert "unload" not in p.stdout
    finally:
        os.chmod(team, 0o755)
    assert prog_id in support.prog_ids()  # bpftool: still loaded
