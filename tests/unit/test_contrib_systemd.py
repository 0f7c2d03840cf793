"""The systemd units in contrib/ are valid for systemd and say what their comments promise."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "systemd"
UNITS = sorted(p for p in CONTRIB.iterdir() if p.suffix in (".service", ".timer", ".path"))
WATCH = CONTRIB / "bpfman-watch.service"

# What eBPF management needs, and no more (each one is explained in the unit's comments).
EBPF_CAPS = {"CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE"}

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """A unit file as section -> key -> every value given, in order (systemd allows a key many
    times, e.g. Environment= or After=, which configparser cannot keep)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"{line!r} comes before any [Section]"
        key, sep, value = line.partition("=")
        assert sep, f"{line!r} is not Key=value"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def one(unit: Unit, section: str, key: str) -> str:
    values = unit.get(section, {}).get(key, [])
    assert len(values) == 1, f"[{section}] {key}= given {len(values)} times"
    return values[0]


@pytest.fixture(scope="module")
def watch() -> Unit:
    return parse_unit(WATCH.read_text())


def runnable_copy(unit: Path, into: Path) -> Path:
    """``unit`` copied into ``into`` with every Exec*= program that does not exist on this host
    (bpfman under /opt) replaced by ``true``: verify insists that the program exists."""
    true = shutil.which("true") or "/bin/true"

    def substitute(m: re.Match[str]) -> str:
        program = m.group(3)
        return m.group(1) + m.group(2) + (program if os.access(program, os.X_OK) else true)

    text = re.sub(r"(?m)^(Exec\w+=)([-@:+!]*)(\S+)", substitute, unit.read_text())
    copy = into / unit.name
    copy.write_text(text)
    return copy


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_analyze_verify_accepts_the_unit(unit: Path, tmp_path: Path) -> None:
    """``systemd-analyze verify`` on a copy of every unit, each next to its siblings (a timer
    needs its service). The bpfman executable in ExecStart= is replaced by ``true`` in the copy,
    because verify refuses a command that does not exist and bpfman is not installed under /opt
    here. verify exits 0 even for unknown keys, so any message naming the unit fails too."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian package `systemd`)")
    for sibling in UNITS:
        runnable_copy(sibling, tmp_path)
    proc = subprocess.run(
        [analyze, "verify", str(tmp_path / unit.name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    messages = proc.stdout + proc.stderr
    assert proc.returncode == 0, messages
    assert not [line for line in messages.splitlines() if any(u.name in line for u in UNITS)]


def test_every_unit_parses() -> None:
    """Every unit can be enabled, except a service that a .path or .timer unit starts by name
    (``Unit=``): enabling that one by itself would run it at boot, which is not its job."""
    assert WATCH in UNITS
    parsed = {unit.name: parse_unit(unit.read_text()) for unit in UNITS}
    triggered = {
        name
        for p in parsed.values()
        for section in ("Path", "Timer")
        for name in p.get(section, {}).get("Unit", [])
    }
    for name, unit in parsed.items():
        if name in triggered:
            assert "Install" not in unit, f"{name} is started by a trigger; do not enable it"
        else:
            assert "Install" in unit, f"{name} cannot be enabled"


def test_watch_unit_speaks_the_notify_protocol(watch: Unit) -> None:
    assert one(watch, "Service", "Type") == "notify"
    assert one(watch, "Service", "NotifyAccess") == "main"
    watchdog = one(watch, "Service", "WatchdogSec")
    assert re.fullmatch(r"[1-9][0-9]*(s|min)?", watchdog), watchdog
    assert " watch " in one(watch, "Service", "ExecStart")


def test_watch_unit_reloads_with_sighup_and_stops_with_sigterm(watch: Unit) -> None:
    assert re.fullmatch(r"/\S*/kill -HUP \$MAINPID", one(watch, "Service", "ExecReload"))
    assert one(watch, "Service", "KillSignal") == "SIGTERM"
    assert one(watch, "Service", "Restart") == "on-failure"
    assert one(watch, "Install", "WantedBy") == "multi-user.target"


def test_capabilities_are_exactly_the_documented_ebpf_ones(watch: Unit) -> None:
    text = WATCH.read_text()
    documented = set(re.findall(r"(?m)^# (CAP_[A-Z_]+) +\S", text))
    bounding = set(one(watch, "Service", "CapabilityBoundingSet").split())
    assert bounding == documented == EBPF_CAPS
    # the ambient set offered for a non-root user (commented out or not) matches
    ambient = re.findall(r"(?m)^#?AmbientCapabilities=(.*)$", text)
    assert ambient and all(set(a.split()) == EBPF_CAPS for a in ambient)


def test_sandbox_leaves_room_for_pins_and_state(watch: Unit) -> None:
    env = dict(v.split("=", 1) for v in watch["Service"]["Environment"])
    writable = one(watch, "Service", "ReadWritePaths").split()
    assert one(watch, "Service", "ProtectSystem") == "strict"
    assert any(env["BPFMAN_BPFFS_ROOT"].startswith(p + "/") for p in writable)
    assert env["BPFMAN_STATE_DIR"] in writable
    assert env["BPFMAN_STATE_DIR"] == "/run/" + one(watch, "Service", "RuntimeDirectory")
    # the state file is shared with CLI apply: stopping the watcher must not delete it
    assert one(watch, "Service", "RuntimeDirectoryPreserve") == "yes"


def test_sandbox_keeps_what_ebpf_loading_needs(watch: Unit) -> None:
    service = watch["Service"]
    # read-only /sys and a hidden /proc/kallsyms; W^X memory for libffi callbacks
    for key in ("ProtectKernelTunables", "MemoryDenyWriteExecute"):
        assert service.get(key, ["no"]) == ["no"], key
    assert "AF_NETLINK" in one(watch, "Service", "RestrictAddressFamilies").split()
    for syscall_filter in service.get("SystemCallFilter", []):
        assert syscall_filter.startswith("~"), "an allow-list would have to name bpf(2) and more"
        denied = syscall_filter[1:].split()
        assert not {"bpf", "perf_event_open", "@debug", "@privileged", "@mount"} & set(denied)
