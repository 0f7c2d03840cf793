"""contrib/systemd's path unit (apply when the manifest directory changes), checked with the
real tools: `systemd-analyze verify` on it and the service it starts (and on broken copies, to
show verify reads [Path]), its [Path] section against the service's source, every unit's bpfman
command line through bpfman's own parser, the started service's command run for real, and, where
PID 1 is systemd, a transient path unit that triggers on a write."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from reconciler.cli import build_parser
from tests.unit.test_contrib_systemd import CONTRIB, UNITS, Unit, one, parse_unit, runnable_copy

REPO = Path(__file__).resolve().parents[2]
PATH_UNIT = CONTRIB / "bpfman-apply.path"
BPFMAN = Path(sys.executable).parent / "bpfman"
INSTALLED_BPFMAN = "/opt/bpfman/.venv/bin/bpfman"


def unit(path: Path) -> Unit:
    return parse_unit(path.read_text())


def environment(u: Unit) -> dict[str, str]:
    return dict(v.split("=", 1) for v in u.get("Service", {}).get("Environment", []))


def systemd_expand(command: str, env: dict[str, str]) -> list[str]:
    """ExecStart= as systemd splits it: ${VAR} expands in place, $VAR to its words."""
    text = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], command)
    words = []
    for word in shlex.split(text):
        m = re.fullmatch(r"\$(\w+)", word)
        words += env[m.group(1)].split() if m else [word]
    return words


def verify(*units: Path) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian package `systemd`)")
    return subprocess.run(
        [analyze, "verify", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_path_unit_starts_a_oneshot_apply_of_the_directory_it_watches() -> None:
    path = unit(PATH_UNIT)
    watched = path["Path"].get("PathChanged", []) + path["Path"].get("PathModified", [])
    assert watched and all(os.path.isabs(p) for p in watched)
    service_name = one(path, "Path", "Unit")
    service = unit(CONTRIB / service_name)
    assert one(service, "Service", "Type") == "oneshot"
    assert "Install" not in service  # started by the path unit, never at boot by itself
    env = environment(service)
    # the watched directory is the service's source
    assert watched[0] == env["BPFMAN_SOURCE"]
    argv = systemd_expand(one(service, "Service", "ExecStart"), env)
    assert argv[0] == INSTALLED_BPFMAN
    args = build_parser().parse_args(argv[1:])
    assert args.command == "apply" and args.auto_approve and args.source == watched[0]
    assert one(path, "Install", "WantedBy") == "paths.target"


@pytest.mark.parametrize("u", UNITS, ids=[u.name for u in UNITS])
def test_every_bpfman_command_line_parses(u: Path) -> None:
    parsed = unit(u)
    env = environment(parsed)
    for key in ("ExecStart", "ExecStartPre", "ExecReload"):
        for command in parsed.get("Service", {}).get(key, []):
            command = command.lstrip("-@:+!")
            if command.split()[0] == INSTALLED_BPFMAN:
                argv = systemd_expand(command, env)
                build_parser().parse_args(argv[1:])


def test_verify_accepts_the_path_unit_with_its_service(tmp_path: Path) -> None:
    for sibling in UNITS:
        runnable_copy(sibling, tmp_path)
    service = one(unit(PATH_UNIT), "Path", "Unit")
    p = verify(tmp_path / PATH_UNIT.name, tmp_path / service)
    assert p.returncode == 0, p.stdout + p.stderr
    assert PATH_UNIT.name not in p.stdout + p.stderr


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (("PathChanged=/etc/bpfman/manifests", "PathChanged=etc/bpfman/manifests"), "absolute"),
        (("PathChanged=/etc/bpfman/manifests", "#"), "lacks path setting"),
    ],
    ids=["relative-path", "no-path"],
)
def test_verify_reads_the_path_section(
    tmp_path: Path, change: tuple[str, str], complaint: str
) -> None:
    """Broken copies are refused, so the acceptance above says something about [Path]. (verify
    does not check that Unit= exists: the first test checks it is a unit in contrib/systemd.)"""
    for sibling in UNITS:
        runnable_copy(sibling, tmp_path)
    broken = tmp_path / PATH_UNIT.name
    text = broken.read_text()
    assert change[0] in text
    broken.write_text(text.replace(change[0], change[1]))
    p = verify(broken)
    messages = p.stdout + p.stderr
    assert complaint in messages.lower(), messages


def test_path_changed_sees_only_the_directory_itself(tmp_path: Path) -> None:
    """What the unit's comments say about subdirectories, checked on inotify itself with the
    watch systemd adds for PathChanged= (src/core/path.c: one watch on the directory with these
    events): a write in a subdirectory gives it no event, a write directly in it does."""
    import ctypes
    import struct

    libc = ctypes.CDLL(None, use_errno=True)
    in_attrib, in_close_write, in_moved_from, in_moved_to = 0x4, 0x8, 0x40, 0x80
    in_create, in_delete, in_delete_self, in_move_self = 0x100, 0x200, 0x400, 0x800
    mask = (
        in_attrib | in_close_write | in_moved_from | in_moved_to
        | in_create | in_delete | in_delete_self | in_move_self
    )  # fmt: skip
    sub = tmp_path / "xdp"
    sub.mkdir()
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0, os.strerror(ctypes.get_errno())
    try:
        assert libc.inotify_add_watch(fd, str(tmp_path).encode(), mask) >= 0

        def names() -> list[str]:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return []
            out, offset = [], 0
            while offset < len(data):
                _, _, _, length = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16 : offset + 16 + length].rstrip(b"\0").decode()
                out.append(name)
                offset += 16 + length
            return out

        (sub / "in-subdir.yaml").write_text("x")
        assert names() == []
        (tmp_path / "top.yaml").write_text("x")
        assert "top.yaml" in names()
    finally:
        os.close(fd)


@pytest.mark.kernel
def test_the_started_service_applies_the_directory(
    tmp_path: Path, bpffs_root: Path, state_dir: Path
) -> None:
    """bpfman-apply-changed.service's ExecStart, run with this checkout's bpfman on a copy of the
    tracepoint example, as systemd would expand it; then destroyed."""
    service = unit(CONTRIB / one(unit(PATH_UNIT), "Path", "Unit"))
    source = tmp_path / "manifests"
    examples = REPO / "manifests" / "examples"
    (source / "tracepoint").mkdir(parents=True)
    shutil.copy(examples / "tracepoint" / "tracepoint-counter.yaml", source / "tracepoint")
    shutil.copytree(examples / "bytecode", source / "bytecode")
    env = environment(service) | {
        "BPFMAN_SOURCE": str(source),
        "BPFMAN_BPFFS_ROOT": str(bpffs_root),
        "BPFMAN_STATE_DIR": str(state_dir),
    }
    argv = systemd_expand(one(service, "Service", "ExecStart"), env)
    argv[0] = str(BPFMAN)
    run_env = os.environ | env
    try:
        p = subprocess.run(argv, capture_output=True, text=True, env=run_env, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "1 added" in p.stdout
        again = subprocess.run(argv, capture_output=True, text=True, env=run_env, timeout=120)
        assert again.returncode == 0 and "No changes" in again.stdout, again.stdout
    finally:
        subprocess.run(
            [str(BPFMAN), "destroy", "--auto-approve", "--no-color"],
            env=run_env,
            capture_output=True,
            timeout=120,
        )


def test_a_transient_path_unit_triggers_on_a_change(tmp_path: Path) -> None:
    """Only where PID 1 is systemd: a transient path unit on a temporary directory (nothing is
    enabled or left behind) runs `bpfman validate` of it when a manifest is written."""
    if not Path("/run/systemd/system").is_dir():
        pytest.skip("PID 1 is not systemd here: path units cannot be started")
    name = f"bpfman-test-{uuid.uuid4().hex[:8]}"
    watched = tmp_path / "manifests"
    watched.mkdir()
    log = tmp_path / "validate.log"
    command = f"{BPFMAN} validate {watched} > {log} 2>&1"
    p = subprocess.run(
        [
            "systemd-run",
            f"--unit={name}",
            f"--path-property=PathChanged={watched}",
            "--collect",
            "--",
            "/bin/sh",
            "-c",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    try:
        shutil.copy(
            REPO / "contrib" / "kubernetes" / "configmap" / "manifests" / "tracepoint-counter.yaml",
            watched,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "valid" not in (
            log.read_text() if log.exists() else ""
        ):
            time.sleep(0.2)
        assert log.exists(), "the path unit never started its service"
    finally:
        subprocess.run(
            ["systemctl", "stop", f"{name}.path", f"{name}.service"],
            capture_output=True,
            timeout=60,
        )
