"""The crash tier: kill, interrupt and damage ``bpfman apply`` and check that the next run
converges, counting what the kernel holds with bpftool (never only with bpfman's own listing).

Every bpfman here runs inside the namespace of a veth pair the test creates (``nsenter``), with a
private bpffs root and state dir. The apply is stopped at exact step boundaries through its
test-only pause points (``reconciler/apply/interrupt.py``).
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.apply.interrupt import PAUSE_AT_ENV, PAUSE_MARKER, PAUSE_STEP_ENV
from tests import support
from tests.cli.conftest import (  # noqa: F401 (fixtures)
    EXAMPLES,
    TEST_BPF,
    Bpfman,
    ManifestDir,
    bpfman,  # noqa: F811
    tcx_manifest,
    tracepoint_manifest,
    xdp_manifest,
)

XDP_O = EXAMPLES / "bytecode" / "xdp_counter.o"
TCX_O = EXAMPLES / "bytecode" / "tcx_counter.o"
TP_O = EXAMPLES / "bytecode" / "tracepoint_counter.o"
TCX2_O = TEST_BPF / "tcx_counter.o"  # other bytecode, other function: a replacement
TP2_O = TEST_BPF / "tracepoint_counter.o"

GETPID = "syscalls/sys_enter_getpid"
GETPPID = "syscalls/sys_enter_getppid"
GETUID = "syscalls/sys_enter_getuid"


@dataclass
class Manifests:
    v1: ManifestDir
    v2: ManifestDir
    # What v2 accounts for: pinned programs, and the links among them (XDP has none).
    v2_programs: int = 6
    v2_links: int = 5
    v1_programs: int = 5


def write_v1(m: ManifestDir) -> None:
    m.write("xdp.yaml", xdp_manifest("x", m.bytecode(XDP_O), priority=55))
    m.write("t1.yaml", tcx_manifest("t1", m.bytecode(TCX_O), priority=10))
    m.write("t2.yaml", tcx_manifest("t2", m.bytecode(TCX_O), priority=20))
    m.write("tp1.yaml", tracepoint_manifest("tp1", m.bytecode(TP_O), GETPID))
    m.write("tp2.yaml", tracepoint_manifest("tp2", m.bytecode(TP_O), GETPPID))


def write_v2(m: ManifestDir) -> None:
    """From v1: an unload (tp2), a reorder (t1 moves behind t2: a new link at its new place), two
    replacements with new bytecode (t2: the tcx link swaps programs; tp1: a perf link), an
    in-place update (x's priority) and two loads (t3, tp3)."""
    m.write("xdp.yaml", xdp_manifest("x", m.bytecode(XDP_O), priority=60))
    m.write("t1.yaml", tcx_manifest("t1", m.bytecode(TCX_O), priority=30))
    tcx2 = m.bytecode(TCX2_O, "tcx_count.o")
    m.write("t2.yaml", tcx_manifest("t2", tcx2, priority=20, function="tcx_count"))
    m.write("t3.yaml", tcx_manifest("t3", tcx2, direction="egress", function="tcx_count"))
    tp2 = m.bytecode(TP2_O, "tp_count.o")
    m.write("tp1.yaml", tracepoint_manifest("tp1", tp2, GETPID, function="tp_count"))
    m.write("tp3.yaml", tracepoint_manifest("tp3", m.bytecode(TP_O), GETUID))


@pytest.fixture
def manifests(tmp_path: Path) -> Manifests:
    v1, v2 = ManifestDir(tmp_path / "v1"), ManifestDir(tmp_path / "v2")
    write_v1(v1)
    write_v2(v2)
    return Manifests(v1, v2)


@pytest.fixture
def baseline():
    """The machine's programs, links and maps before the test (the crash tier runs under the
    shared kernel-test lock, so nothing else loads meanwhile)."""
    base = (support.prog_ids(), support.link_ids(), support.map_ids())
    yield base
    support.wait_gone(support.link_ids, base[1], "links")
    support.wait_gone(support.prog_ids, base[0], "programs")
    support.wait_gone(support.map_ids, base[2], "maps")


@pytest.fixture
def b(
    bpfman: Bpfman,  # noqa: F811
    veth: support.VethPair,
) -> Bpfman:
    bpfman.netns = veth.ns_a
    return bpfman


def command(b: Bpfman, *args: str) -> list[str]:
    cmd = [support.BPFMAN, "--bpffs-root", str(b.root), "--state-dir", str(b.state), *args]
    assert b.netns
    return ["nsenter", f"--net=/run/netns/{b.netns}", "--", *cmd]


class Started:
    """A ``bpfman`` command running in the background, in the test's namespace."""

    def __init__(self, b: Bpfman, *args: str, env: dict[str, str] | None = None) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("BPFMAN_")}
        self.proc = subprocess.Popen(
            command(b, *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean | (env or {}),
        )
        self.pid = self.proc.pid  # nsenter execs bpfman
        self.seen: list[str] = []  # stderr lines read so far

    def wait_line(self, prefix: str, timeout: float = 30) -> str | None:
        """The first stderr line starting with ``prefix``, or None if the command ended first."""
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stderr], [], [], 0.5)
            if not ready:
                continue
            line = self.proc.stderr.readline()
            if not line:  # EOF: the command ended
                self.proc.wait()
                return None
            self.seen.append(line)
            if line.startswith(prefix):
                return line.strip()
        self.proc.kill()
        raise AssertionError(f"no {prefix!r} line within {timeout}s: {''.join(self.seen)}")

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        """(exit status, stdout, all of stderr) once the command ends."""
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, "".join(self.seen) + err


