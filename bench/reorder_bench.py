#!/usr/bin/env python3
"""Reorder N = 2, 5, 10 XDP programs on one interface: bpfman's in-place dispatcher swap against
xdp-loader doing the same change the only way it can, by unloading and loading them again.

Dispatchers need freplace, which the project's host kernel refuses, so by default this script
boots the VM tier's distribution kernel (scripts/vm/vm.py) and runs itself inside it with
``--inside``. Both tools run in the same VM, so the ratios compare like with like; the absolute
times are those of an emulated (TCG) machine and much slower than real hardware.

    .venv/bin/python bench/reorder_bench.py [--sizes 2,5,10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BPFMAN = str(REPO / ".venv" / "bin" / "bpfman")
OBJ = REPO / "manifests" / "examples" / "bytecode" / "xdp_counter.o"
NS = "bpfman-reorder-bench"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def timed(*argv: str) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{p.stdout}{p.stderr}")
    return elapsed


def manifests(src: Path, n: int, reverse: bool) -> None:
    for f in src.glob("*.yaml"):
        f.unlink()
    for i in range(n):
        prio = (n - i if reverse else i + 1) * 10
        (src / f"p{i}.yaml").write_text(
            f"""apiVersion: bpfman.io/v1alpha1
kind: XdpProgram
metadata: {{name: p{i}}}
spec:
  bpffunctionname: xdp_stats
  bytecode: {{path: xdp_counter.o}}
  interfaceselector: {{interfaces: [eth0]}}
  netns: /run/netns/{NS}
  priority: {prio}
"""
        )


def in_ns(*argv: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{NS}", "--", *argv]


def bench_bpfman(n: int, repeat: int, work: Path) -> float:
    src = work / "src"
    src.mkdir(exist_ok=True)
    shutil.copy(OBJ, src / "xdp_counter.o")
    base = [BPFMAN, "--bpffs-root", "/sys/fs/bpf/reorder-bench", "--state-dir", str(work / "st")]
    manifests(src, n, reverse=False)
    timed(*base, "apply", str(src), "--auto-approve")
    times = []
    for r in range(repeat):
        manifests(src, n, reverse=(r % 2 == 0))
        times.append(timed(*base, "apply", str(src), "--auto-approve"))
    timed(*base, "destroy", "--auto-approve")
    return statistics.median(times)


def bench_xdp_loader(n: int, repeat: int) -> float:
    def load_all(reverse: bool) -> None:
        for i in range(n):
            prio = (n - i if reverse else i + 1) * 10
            sh(*in_ns("xdp-loader", "load", "-m", "skb", "-P", str(prio), "eth0", str(OBJ)))

    load_all(False)
    times = []
    for r in range(repeat):
        t0 = time.perf_counter()
        sh(*in_ns("xdp-loader", "unload", "-a", "eth0"))
        load_all(reverse=(r % 2 == 0))
        times.append(time.perf_counter() - t0)
    sh(*in_ns("xdp-loader", "unload", "-a", "eth0"), check=False)
    return statistics.median(times)


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares seconds per program."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def inside(sizes: list[int], repeat: int) -> None:
    # The VM's kernel cannot autoload modules (its helper runs outside the guest's root).
    sh("modprobe", "-a", "veth", "sch_ingress", "cls_bpf", check=False)
    sh("ip", "netns", "add", NS)
    work = Path(tempfile.mkdtemp(prefix="reorder-bench-"))
    try:
        sh("ip", "-n", NS, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
        sh("ip", "-n", NS, "link", "set", "eth0", "up")
        fixed = statistics.median(timed(BPFMAN, "--version") for _ in range(3))
        print(f"kernel {os.uname().release}; bpfman --version: {fixed:.2f} s (fixed cost)")
        print(f"{'N':>3}  {'bpfman reorder s':>16}  {'xdp-loader unload+load s':>24}  {'ratio':>7}")
        rows = []
        for n in sizes:
            b = bench_bpfman(n, repeat, work)
            x = bench_xdp_loader(n, repeat)
            rows.append((n, b, x))
            print(f"{n:>3}  {b:>16.2f}  {x:>24.2f}  {b / x:>6.2f}x", flush=True)
        if len(rows) > 1:
            sb, sx = slope([(n, b) for n, b, _ in rows]), slope([(n, x) for n, _, x in rows])
            print(
                f"per program: bpfman {sb * 1000:.0f} ms, xdp-loader {sx * 1000:.0f} ms "
                f"(slope ratio {sb / sx:.2f}x); the rest of bpfman's time is its fixed cost"
            )
        print(
            "bpfman swaps one dispatcher with the loaded programs (ids unchanged, no moment "
            "without them); xdp-loader unloads and reloads every program."
        )
    finally:
        sh("ip", "netns", "del", NS, check=False)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree("/sys/fs/bpf/reorder-bench", ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2,5,10")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--inside", action="store_true", help="run here (in the VM), do not boot one")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.inside:
        inside(sizes, args.repeat)
        return 0
    cmd = [sys.executable, str(Path(__file__).resolve()), "--inside", "--sizes", args.sizes]
    cmd += ["--repeat", str(args.repeat)]
    return subprocess.call(
        [sys.executable, str(REPO / "scripts" / "vm" / "vm.py"), "run", "--", *cmd]
    )


if __name__ == "__main__":
    sys.exit(main())
