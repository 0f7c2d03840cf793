"""bpfman against a C libbpf loader: N tracepoint programs loaded, attached and pinned.

Prints the figures of issue 11 with the C loader side by side and the goal next to each:

  figure                                             goal
  apply, per program (slope over the sizes)          <= 1.5x the C loader's slope
  ``bpfman plan`` of an empty directory              <= 0.15 s
  ``bpfman plan``, 1000 applied manifests, cold      <= 1.0 s
  the same, nothing changed since the last plan      <= 0.3 s
  peak RSS of ``bpfman plan`` and ``apply``, N=1000  <= 150 MB each

For each N, per round (the fastest of each time over ``--repeat`` rounds counts, the largest peak),
with every load starting after the previous teardown has settled (see ``settle``):
  (a) ``bpfman apply --auto-approve`` of N TracepointProgram manifests, cold: bpfman's caches
      (``CACHE`` under the state dir) removed first, as a new host would run it; the slope goal is
      checked against this one,
  (b) ``bpfman plan`` right after, caches removed again (cold; must say "No changes"), then three
      more plans, each after a plan (warm: nothing changed since the last plan; the best counts),
  (c) ``bpfman destroy``, then the same apply again with the cache kept (warm apply) and a destroy,
  (d) ``bench/loader``, a minimal C libbpf loader, doing the same N loads, attaches and pins,
and once per run bpfman's fixed cost: ``bpfman --version`` and ``bpfman plan`` of an empty
directory (best of 5). Slopes are least-squares lines over the sizes, since a Python process can
match a C loader's slope even though it cannot match its start-up.

The N programs are spread over syscall entry tracepoints the host almost never hits, at most
``PER_TRACEPOINT`` on each and skipping any that others' programs fill. bpftool counts the
programs and maps after each load, independently of both tools.

Every command is run by a small launcher that times it and reads its peak RSS with wait4(2): a
process's ru_maxrss starts from the high-water mark of the process it was forked from, so read
from this script it would count the script as well.

``--check`` exits 1 when a figure is beyond its goal or was not measured (the N = 1000 figures
need 1000 in ``--sizes``). Not part of ``make test``: timings are never asserted by tests.

Run as root from the repository: ``make bench``, or for a quicker run
``.venv/bin/python bench/bench.py --sizes 10,100``.
Every run uses its own bpffs roots and state dirs and removes them afterwards, also on a failure
or an interrupt.
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
from collections import Counter
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
# bpfman's caches, relative to its state dir: removed before every cold command.
CACHE = Path("cache")

# The goals of issue 11. The N = 1000 figures are read at HEADLINE_N only.
HEADLINE_N = 1000
GOAL_SLOPE_RATIO = 1.5  # bpfman apply's slope / the C loader's
GOAL_EMPTY_PLAN_S = 0.15
GOAL_COLD_PLAN_S = 1.0
GOAL_WARM_PLAN_S = 0.3
GOAL_PEAK_MB = 150
WARM_PLANS = 3  # plans after the cold one; the fastest is the warm figure

# The kernel refuses a 65th program on one tracepoint (BPF_TRACE_MAX_PROGS, E2BIG); stay below it
# with room for whatever else the host attaches, and skip tracepoints that others have filled.
TRACE_MAX_PROGS = 64
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
    "mbind",
    "migrate_pages",
    "move_pages",
    "set_mempolicy_home_node",
    "kcmp",
    "fanotify_init",
    "fanotify_mark",
    "name_to_handle_at",
    "open_by_handle_at",
    "process_vm_readv",
    "process_vm_writev",
    "remap_file_pages",
    "userfaultfd",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
    "memfd_secret",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "io_pgetevents",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedreceive",
    "mq_notify",
    "mq_getsetattr",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
)
# Never these: the examples and tests use them, and bpf(2) is what both tools call while measured.
AVOID = {"openat", "getpid", "bpf"}


# Runs argv[2:], then writes "<wall seconds> <peak RSS KiB> <exit status>" to argv[1]. Started
# with -I -S it holds about 8 MB, less than any bpfman process, so the peak it reads is the
# command's own (see the module docstring); timing here leaves its own start-up out. It ignores
# SIGINT (the command, in the same process group, gets it too) so that it outlives the command
# and this script's clean-up never races a command still running.
_LAUNCHER = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ, setsigdef=[signal.SIGINT])
_, status, usage = os.wait4(pid, 0)
elapsed = time.perf_counter() - start
with open(sys.argv[1], "w") as f:
    f.write(f"{elapsed} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


@dataclass
class Run:
    seconds: float
    peak_kib: int
    stdout: str


@dataclass
class Row:
    """One size: the fastest time and the largest peak of each measurement over the rounds."""

    n: int
    apply_s: float  # cold: bpfman's caches removed first
    apply_warm_s: float  # after a destroy, the caches kept
    loader_s: float
    plan_s: float  # cold: the first plan after the apply, caches removed
    plan_warm_s: float  # a plan after a plan
    destroy_s: float
    apply_peak_kib: int
    plan_peak_kib: int

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

    def note(self, text: str) -> None:
        if text not in self.notes:  # the same finding in every round is said once
            self.notes.append(text)

    def row(self, n: int) -> Row | None:
        return next((r for r in self.rows if r.n == n), None)


@dataclass
class Figure:
    """One line of the headline table; ``met`` is None for a figure without a goal."""

    name: str
    bpfman: str
    loader: str
    goal: str
    met: bool | None
    shown: str = ""  # how far from the goal, next to yes/no

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "—" if self.goal == "—" else "n/a"
        return ("yes" if self.met else "no") + (f" ({self.shown})" if self.shown else "")


class BenchError(Exception):
    pass


def run(argv: list[str], what: str) -> Run:
    """Run a command through the launcher; a failure stops the benchmark."""
    fd, report = tempfile.mkstemp(prefix="bpfman-bench-", suffix=".run")
    os.close(fd)
    # Files rather than pipes: an interrupted read of a pipe would leave the command writing
    # into a closed one.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _LAUNCHER, report, *argv],
                stdout=out,
                stderr=err,
            )
            try:
                proc.wait()
            except BaseException:
                proc.wait()  # until the command is gone; a second interrupt stops waiting
                raise
            fields = Path(report).read_text().split()
        finally:
            os.unlink(report)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0 or len(fields) != 3 or fields[2] != "0":
        raise BenchError(
            f"{what} failed (exit {fields[2] if len(fields) == 3 else proc.returncode}): "
            f"{' '.join(argv)}\n{stderr.strip()}"
        )
    return Run(float(fields[0]), int(fields[1]), stdout)


def cold(state: Path) -> None:
    """Remove bpfman's caches so that the next command runs as on a new host."""
    shutil.rmtree(state / CACHE, ignore_errors=True)


