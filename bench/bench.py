"""bpfman against a C libbpf loader: N tracepoint programs loaded, attached and pinned.

For each N this measures, in one run on one machine:
  (a) ``bpfman apply --auto-approve`` of N TracepointProgram manifests,
  (b) ``bpfman plan`` of the same manifests once applied (must say "No changes"),
  (c) ``bench/loader``, a minimal C libbpf loader, doing the same N loads, attaches and pins,
  (d) bpfman's fixed cost: ``bpfman --version`` and ``bpfman plan`` of an empty directory,
and prints the ratios plus the per-item slope of each tool (least squares over the sizes), since a
Python process can match a C loader's slope even though it cannot match its start-up.

Run as root from the repository: ``make bench``, or for a quicker run
``.venv/bin/python bench/bench.py --sizes 10,100``.
Every run uses its own bpffs roots and state dir and removes them afterwards.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
OBJECT = BENCH / "tp_bench.o"
PROGRAM = "tp_bench"
MAP = "tp_bench_hits"
LOADER = BENCH / "loader"
BPFFS = Path("/sys/fs/bpf")
EVENTS = Path("/sys/kernel/tracing/events")

# The kernel refuses a 65th program on one tracepoint (BPF_TRACE_MAX_PROGS = 64, E2BIG); stay
# below it with room for whatever else the host has attached.
PER_TRACEPOINT = 60
# Quiet time after a teardown before the next timed load (see settle()).
SETTLE_S = 1.0
# Syscalls a machine almost never makes, so the N attached programs do not slow the host (or the
# tools being measured) down. Only the entry tracepoints are used; nothing is ever called.
RARE_SYSCALLS = (
    "acct",
    "add_key",
    "adjtimex",
    "chroot",
    "clock_adjtime",
    "clock_settime",
    "delete_module",
    "finit_module",
    "init_module",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "pivot_root",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "setdomainname",
    "sethostname",
    "settimeofday",
    "swapoff",
    "swapon",
    "syslog",
    "sysfs",
    "vhangup",
    "personality",
    "ustat",
    "mount_setattr",
    "open_tree",
    "fsopen",
    "fspick",
    "fsmount",
    "move_mount",
    "ioperm",
    "iopl",
    ").split(",
)
# Never these: the examples and tests use them, and bpf(2) is what both tools call while measured.
AVOID = {"openat", "getpid", "bpf"}


@dataclass
class Row:
    n: int
    apply_s: float
    loader_s: float
    plan_s: float
    destroy_s: float

    @property
    def ratio(self) -> float:
        return self.apply_s / self.loader_s if self.loader_s else math.inf

    @property
    def plan_ratio(self) -> float:
        # The floor for a no-op plan is the loader's cost of the same N loads: a reconciler that
        # re-derived everything by reloading would cost at least that.
        return self.plan_s / self.loader_s if self.loader_s else math.inf


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    version_s: float | None = None
    empty_plan_s: float | None = None
    notes: list[str] = field(default_factory=list)


class BenchError(Exception):
    pass


def run(argv: list[str], what: str) -> tuple[float, str]:
    """Run a command, return (wall seconds, stdout); a failure stops the benchmark."""
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(
            f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n{proc.stderr.strip()}"
        )
    return elapsed, proc.stdout


def best_of(times: int, argv: list[str], what: str) -> tuple[float, str]:
    """The minimum of several runs: the least disturbed one is the best estimate of the cost."""
    results = [run(argv, what) for _ in range(times)]
    return min(results, key=lambda r: r[0])


def tracepoints(count: int) -> list[str]:
    """``count`` syscall entry tracepoints that exist here, rare ones first."""
    have = {p.name for p in (EVENTS / "syscalls").glob("sys_enter_*")}
    chosen = [f"sys_enter_{s}" for s in RARE_SYSCALLS if f"sys_enter_{s}" in have]
    rest = sorted(have - set(chosen) - {f"sys_enter_{s}" for s in AVOID})
    chosen += rest
    if len(chosen) < count:
        raise BenchError(f"need {count} syscall tracepoints, this kernel has {len(chosen)}")
    return [f"syscalls/{name}" for name in chosen[:count]]


def write_manifests(directory: Path, n: int, points: list[str]) -> None:
    """N TracepointProgram manifests sharing one bytecode file, spread round robin over points."""
    directory.mkdir(parents=True)
    shutil.copy(OBJECT, directory / OBJECT.name)
    for i in range(n):
        (directory / f"bench-tp-{i:04d}.yaml").write_text(
            "apiVersion: bpfman.io/v1alpha1\n"
            "kind: TracepointProgram\n"
            "metadata:\n"
            f"  name: bench-tp-{i:04d}\n"
            "spec:\n"
            f"  bpffunctionname: {PROGRAM}\n"
            "  bytecode:\n"
            f"    path: {OBJECT.name}\n"
            "  names:\n"
            f"    - {points[i % len(points)]}\n"
        )


def count_objects() -> int:
    """Our programs and maps, counted with bpftool: an independent check that work was done."""
    total = 0
    for kind, name in (("prog", PROGRAM), ("map", MAP)):
        out = subprocess.run(["bpftool", "-j", kind, "show"], capture_output=True, text=True).stdout
        total += sum(1 for obj in json.loads(out or "[]") if obj.get("name") == name)
    return total


def settle(baseline: int, timeout: float = 10.0) -> None:
    """Wait until a teardown has really finished before timing the next load.

    The kernel frees unpinned programs and maps after RCU grace periods, and that deferred work
    goes on for a few hundred milliseconds after bpftool stops listing them: measured here, a load
    started 0.2 s after a teardown of 100 programs took four times as long as one started 1 s
    after. Both tools get the same quiet start.
    """
    deadline = time.monotonic() + timeout
    while count_objects() > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(SETTLE_S)


def check_loaded(baseline: int, n: int, who: str, results: Results) -> None:
    found = count_objects() - baseline
    if found != 2 * n:  # one program and one map per load
        results.notes.append(
            f"{who}: bpftool shows {found} {PROGRAM} programs and maps, expected {2 * n}"
        )


def least_squares(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """(slope, intercept) of the line through (x, y) points; None with fewer than two sizes."""
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    slope = sxy / sxx
    return slope, mean_y - slope * mean_x


def measure_fixed_cost(bpfman: str, results: Results, repeat: int) -> None:
    tag = f"bpfman-bench-{os.getpid()}-empty"
    root, state = BPFFS / tag, Path(tempfile.mkdtemp(prefix=f"{tag}-"))
    empty = state / "manifests"
    empty.mkdir()
    try:
        results.version_s, _ = best_of(repeat, [bpfman, "--version"], "bpfman --version")
        g = [bpfman, "--bpffs-root", str(root), "--state-dir", str(state / "state")]
        try:
            results.empty_plan_s, _ = best_of(repeat, [*g, "plan", str(empty)], "plan of empty dir")
        except BenchError as e:
            results.notes.append(f"bpfman plan of an empty directory: {e}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


def measure_size(
    bpfman: str, n: int, points: list[str], results: Results, repeat: int, baseline: int
) -> Row:
    """Best of ``repeat`` rounds; ``baseline`` is how many of our objects existed before the run."""
    tag = f"bpfman-bench-{os.getpid()}-{n}"
    work = Path(tempfile.mkdtemp(prefix=f"{tag}-"))
    manifests, state = work / "manifests", work / "state"
    root, pins = BPFFS / tag, BPFFS / f"{tag}-loader"
    g = [bpfman, "--bpffs-root", str(root), "--state-dir", str(state)]
    write_manifests(manifests, n, points)
    rounds: list[Row] = []
    try:
        for _ in range(repeat):
            settle(baseline)
            apply_s, _ = run(
                [*g, "apply", str(manifests), "--auto-approve"], f"bpfman apply (N={n})"
            )
            check_loaded(baseline, n, f"bpfman apply N={n}", results)
            plan_s, out = best_of(3, [*g, "plan", str(manifests)], f"bpfman plan (N={n})")
            if "No changes" not in out:
                results.notes.append(f"N={n}: plan after apply did not say 'No changes'")
            destroy_s, _ = run([*g, "destroy", "--auto-approve"], f"bpfman destroy (N={n})")
            shutil.rmtree(root, ignore_errors=True)
            settle(baseline)

            loader_s, _ = run(
                [str(LOADER), "load", str(OBJECT), PROGRAM, ",".join(points), str(n), str(pins)],
                f"C loader (N={n})",
            )
            check_loaded(baseline, n, f"C loader N={n}", results)
            run([str(LOADER), "cleanup", str(pins)], "C loader cleanup")

            rounds.append(Row(n, apply_s, loader_s, plan_s, destroy_s))
        # The fastest of each measurement, independently: the least disturbed run of each.
        return Row(
            n,
            min(r.apply_s for r in rounds),
            min(r.loader_s for r in rounds),
            min(r.plan_s for r in rounds),
            min(r.destroy_s for r in rounds),
        )
    finally:
        # Whatever happened: bpfman's own teardown first, then the pins themselves.
        if root.exists():
            subprocess.run([*g, "destroy", "--auto-approve"], capture_output=True)
            shutil.rmtree(root, ignore_errors=True)
        subprocess.run([str(LOADER), "cleanup", str(pins)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def report(results: Results) -> None:
    rows = results.rows
    print()
    print("bpfman vs a C libbpf loader: N tracepoint programs loaded, attached and pinned")
    print()
    header = (
        f"{'N':>6}  {'bpfman apply s':>14}  {'C loader s':>10}  {'ratio':>8}  "
        f"{'bpfman plan (unchanged) s':>25}  {'ratio':>8}  {'bpfman destroy s':>16}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.n:>6}  {r.apply_s:>14.3f}  {r.loader_s:>10.3f}  {r.ratio:>7.1f}x  "
            f"{r.plan_s:>25.3f}  {r.plan_ratio:>7.1f}x  {r.destroy_s:>16.3f}"
        )
    print()
    fits = {
        "bpfman apply": least_squares([(r.n, r.apply_s) for r in rows]),
        "C loader": least_squares([(r.n, r.loader_s) for r in rows]),
        "bpfman plan (unchanged)": least_squares([(r.n, r.plan_s) for r in rows]),
        "bpfman destroy": least_squares([(r.n, r.destroy_s) for r in rows]),
    }
    sizes = ", ".join(str(r.n) for r in rows)
    print(f"Per-item slope and fixed cost (least squares over N = {sizes}):")
    for name, fit in fits.items():
        if fit is None:
            print(f"  {name:<24} n/a (needs at least two sizes)")
        else:
            print(f"  {name:<24} {fit[0] * 1000:8.3f} ms/item   intercept {fit[1]:7.3f} s")
    apply_fit, loader_fit = fits["bpfman apply"], fits["C loader"]
    if apply_fit and loader_fit and loader_fit[0] > 0:
        print(f"  slope ratio bpfman apply / C loader: {apply_fit[0] / loader_fit[0]:.1f}x")
    print()
    print("bpfman fixed cost (best of several runs):")
    for name, value in (
        ("bpfman --version", results.version_s),
        ("bpfman plan (empty dir)", results.empty_plan_s),
    ):
        print(f"  {name:<24} {'n/a' if value is None else f'{value:.3f} s'}")
    for note in results.notes:
        print(f"note: {note}")


def preflight(bpfman: str) -> None:
    if os.geteuid() != 0:
        raise BenchError("run as root: the benchmark loads eBPF programs")
    if not EVENTS.is_dir():
        raise BenchError(
            f"{EVENTS} missing: mount tracefs (mount -t tracefs tracefs /sys/kernel/tracing)"
        )
    if not os.path.ismount(BPFFS):
        raise BenchError(f"{BPFFS} is not a bpffs mount: mount -t bpf bpf {BPFFS}")
    if not OBJECT.exists():
        raise BenchError(f"{OBJECT} missing: run 'make bytecode'")
    if not os.access(LOADER, os.X_OK):
        raise BenchError(f"{LOADER} missing: run 'make -C bench'")
    if not shutil.which(bpfman):
        raise BenchError(f"{bpfman} not found: run 'make install'")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes", default="10,100,1000", help="comma-separated N values (default %(default)s)"
    )
    p.add_argument(
        "--repeat", type=int, default=3, help="runs per size; the fastest counts (default 3)"
    )
    p.add_argument("--bpfman", default=str(REPO / ".venv/bin/bpfman"), help="bpfman executable")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        p.error(f"--sizes must be comma-separated integers, not {args.sizes!r}")
    if not args.sizes or min(args.sizes) < 1 or args.repeat < 1:
        p.error("sizes and --repeat must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = Results()
    try:
        preflight(args.bpfman)
        points = tracepoints(math.ceil(max(args.sizes) / PER_TRACEPOINT))
        # Objects by these names that someone else holds (e.g. a concurrent run) are not ours.
        baseline = count_objects()
        measure_fixed_cost(args.bpfman, results, repeat=5)
        for n in args.sizes:
            used = points[: math.ceil(n / PER_TRACEPOINT)]
            print(
                f"N={n}: {len(used)} tracepoint(s), at most {PER_TRACEPOINT} programs each ...",
                file=sys.stderr,
            )
            results.rows.append(measure_size(args.bpfman, n, used, results, args.repeat, baseline))
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    report(results)
    if args.json:
        doc = {
            "rows": [
                {**asdict(r), "ratio": r.ratio, "plan_ratio": r.plan_ratio} for r in results.rows
            ],
            "bpfman_version_s": results.version_s,
            "bpfman_empty_plan_s": results.empty_plan_s,
            "notes": results.notes,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