class Paused(Started):
    """An ``apply`` (or ``args``) blocked at a pause point."""

    def __init__(
        self,
        b: Bpfman,
        source: str,
        step: int,
        at: str,
        timeout: float = 30,
        args: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(
            b,
            *(args or ("apply", source, "--auto-approve")),
            env={PAUSE_STEP_ENV: str(step), PAUSE_AT_ENV: at},
        )
        # The pause line, or None if the apply finished without reaching the point.
        self.marker = self.wait_line(PAUSE_MARKER, timeout)
        # The apply's own pid, from its pause line (nsenter may run it as a child).
        found = re.search(r" pid=(\d+) ", self.marker or "")
        self.pid = int(found.group(1)) if found else self.proc.pid

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.proc.communicate(timeout=30)

    def signal(self, signum: int) -> tuple[int, str, str]:
        os.kill(self.pid, signum)
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out, err

    def resume(self) -> tuple[int, str, str]:
        """Let the apply go on (SIGUSR1) and wait for it to end."""
        os.kill(self.pid, signal.SIGUSR1)
        return self.finish()


def managed_pins(root: Path) -> tuple[set[str], list[str]]:
    """(pin dirs holding a prog, every path under the root that is staging) — read from bpffs."""
    dirs, staged = set(), []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = str(Path(dirpath).relative_to(root))
        staged += [f"{rel}/{n}" for n in dirnames + filenames if n.startswith("%next")]
        if "prog" in filenames:
            dirs.add(rel)
    return dirs, staged


def assert_kernel_holds_exactly(
    b: Bpfman, baseline, programs: int, links: int, timeout: float = 5.0
) -> None:
    """bpftool's view: the programs, links and maps that appeared since ``baseline`` are exactly
    those the pins under the root account for — no orphans — and there are as many as the
    manifests want; the root holds no staging."""
    progs0, links0, maps0 = baseline
    dirs, staged = managed_pins(b.root)
    assert staged == [], f"staging left under the root: {staged}"
    assert len(dirs) == programs, sorted(dirs)
    pinned_progs = {
        support.bpftool_json("prog", "show", "pinned", str(b.root / d / "prog"))["id"]  # type: ignore[index]
        for d in dirs
    }
    pinned_links = {
        support.bpftool_json("link", "show", "pinned", str(b.root / d / "link"))["id"]  # type: ignore[index]
        for d in dirs
        if (b.root / d / "link").exists()
    }
    used_maps: set[int] = set()
    for pid in pinned_progs:
        info = support.bpftool_json("prog", "show", "id", str(pid))
        used_maps |= set(info.get("map_ids", []))  # type: ignore[union-attr]
    assert len(pinned_progs) == programs and len(pinned_links) == links
    deadline = time.monotonic() + timeout
    while True:  # freed objects go after an RCU grace period
        extra = (
            support.prog_ids() - progs0 - pinned_progs,
            support.link_ids() - links0 - pinned_links,
            support.map_ids() - maps0 - used_maps,
        )
        if not any(extra):
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"orphans (programs, links, maps): {extra}")
        time.sleep(0.05)
    assert pinned_progs <= support.prog_ids() - progs0


def plan_exit(b: Bpfman, source: str) -> int:
    return b.run("plan", source, "--detailed-exitcode", expect=None).returncode