def attached() -> Counter[str]:
    """How many programs each tracepoint has attached through links, by anyone.

    Read with bpfman's own bpf(2) bindings since this host's bpftool does not name the tracepoint
    of a link (Linux 6.6 and later do). Without them, every tracepoint counts as free."""
    counts: Counter[str] = Counter()
    try:
        from reconciler.kernel.sys import bpf

        for link_id in bpf.link_ids():
            try:
                with bpf.opened(bpf.link_fd_by_id(link_id)) as fd:
                    info = bpf.link_info(fd)
            except OSError:
                continue  # detached meanwhile
            if info.detail.get("perf_event_type") == "tracepoint":
                counts[str(info.detail["tracepoint"])] += 1
    except (ImportError, AttributeError, OSError) as e:
        print(f"bench: cannot count the programs on tracepoints ({e})", file=sys.stderr)
    return counts


def tracepoints(count: int) -> list[str]:
    """``count`` syscall entry tracepoints that exist here and have room, rare ones first."""
    have = {p.name for p in (EVENTS / "syscalls").glob("sys_enter_*")}
    chosen = [f"sys_enter_{s}" for s in RARE_SYSCALLS if f"sys_enter_{s}" in have]
    rest = sorted(have - set(chosen) - {f"sys_enter_{s}" for s in AVOID})
    taken = attached()
    full = {t for t in chosen + rest if taken[t] + PER_TRACEPOINT > TRACE_MAX_PROGS}
    if full:
        print(
            f"bench: skipping {len(full)} tracepoint(s) that others' programs fill", file=sys.stderr
        )
    chosen = [t for t in chosen + rest if t not in full]
    if len(chosen) < count:
        raise BenchError(f"need {count} syscall tracepoints with room, this host has {len(chosen)}")
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
        results.note(f"{who}: bpftool shows {found} {PROGRAM} programs and maps, expected {2 * n}")


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
    root, work = BPFFS / tag, Path(tempfile.mkdtemp(prefix=f"{tag}-"))
    empty, state = work / "manifests", work / "state"
    empty.mkdir()
    g = [bpfman, "--bpffs-root", str(root), "--state-dir", str(state)]
    try:
        results.version_s = min(
            run([bpfman, "--version"], "bpfman --version").seconds for _ in range(repeat)
        )
        try:
            times = []
            for _ in range(repeat):
                cold(state)
                times.append(run([*g, "plan", str(empty)], "plan of an empty dir").seconds)
            results.empty_plan_s = min(times)
        except BenchError as e:
            results.note(f"bpfman plan of an empty directory: {e}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def measure_size(
    bpfman: str, n: int, points: list[str], results: Results, repeat: int, baseline: int
) -> Row:
    """``repeat`` rounds; ``baseline`` is how many of our objects existed before the run."""
    tag = f"bpfman-bench-{os.getpid()}-{n}"
    work = Path(tempfile.mkdtemp(prefix=f"{tag}-"))
    manifests, state = work / "manifests", work / "state"
    root, pins = BPFFS / tag, BPFFS / f"{tag}-loader"
    g = [bpfman, "--bpffs-root", str(root), "--state-dir", str(state)]
    apply = [*g, "apply", str(manifests), "--auto-approve"]
    destroy = [*g, "destroy", "--auto-approve"]
    write_manifests(manifests, n, points)
    rounds: list[Row] = []
    try:
        for _ in range(repeat):
            settle(baseline)
            cold(state)
            applied = run(apply, f"bpfman apply (N={n})")
            check_loaded(baseline, n, f"bpfman apply N={n}", results)
            cold(state)
            # The first plan is cold; each of the others follows a plan with nothing changed.
            plans = [
                run([*g, "plan", str(manifests)], f"bpfman plan (N={n})")
                for _ in range(1 + WARM_PLANS)
            ]
            if any("No changes" not in p.stdout for p in plans):
                results.note(f"N={n}: a plan after apply did not say 'No changes'")
            destroyed = run(destroy, f"bpfman destroy (N={n})")
            shutil.rmtree(root, ignore_errors=True)

            settle(baseline)
            if not (state / CACHE).exists():
                results.note(f"no {CACHE}/ in the state dir after destroy: warm apply = cold apply")
            reapplied = run(apply, f"bpfman apply, warm (N={n})")
            check_loaded(baseline, n, f"bpfman warm apply N={n}", results)
            run(destroy, f"bpfman destroy (N={n})")
            shutil.rmtree(root, ignore_errors=True)

            settle(baseline)
            loaded = run(
                [str(LOADER), "load", str(OBJECT), PROGRAM, ",".join(points), str(n), str(pins)],
                f"C loader (N={n})",
            )
            check_loaded(baseline, n, f"C loader N={n}", results)
            run([str(LOADER), "cleanup", str(pins)], "C loader cleanup")

            rounds.append(
                Row(
                    n,
                    apply_s=applied.seconds,
                    apply_warm_s=reapplied.seconds,
                    loader_s=loaded.seconds,
                    plan_s=plans[0].seconds,
                    plan_warm_s=min(p.seconds for p in plans[1:]),
                    destroy_s=destroyed.seconds,
                    apply_peak_kib=max(applied.peak_kib, reapplied.peak_kib),
                    plan_peak_kib=max(p.peak_kib for p in plans),
                )
            )
        # The fastest of each time, independently: the least disturbed run of each. Memory is not
        # disturbed by other load, so its largest peak counts.
        return Row(
            n,
            apply_s=min(r.apply_s for r in rounds),
            apply_warm_s=min(r.apply_warm_s for r in rounds),
            loader_s=min(r.loader_s for r in rounds),
            plan_s=min(r.plan_s for r in rounds),
            plan_warm_s=min(r.plan_warm_s for r in rounds),
            destroy_s=min(r.destroy_s for r in rounds),
            apply_peak_kib=max(r.apply_peak_kib for r in rounds),
            plan_peak_kib=max(r.plan_peak_kib for r in rounds),
        )
    finally:
        # Whatever happened: bpfman's own teardown first, then the pins themselves.
        if root.exists():
            subprocess.run(destroy, capture_output=True)
            shutil.rmtree(root, ignore_errors=True)
        subprocess.run([str(LOADER), "cleanup", str(pins)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def slopes(rows: list[Row]) -> dict[str, tuple[float, float] | None]:
    """Each series' least-squares (seconds per item, intercept) over the sizes."""
    series = {
        "bpfman apply (cold)": lambda r: r.apply_s,
        "bpfman apply (warm)": lambda r: r.apply_warm_s,
        "C loader": lambda r: r.loader_s,
        "bpfman plan (cold)": lambda r: r.plan_s,
        "bpfman plan (warm)": lambda r: r.plan_warm_s,
        "bpfman destroy": lambda r: r.destroy_s,
    }
    return {name: least_squares([(r.n, of(r)) for r in rows]) for name, of in series.items()}


def megabytes(kib: int) -> float:
    """ru_maxrss is in KiB on Linux; the goal is in MB."""
    return kib * 1024 / 1e6


def per_item(fit: tuple[float, float] | None) -> str:
    return "n/a" if fit is None else f"{fit[0] * 1000:.2f} ms"


def goal_figure(name: str, value: float | None, goal: float, unit: str, digits: int) -> Figure:
    if value is None:
        return Figure(name, "not measured", "—", f"≤ {goal:g} {unit}", None)
    return Figure(name, f"{value:.{digits}f} {unit}", "—", f"≤ {goal:g} {unit}", value <= goal)


def figures(results: Results) -> list[Figure]:
    """The headline: issue 11's figures, the C loader's next to them, and their goals."""
    fits = slopes(results.rows)
    sizes = ", ".join(str(r.n) for r in results.rows)
    apply_fit, warm_fit, loader_fit = (
        fits["bpfman apply (cold)"],
        fits["bpfman apply (warm)"],
        fits["C loader"],
    )
    slope = Figure(
        f"apply, per program (slope, N = {sizes})",
        per_item(apply_fit),
        per_item(loader_fit),
        f"≤ {GOAL_SLOPE_RATIO:g}× C loader",
        None,
    )
    if apply_fit and loader_fit and loader_fit[0] > 0:
        ratio = apply_fit[0] / loader_fit[0]
        slope.met, slope.shown = ratio <= GOAL_SLOPE_RATIO, f"{ratio:.1f}×"
    warm = Figure(
        "apply, per program, caches kept (warm)",
        per_item(warm_fit),
        per_item(loader_fit),
        "—",
        None,
    )
    if warm_fit and loader_fit and loader_fit[0] > 0:
        warm.bpfman += f" ({warm_fit[0] / loader_fit[0]:.1f}×)"
    version = "n/a" if results.version_s is None else f"{results.version_s:.3f} s"
    row = results.row(HEADLINE_N)
    return [
        slope,
        warm,
        Figure("`bpfman --version`", version, "—", "—", None),
        goal_figure(
            "`bpfman plan`, empty directory", results.empty_plan_s, GOAL_EMPTY_PLAN_S, "s", 3
        ),
        goal_figure(
            f"`bpfman plan`, {HEADLINE_N} applied, no changes, cold",
            None if row is None else row.plan_s,
            GOAL_COLD_PLAN_S,
            "s",
            3,
        ),
        goal_figure(
            f"`bpfman plan`, {HEADLINE_N} applied, unchanged since last plan",
            None if row is None else row.plan_warm_s,
            GOAL_WARM_PLAN_S,
            "s",
            3,
        ),
        goal_figure(
            f"peak RSS, `bpfman plan`, N = {HEADLINE_N}",
            None if row is None else megabytes(row.plan_peak_kib),
            GOAL_PEAK_MB,
            "MB",
            0,
        ),
        goal_figure(
            f"peak RSS, `bpfman apply`, N = {HEADLINE_N}",
            None if row is None else megabytes(row.apply_peak_kib),
            GOAL_PEAK_MB,
            "MB",
            0,
        ),
    ]


def print_table(header: list[str], lines: list[list[str]]) -> None:
    """A Markdown table, padded so that it also reads in a terminal."""
    widths = [max(len(c) for c in column) for column in zip(header, *lines, strict=True)]
    for i, cells in enumerate([header, *lines]):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def report(results: Results, headline: list[Figure]) -> None:
    rows = results.rows
    print()
    print("bpfman vs a C libbpf loader: N tracepoint programs loaded, attached and pinned")
    print()
    print_table(
        ["figure", "bpfman", "C loader", "goal", "met?"],
        [[f.name, f.bpfman, f.loader, f.goal, f.verdict] for f in headline],
    )
    print()
    header = (
        f"{'N':>5}  {'apply s':>8}  {'warm apply s':>12}  {'C loader s':>10}  {'ratio':>7}  "
        f"{'plan s':>7}  {'warm plan s':>11}  {'destroy s':>9}  {'apply MB':>8}  {'plan MB':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.n:>5}  {r.apply_s:>8.3f}  {r.apply_warm_s:>12.3f}  {r.loader_s:>10.3f}  "
            f"{r.ratio:>6.1f}x  {r.plan_s:>7.3f}  {r.plan_warm_s:>11.3f}  {r.destroy_s:>9.3f}  "
            f"{megabytes(r.apply_peak_kib):>8.0f}  {megabytes(r.plan_peak_kib):>7.0f}"
        )
    print("(apply and plan: cold, bpfman's caches removed first; warm: the caches kept)")
    print()
    sizes = ", ".join(str(r.n) for r in rows)
    print(f"Per-item slope and fixed cost (least squares over N = {sizes}):")
    for name, fit in slopes(rows).items():
        if fit is None:
            print(f"  {name:<20} n/a (needs at least two sizes)")
        else:
            print(f"  {name:<20} {fit[0] * 1000:8.3f} ms/item   intercept {fit[1]:7.3f} s")
    for note in results.notes:
        print(f"note: {note}")


def missed(headline: list[Figure]) -> list[str]:
    """What --check fails on: a figure beyond its goal, or one that was not measured."""
    lines = []
    for f in headline:
        if f.met is False:
            lines.append(
                f"{f.name}: {f.bpfman}" + (f" ({f.shown})" if f.shown else "") + f", goal {f.goal}"
            )
        elif f.met is None and f.goal != "—":
            lines.append(f"{f.name}: not measured, goal {f.goal}")
    return lines


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
        "--repeat", type=int, default=3, help="rounds per size; the fastest counts (default 3)"
    )
    p.add_argument("--bpfman", default=str(REPO / ".venv/bin/bpfman"), help="bpfman executable")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a figure is beyond its goal or was not measured",
    )
    args = p.parse_args(argv)
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        p.error(f"--sizes must be comma-separated integers, not {args.sizes!r}")
    if not args.sizes or min(args.sizes) < 1 or args.repeat < 1:
        p.error("sizes and --repeat must be positive")
    return args


