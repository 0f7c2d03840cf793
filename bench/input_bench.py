#!/usr/bin/env python3
"""What a hostile manifest can cost: `bpfman validate` of one 4 MiB manifest of every shape.

The goal (issue: a hostile source cannot hang or hurt bpfman): any manifest up to the 4 MiB
limit is answered in at most 2 s and 300 MB. Each shape below is as close to 4 MiB as the
limit allows. The script times the whole process (start-up included, best and median of
--repeat runs) and reads its peak RSS from wait4(2); `--check` exits 1 when a figure is over
its goal. No root is needed: validate never touches the kernel.

    .venv/bin/python bench/input_bench.py [--repeat 5] [--check] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
XDP_OBJECT = REPO / "manifests" / "examples" / "bytecode" / "xdp_counter.o"
LIMIT = 4 * 1024 * 1024
GOAL_S = 2.0
GOAL_MB = 300
HEAD = """apiVersion: bpfman.io/v1alpha1
kind: XdpProgram
metadata:
  name: {name}
spec:
  bpffunctionname: xdp_stats
  bytecode:
    path: xdp_counter.o
  interfaceselector:
    interfaces: [eth0]
  priority: {priority}
"""


def head(name: str = "fw", priority: int = 5) -> str:
    return HEAD.format(name=name, priority=priority)


def fill(prefix: str, item: Callable[[int], str], suffix: str = "", most: int = LIMIT) -> str:
    """``prefix`` + items + ``suffix``: as many items as fit under the 4 MiB limit, at most
    ``most``."""
    out = [prefix]
    size = len(prefix) + len(suffix) + 64
    i = 0
    while i < most:
        piece = item(i)
        if size + len(piece) > LIMIT:
            break
        out.append(piece)
        size += len(piece)
        i += 1
    return "".join(out) + suffix


def _labels() -> str:
    top = "apiVersion: bpfman.io/v1alpha1\nkind: XdpProgram\nmetadata:\n  name: fw\n  labels:\n"
    rest = head().split("metadata:\n  name: fw\n", 1)[1]
    return fill(top, lambda i: f"    k{i}: v\n", rest)


def _interfaces() -> str:
    before, after = head().split("[eth0]")
    return fill(before + "[eth0", lambda i: f",e{i}", "]" + after)


SHAPES: dict[str, Callable[[], str]] = {
    "global-data byte list": lambda: fill(
        head() + "  globaldata:\n    x: [", lambda i: "0,", "0]\n"
    ),
    "invalid byte values": lambda: fill(
        head() + "  globaldata:\n    x: [", lambda i: "-1,", "0]\n"
    ),
    "unknown keys": lambda: fill(head(), lambda i: f"  k{i}: 1\n"),
    "labels": lambda: _labels(),
    "interface names": lambda: _interfaces(),
    "global variables": lambda: fill(head() + "  globaldata:\n", lambda i: f"    v{i}: [1]\n"),
    "many manifests": lambda: fill("", lambda i: "---\n" + head(f"fw{i}", 5000)),
    "one long string": lambda: head(name="a" * (LIMIT - 400)),
    "valid manifests": lambda: fill("", lambda i: "---\n" + head(f"fw{i}")),
    # Just under the value limit (50,000 per file), where the most work is done.
    "manifests, under the limit": lambda: fill(
        "", lambda i: "---\n" + head(f"fw{i}", 5000), most=3800
    ),
    "invalid bytes, under the limit": lambda: fill(
        head() + "  globaldata:\n    x: [", lambda i: "-1,", "0]\n", most=49_900
    ),
    "unknown keys, under the limit": lambda: fill(head(), lambda i: f"  k{i}: 1\n", most=24_900),
    "deep flow nesting": lambda: (
        head()
        + "  globaldata:\n    x: "
        + "[" * (LIMIT // 2 - 300)
        + "]" * (LIMIT // 2 - 300)
        + "\n"
    ),
    "alias fan-out": lambda: fill(
        head() + "  globaldata:\n    a: &a [0,0,0,0,0,0,0,0,0,0]\n    x: [",
        lambda i: "*a,",
        "*a]\n",
    ),
}


# Peak RSS is read with wait4(2) by a small launcher rather than by this script: a process's
# ru_maxrss starts from the high-water mark of the process it was forked from, and this one
# holds the 4 MiB inputs.
_LAUNCHER = """
import os, sys
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(f"{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def measure(bpfman: str, source: Path, tmp: Path) -> tuple[float, float, int, str]:
    """Wall seconds, peak RSS (MB), exit status and the first problem line."""
    out = tmp / "rusage"
    start = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-S", "-c", _LAUNCHER, str(out), bpfman]
        + ["--config", "/nonexistent", "validate", str(source)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    elapsed = time.perf_counter() - start
    rss_kb, status = (int(x) for x in out.read_text().split())
    lines = p.stderr.decode(errors="replace").splitlines()
    first = lines[1].strip() if len(lines) > 1 else (lines[0] if lines else "valid")
    return elapsed, rss_kb / 1024, status, first


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bpfman", default=str(REPO / ".venv" / "bin" / "bpfman"))
    ap.add_argument("--check", action="store_true", help="exit 1 when a figure misses its goal")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bpfman-input-bench-") as tmp:
        for name, make in SHAPES.items():
            d = Path(tmp) / name.replace(" ", "-")
            d.mkdir()
            shutil.copyfile(XDP_OBJECT, d / "xdp_counter.o")
            text = make()
            (d / "m.yaml").write_text(text)
            runs = [measure(args.bpfman, d, Path(tmp)) for _ in range(args.repeat)]
            times = [r[0] for r in runs]
            results.append(
                {
                    "shape": name,
                    "bytes": len(text.encode()),
                    "best_s": min(times),
                    "median_s": statistics.median(times),
                    "peak_rss_mb": max(r[1] for r in runs),
                    "exit": runs[0][2],
                    "answer": runs[0][3][:100],
                }
            )
    width = max(len(r["shape"]) for r in results)
    print(f"{'shape':{width}}  {'MiB':>5}  {'best s':>7}  {'median s':>8}  {'peak MB':>7}  answer")
    for r in results:
        print(
            f"{r['shape']:{width}}  {r['bytes'] / 1048576:5.2f}  {r['best_s']:7.2f}  "
            f"{r['median_s']:8.2f}  {r['peak_rss_mb']:7.0f}  {r['answer']}"
        )
    worst_s = max(r["median_s"] for r in results)
    worst_mb = max(r["peak_rss_mb"] for r in results)
    print(
        f"\nworst median {worst_s:.2f} s (goal <= {GOAL_S} s), worst peak {worst_mb:.0f} MB "
        f"(goal <= {GOAL_MB} MB)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.check and (worst_s > GOAL_S or worst_mb > GOAL_MB):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
