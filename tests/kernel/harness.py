"""One test world per kernel kind: the same contract test drives FakeKernel and RealKernel.

A ``World`` gives a test an interface to attach to (in a private network namespace for the real
kernel), ways to provoke the outside world (a foreign XDP program, frames, getpid calls, uprobe
hits) and, for the real kernel, independent observers (bpftool, ip) so that a bug in bpfman's
own observer cannot hide a bug in its loader.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.kernel import FakeKernel, Installed, Kernel, RealKernel, TcxPoint, XdpPoint
from tests import support

BPF = support.REPO / "tests" / "bpf"
VM_BPF = support.REPO / "tests" / "vm" / "bpf"
IFNAME = "eth0"
SYS_GETPID, SYS_GETPPID = 39, 110  # x86-64 syscall numbers

_SENDER = r"""
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + b"bpfman-test".ljust(46, b"\0")
for _ in range(int(sys.argv[2])):
    s.send(frame)
"""


def obj(name: str) -> str:
    return str(BPF / f"{name}.o")


def vm_obj(name: str) -> str:
    """An object of the VM tier (tests/vm/bpf), e.g. the kprobe/fentry programs."""
    return str(VM_BPF / f"{name}.o")


# What the fake kernel knows about the test objects (the real one reads it from the ELF files).
FAKE_OBJECTS: dict[str, tuple[list[tuple[str, str]], dict[str, int]]] = {
    # object: ([(map pin name, type)], {global variable: size})
    obj("global_data"): (
        [("bss", "array"), ("counters", "array"), ("data", "array"), ("rodata", "array")],
        {"step": 8, "tag": 4, "calls": 8},
    ),
    obj("shared_maps"): ([("bss", "array"), ("shared", "array")], {"seen": 8}),
    obj("uprobe_counter"): ([("counters", "array")], {}),
    vm_obj("kernel_probes"): ([("counters", "array")], {}),
}


@dataclass
class Container:
    """A process in a mount namespace of its own, holding a copy of the uprobe target at a path
    that does not exist in ours."""

    pid: int
    target: str  # the copy's path inside the container
    run: Callable[[int], None]  # make the container call bpfman_probe_me() n times


def wait_for(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Objects are freed after an RCU grace period: poll instead of asserting at once."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class World:
    kind: str  # "fake" | "real"
    kernel: Kernel
    root: Path
    uprobe_target: str
    _veth: support.VethPair | None = None
    _cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def real(self) -> bool:
        return self.kind == "real"

    # --- network ----------------------------------------------------------------------------

    @property
    def netns(self) -> str:
        """Path of the namespace holding ``eth0`` (created on first use)."""
        if self.real:
            if self._veth is None:
                self._veth = support.create_veth_pair(IFNAME)
            return self._veth.netns_a
        assert isinstance(self.kernel, FakeKernel)
        ns = "/run/netns/fake-a"
        if not self.kernel.interface_exists(IFNAME, ns):
            self.kernel.add_interface(IFNAME, ns)
        return ns

    @property
    def ns_name(self) -> str:
        return Path(self.netns).name

    def xdp(self, mode: str = "auto") -> XdpPoint:
        return XdpPoint(IFNAME, mode=mode, netns=self.netns)

    def tcx(self, direction: str = "ingress") -> TcxPoint:
        return TcxPoint(IFNAME, direction, netns=self.netns)

    def attach_foreign_xdp(self) -> int:
        """Attach a program bpfman does not own, the way an operator would."""
        if not self.real:
            assert isinstance(self.kernel, FakeKernel)
            return self.kernel.attach_foreign_xdp(IFNAME, self.netns)
        ns = self.ns_name
        support.sh("ip", "-n", ns, "link", "set", "dev", IFNAME, "xdpgeneric", "obj",
                   obj("xdp_pass"), "sec", "xdp")  # fmt: skip
        self._cleanups.append(
            lambda: support.sh("ip", "-n", ns, "link", "set", "dev", IFNAME, "xdpgeneric", "off")
        )
        prog_id = self.ip_xdp()[0]
        assert prog_id is not None
        return prog_id

    def send_frames(self, count: int) -> None:
        """Frames sent from the peer namespace arrive on eth0 (ingress)."""
        if self.real:
            assert self._veth is not None
            v = self._veth
            support.sh(sys.executable, "-c", _SENDER, v.if_b, str(count), netns=v.ns_b)

    # --- tracing ----------------------------------------------------------------------------

    @staticmethod
    def getpid(count: int) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        for _ in range(count):
            libc.syscall(SYS_GETPID)  # getpid(2) itself, never a cached value

    @staticmethod
    def getppid(count: int = 1) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        for _ in range(count):
            libc.syscall(SYS_GETPPID)

    def container(self) -> Container:
        """Start a "container" (stopped with the world): a shell in its own mount namespace with
        a tmpfs over an empty directory of ours, holding a copy of the uprobe target."""
        if not self.real:
            assert isinstance(self.kernel, FakeKernel)
            pid, target = 4242, "/opt/app/bin/uprobe_target"
            self.kernel.containers[pid] = {target}
            return Container(pid, target, lambda n: None)
        mnt = tempfile.mkdtemp(prefix="bpfman-ctr-")
        self._cleanups.append(lambda: shutil.rmtree(mnt, ignore_errors=True))
        target = f"{mnt}/bin/uprobe_target"
        script = (
            f"mount -t tmpfs tmpfs {mnt} && mkdir {mnt}/bin && cp {self.uprobe_target} {target} "
            f"&& echo ready && while read n; do {target} $n; echo done; done"
        )
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

        def stop() -> None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

        self._cleanups.append(stop)
        assert proc.stdout is not None and proc.stdin is not None
        if proc.stdout.readline().strip() != "ready":
            raise AssertionError("the container did not start (unshare/mount failed)")

        def run(count: int) -> None:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(f"{count}\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "done"

        return Container(proc.pid, target, run)

    def run_uprobe_target(self, count: int) -> None:
        subprocess.run([self.uprobe_target, str(count)], check=True)

    # --- independent observers (real kernel only) -------------------------------------------

    def counters(self, inst: Installed, name: str = "counters") -> list[int]:
        """Values of the installed program's ``counters`` map (or another array of u64s, e.g.
        "bss"), read by bpftool by map id."""
        (m,) = [m for m in inst.maps if m.name == name]
        return support.bpftool_map_values(m.id)

    def ip_xdp(self) -> tuple[int | None, str | None]:
        """(prog id, mode) of eth0's XDP program as `ip -d -j link show` reports it."""
        data = support.sh("ip", "-n", self.ns_name, "-d", "-j", "link", "show", IFNAME).stdout
        link = json.loads(data)[0]
        xdp = link.get("xdp")
        if not xdp:
            return None, None
        mode = {1: "native", 2: "generic", 3: "offload"}.get(xdp.get("mode"))
        prog = xdp.get("prog") or {}
        return prog.get("id"), mode

    @staticmethod
    def prog_exists(prog_id: int) -> bool:
        return (
            support.sh("bpftool", "prog", "show", "id", str(prog_id), check=False).returncode == 0
        )

    @staticmethod
    def link_json(link_id: int) -> dict | None:
        p = support.sh("bpftool", "-j", "link", "show", "id", str(link_id), check=False)
        if p.returncode != 0:
            return None
        return json.loads(p.stdout)

    def pins(self) -> list[str]:
        """Every file and directory under the root, relative (bpffs, seen by the shell)."""
        if not self.root.exists():
            return []
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*"))

    def close(self) -> None:
        for fn in reversed(self._cleanups):
            with contextlib.suppress(Exception):  # best effort: the test's own result matters more
                fn()
        if self._veth is not None:
            support.delete_veth_pair(self._veth)


def make_kernel(kind: str, root: Path) -> Kernel:
    if kind == "real":
        return RealKernel(root)
    fake = FakeKernel(root)
    for path, (maps, variables) in FAKE_OBJECTS.items():
        fake.object_maps[path] = maps
        fake.globals[path] = variables
    return fake