def write_json(path: str, results: Results, headline: list[Figure]) -> None:
    doc = {
        "rows": [{**asdict(r), "ratio": r.ratio, "plan_ratio": r.plan_ratio} for r in results.rows],
        "bpfman_version_s": results.version_s,
        "bpfman_empty_plan_s": results.empty_plan_s,
        "slopes_ms_per_item": {
            name: None if fit is None else fit[0] * 1000
            for name, fit in slopes(results.rows).items()
        },
        "figures": [
            {
                "figure": f.name,
                "bpfman": f.bpfman,
                "c_loader": f.loader,
                "goal": f.goal,
                "met": f.met,
            }
            for f in headline
        ],
        "notes": results.notes,
    }
    Path(path).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = Results()
    try:
        preflight(args.bpfman)
        # Byte-compiled first: with PYTHONDONTWRITEBYTECODE set (CI images often set it), a
        # module edited since the last compile, or a dataclass's methods, would be compiled
        # again in every timed run.
        python = Path(args.bpfman).with_name("python")
        subprocess.run(
            [str(python if python.exists() else sys.executable), "-m", "reconciler.precompile"],
            cwd=REPO,
            check=False,
            capture_output=True,
        )
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
    except KeyboardInterrupt:
        print("bench: interrupted; everything it made is removed", file=sys.stderr)
        return 130
    headline = figures(results)
    report(results, headline)
    if args.json:
        write_json(args.json, results, headline)
    problems = missed(headline) if args.check else []
    if problems:
        sys.stdout.flush()  # the table first, then why the check failed
        print(f"\nbench --check: {len(problems)} figure(s) miss their goal:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        if results.row(HEADLINE_N) is None:
            print(f"  (the N = {HEADLINE_N} figures need {HEADLINE_N} in --sizes)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
