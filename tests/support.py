"""Test helpers shared by the kernel and CLI tiers: namespaces, veth pairs, independent observers.

Everything here observes the kernel with independent tools (bpftool, ip, tc) so that a bug in
bpfman's own observer cannot hide a bug in its loader.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BPFMAN = (
    str(REPO / ".venv" / "bin" / "bpfman") if (REPO / ".venv/bin/bpfman").exists() else "bpfman"
)


def is_root() -> bool:
    return os.geteuid() == 0


def sh(
    *argv: str, check: bool = True, netns: str | None = None, **kw
) -> subprocess.CompletedProcess:
    """Run a command (inside a named netns via nsenter, which keeps bpffs visible)."""
    cmd = list(argv)
    if netns:
        cmd = ["nsenter", f"--net=/run/netns/{netns}", "--", *cmd]
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def bpftool_json(*args: str) -> object:
    """bpftool's JSON. A listing walks the ids and then opens each object: one freed in between
    (a watcher detaching meanwhile) can fail the whole listing, so a failed listing is run again
    a few times before its error counts."""
    for _ in range(4):
        p = sh("bpftool", "-j", *args, check=False)
        if p.returncode == 0 or "show" not in args and "list" not in args:
            break
        time.sleep(0.05)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(p.args)} exited {p.returncode}: {p.stderr or p.stdout}")
    return json.loads(p.stdout) if p.stdout.strip() else []


def prog_ids() -> set[int]:
    return {p["id"] for p in bpftool_json("prog", "show")}  # type: ignore[union-attr, index]


def link_ids() -> set[int]:
    return {p["id"] for p in bpftool_json("link", "show")}  # type: ignore[union-attr, index]


def map_ids() -> set[int]:
    return {p["id"] for p in bpftool_json("map", "show")}  # type: ignore[union-attr, index]


def wait_gone(ids_fn, baseline: set[int], what: str, timeout: float = 5.0) -> None:
    """Programs and maps are freed after an RCU grace period: poll instead of asserting at once."""
    deadline = time.monotonic() + timeout
    while True:
        extra = ids_fn() - baseline
        if not extra:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"leaked {what}: {sorted(extra)}")
        time.sleep(0.05)


def remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class VethPair:
    """Two namespaces joined by a veth pair: traffic sent from ``ns_b`` arrives on ``if_a``."""

    ns_a: str
    ns_b: str
    if_a: str
    if_b: str

    @property
    def netns_a(self) -> str:
        return f"/run/netns/{self.ns_a}"

    @property
    def netns_b(self) -> str:
        return f"/run/netns/{self.ns_b}"


def create_veth_pair(if_a: str = "eth0", if_b: str = "peer0") -> VethPair:
    pair = VethPair(unique("bpfa-"), unique("bpfb-"), if_a, if_b)
    sh("ip", "netns", "add", pair.ns_a)
    sh("ip", "netns", "add", pair.ns_b)
    tmp_a, tmp_b = unique("va"), unique("vb")
    sh("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
    sh("ip", "link", "set", tmp_a, "netns", pair.ns_a)
    sh("ip", "link", "set", tmp_b, "netns", pair.ns_b)
    for ns, tmp, name in ((pair.ns_a, tmp_a, if_a), (pair.ns_b, tmp_b, if_b)):
        # No IPv6 autoconfiguration: counters must only see the frames the test sends.
        sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", netns=ns)
        sh("sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1", netns=ns)
        sh("ip", "-n", ns, "link", "set", tmp, "name", name)
        sh("ip", "-n", ns, "link", "set", name, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    return pair


def delete_veth_pair(pair: VethPair) -> None:
    for ns in (pair.ns_a, pair.ns_b):
        sh("ip", "netns", "del", ns, check=False)


_SENDER = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + b"bpfman-test".ljust(46, b"\0")
for _ in range(int(sys.argv[2])):
    s.send(frame)
"""


def send_frames(netns_path: str, ifname: str, count: int) -> None:
    """Send ``count`` raw Ethernet frames (local experimental ethertype) out of ``ifname``."""
    # nsenter, not os.setns: the latter only exists from Python 3.12.
    subprocess.run(
        ["nsenter", f"--net={netns_path}", "--", sys.executable, "-c", _SENDER, ifname, str(count)],
        check=True,
    )


def _u64(raw: object, offset: int) -> int:
    """bpftool -j prints values as lists of hex byte strings (plus a "formatted" view with BTF)."""
    data = bytes(int(b, 16) for b in raw)  # type: ignore[union-attr]
    return int.from_bytes(data[offset : offset + 8], "little")


def map_u64(ref: str, offset: int = 0) -> int:
    """Sum over entries and CPUs of the u64 at ``offset`` in each value, read with bpftool.

    ``ref`` is ``id N`` or ``pinned PATH`` as bpftool takes it.
    """
    total = 0
    for entry in bpftool_json("map", "dump", *ref.split(" ", 1)):  # type: ignore[union-attr]
        if "values" in entry:  # per-CPU map
            total += sum(_u64(v["value"], offset) for v in entry["values"])
        else:
            total += _u64(entry["value"], offset)
    return total


def bpftool_map_values(map_id: int, offset: int = 0) -> list[int]:
    """Per entry of a map read by id with bpftool: the u64 at ``offset``, summed over CPUs."""
    totals = []
    for entry in bpftool_json("map", "dump", "id", str(map_id)):  # type: ignore[union-attr]
        if "values" in entry:
            totals.append(sum(_u64(v["value"], offset) for v in entry["values"]))
        else:
            totals.append(_u64(entry["value"], offset))
    return totals
