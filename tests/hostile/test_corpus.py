"""The hostile-input corpus: every file in cases/ is a bad source that bpfman must refuse with ONE
clear error naming where (FILE:LINE or an address) and why, without a traceback and without
changing the kernel.

A case is one YAML file, copied as the only manifest of its own source directory (beside the
test objects in ``bytecode/``), with its expectations in leading comments:

    # mode: validate | plan | apply   validate: host-independent, `bpfman validate`;
    #                                  plan: `plan` and `apply --auto-approve` both refuse it
    #                                  (host facts and the verifier: plan knows them);
    #                                  apply: refused by `apply` only (what only changing
    #                                  the kernel can find out), as root
    # problems: N (why)                optional: more than one problem line, with the reason
    # setup: NAME                      optional: a function below that builds hostile files
    # expect: TEXT                     fragments the error message must contain (one or more)
    # source: TEXT                     optional: the SOURCE argument instead of the case's
    #                                  directory, e.g. {src}/fw.yaml or a git URL
    # args: TEXT                       optional: more arguments after the command (global
    #                                  options work there too), split on spaces, e.g.
    #                                  --config {case}/fifo or --path ../..
    # env: KEY=VALUE                   optional, repeatable: environment of the run
    # absent: TEXT                     optional, repeatable: must NOT appear in the output
    #                                  (e.g. a password in a URL)
    # caps: -CAP,...                   optional: run bpfman with these capabilities dropped from
    #                                  its bounding set (setpriv), e.g. -dac_override
    # teardown: NAME                   optional: a function that undoes what setup made outside
    #                                  the case directory (a network namespace)
    # In source, args and env, {case} is the case's directory and {src} its source directory.

Every run must also: exit within a time bound (no hang), stay under a memory bound (peak RSS of
the process), and print no raw control character (C0 but newline, DEL, C1, bidi controls).

Bad ELF files, large files and symlinks are built here rather than committed. Validate cases run
all at once in parallel (one process each, each its own source); plan and apply cases one by one.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reconciler import terminal
from tests import support
from tests.hostile import setups

CASES = Path(__file__).resolve().parent / "cases"
EXAMPLE_BYTECODE = support.REPO / "manifests" / "examples" / "bytecode"
OBJECTS = [
    EXAMPLE_BYTECODE / "xdp_counter.o",
    EXAMPLE_BYTECODE / "tcx_counter.o",
    EXAMPLE_BYTECODE / "tracepoint_counter.o",
    EXAMPLE_BYTECODE / "uprobe_counter.o",
    support.REPO / "tests" / "bpf" / "reject.o",
]
XDP_OBJECT = EXAMPLE_BYTECODE / "xdp_counter.o"
VALID_MANIFEST = f"""apiVersion: bpfman.io/v1alpha1
kind: XdpProgram
metadata: {{name: outside}}
spec:
  bpffunctionname: xdp_stats
  bytecode: {{path: {XDP_OBJECT}}}
  interfaceselector: {{interfaces: [eth0]}}
  priority: 5
"""


@dataclass
class Case:
    name: str
    mode: str
    setup: str | None = None
    expect: list[str] = field(default_factory=list)
    problems: int = 1  # problem lines under the one Error:, more only where the case says why
    source: str = "{src}"
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)
    caps: str | None = None
    teardown: str | None = None

    @classmethod
    def read(cls, path: Path) -> Case:
        case = cls(path.stem, "")
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.startswith("# "):
                break
            key, _, value = line[2:].partition(": ")
            if key == "mode":
                case.mode = value
            elif key == "setup":
                case.setup = value
            elif key == "expect":
                case.expect.append(value)
            elif key == "problems":
                case.problems = int(value.split()[0])
            elif key == "source":
                case.source = value
            elif key == "args":
                case.args += value.split()
            elif key == "caps":
                case.caps = value
            elif key == "teardown":
                case.teardown = value
            elif key == "absent":
                case.absent.append(value)
            elif key == "env":
                name, _, setting = value.partition("=")
                case.env[name] = setting
        assert case.mode in ("validate", "plan", "apply"), f"{path}: no valid '# mode:'"
        assert case.expect, f"{path}: no '# expect:'"
        return case


ALL = sorted((Case.read(p) for p in CASES.glob("*.yaml")), key=lambda c: c.name)


# --- setups: each gets the case's directory (src/ is the source, the rest is "outside") ---------


def _manifest(case_dir: Path) -> Path:
    return next((case_dir / "src").glob("*.yaml"))


def latin1(d: Path) -> None:
    with _manifest(d).open("ab") as f:
        f.write(b"kind: Xdp\xe9Program\n")


def huge_manifest(d: Path) -> None:
    line = b"# " + b"x" * 1021 + b"\n"
    with _manifest(d).open("ab") as f:
        f.write(line * (4 * 1024 + 8))  # just over 4 MiB of comments


def truncated(d: Path) -> None:
    (d / "src/bytecode/bad.o").write_bytes(XDP_OBJECT.read_bytes()[:200])


def host_object(d: Path) -> None:
    shutil.copyfile("/bin/true", d / "src/bytecode/bad.o")


def random_bytes(d: Path) -> None:
    (d / "src/bytecode/bad.o").write_bytes(random.Random(5).randbytes(4096))


def empty_file(d: Path) -> None:
    (d / "src/bytecode/bad.o").write_bytes(b"")


def patch_machine(d: Path) -> None:
    data = bytearray(XDP_OBJECT.read_bytes())
    data[18:20] = (183).to_bytes(2, "little")  # e_machine: AArch64
    (d / "src/bytecode/bad.o").write_bytes(bytes(data))


def huge_object(d: Path) -> None:
    with (d / "src/bytecode/bad.o").open("wb") as f:
        f.truncate(65 * 1024 * 1024)  # sparse: refused by size, never read


def _outside(d: Path) -> Path:
    out = d / "outside"
    out.mkdir(exist_ok=True)
    shutil.copyfile(XDP_OBJECT, out / "xdp_counter.o")
    return out


def sibling_object(d: Path) -> None:
    _outside(d)


def symlink_out(d: Path) -> None:
    (d / "src/bytecode/linked.o").symlink_to(_outside(d) / "xdp_counter.o")


def symlink_chain(d: Path) -> None:
    """first.o -> second.o (inside) -> the object outside: every link is followed."""
    (d / "src/bytecode/second.o").symlink_to(_outside(d) / "xdp_counter.o")
    (d / "src/bytecode/first.o").symlink_to("second.o")


def absolute_object(d: Path) -> None:
    m = _manifest(d)
    m.write_text(m.read_text().replace("ABSOLUTE", str(_outside(d) / "xdp_counter.o")))


def manifest_link_out(d: Path) -> None:
    (_outside(d) / "evil.yaml").write_text(VALID_MANIFEST)
    (d / "src/evil.yaml").symlink_to(d / "outside/evil.yaml")


def manifest_dirlink_out(d: Path) -> None:
    (_outside(d) / "m.yaml").write_text(VALID_MANIFEST)
    (d / "src/evil-dir").symlink_to(d / "outside", target_is_directory=True)


def bad_config(d: Path) -> None:
    (d / "config.yaml").write_text("bytecode_dirs: [relative/dir]\n")


def fifo_source(d: Path) -> None:
    """A SOURCE that is a named pipe: opening it for reading would block until a writer came."""
    os.mkfifo(d / "fw.yaml")


def git_repo(d: Path) -> None:
    """``repo/``: a git repository holding what ``src/`` holds, one commit."""
    shutil.copytree(d / "src", d / "repo")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(d / "repo")]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True, capture_output=True)
    subprocess.run([*git, "add", "."], check=True, capture_output=True)
    subprocess.run([*git, "commit", "-qm", "manifests"], check=True, capture_output=True)


def link_to_etc(d: Path) -> None:
    (d / "etc-link").symlink_to("/etc", target_is_directory=True)


def state_json_directory(d: Path) -> None:
    (d / "state" / "state.json").mkdir(parents=True)


def journal_fifo(d: Path) -> None:
    (d / "state").mkdir()
    os.mkfifo(d / "state" / "journal.jsonl")


def lock_directory(d: Path) -> None:
    (d / "state" / "lock").mkdir(parents=True)


def _target(d: Path, path: Path) -> None:
    """Point the case's uprobe ``target: TARGET`` at ``path`` (built outside the source)."""
    m = _manifest(d)
    m.write_text(m.read_text().replace("TARGET", str(path)))


def uprobe_directory_target(d: Path) -> None:
    (d / "bin").mkdir()
    _target(d, d / "bin")


def uprobe_fifo_target(d: Path) -> None:
    os.mkfifo(d / "fifo")  # opening it for reading would block until a writer comes
    _target(d, d / "fifo")


def uprobe_socket_target(d: Path) -> None:
    cwd = os.getcwd()
    os.chdir(d)  # a relative name: a socket's path must fit in 108 bytes
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind("sock")
    finally:
        os.chdir(cwd)
    _target(d, d / "sock")


def uprobe_text_target(d: Path) -> None:
    (d / "notes.txt").write_text("not a binary\n")
    _target(d, d / "notes.txt")


def uprobe_script_target(d: Path) -> None:
    (d / "tool").write_text("#!/bin/sh\nexec true\n")
    (d / "tool").chmod(0o755)
    _target(d, d / "tool")


def uprobe_truncated_target(d: Path) -> None:
    (d / "true").write_bytes(Path("/bin/true").read_bytes()[:3000])
    _target(d, d / "true")


def uprobe_32bit_target(d: Path) -> None:
    data = bytearray(Path("/bin/true").read_bytes())
    data[4] = 1  # EI_CLASS: ELFCLASS32
    (d / "true32").write_bytes(bytes(data))
    _target(d, d / "true32")


def build(case: Case, base: Path) -> Path:
    """The case's directory: ``src/`` (the source) and whatever its setup puts outside it."""
    d = base / case.name
    (d / "src" / "bytecode").mkdir(parents=True)
    for obj in OBJECTS:
        shutil.copyfile(obj, d / "src" / "bytecode" / obj.name)
    text = (CASES / f"{case.name}.yaml").read_text(encoding="utf-8", errors="surrogateescape")
    text = _expand(text, d)
    (d / "src" / f"{case.name}.yaml").write_text(text, errors="surrogateescape")
    if case.setup:
        _function(case.setup)(d)
    return d


def _function(name: str):
    """A setup or teardown: in this file, or in setups.py."""
    return globals().get(name) or getattr(setups, name)


def tear_down(case: Case, d: Path) -> None:
    if case.teardown:
        _function(case.teardown)(d)
    setups.remove_deep(d)  # trees too deep or long for shutil.rmtree


# Every answer must come within this time and memory (a hang or an unbounded read fails here).
TIME_BOUND = 60.0
RSS_BOUND_MB = 300
# What must never reach a terminal from bpfman: C0 controls but newline, DEL, C1, bidi controls.
RAW_CONTROL = re.compile(
    "[\\x00-\\x09\\x0b-\\x1f\\x7f-\\x9f\\u061c\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069]"
)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    max_rss_mb: float
    case_dir: Path


def _expand(text: str, d: Path) -> str:
    return text.replace("{case}", str(d)).replace("{src}", str(d / "src"))


def run(
    d: Path, command: str, *args: str, case: Case | None = None, root: Path | None = None
) -> Run:
    """The real executable, with a private bpffs root, state dir and host config, as ``case``
    asks (its source, arguments and environment); bounded in time and memory."""
    root = root or Path("/sys/fs/bpf") / f"bpfman-hostile-{d.name}"
    cmd = [support.BPFMAN, "--bpffs-root", str(root), "--state-dir", str(d / "state")]
    cmd += ["--config", str(d / "config.yaml"), "--no-color"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPFMAN_")}
    cmd += [command, *args]
    if case is not None and case.caps:
        cmd = ["setpriv", "--bounding-set", case.caps, "--", *cmd]
    if case is not None:
        cmd += [_expand(a, d) for a in case.args]
        env.update({k: _expand(v, d) for k, v in case.env.items()})
    if case is not None and command in ("validate", "plan", "apply"):
        source = _expand(case.source, d)
        cmd += ["--", source] if source.startswith("-") else [source]  # an option-like SOURCE
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + TIME_BOUND
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                p.kill()
                p.wait()
                raise AssertionError(f"bpfman {' '.join(cmd[7:])} did not answer in {TIME_BOUND}s")
            time.sleep(0.01)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    return Run(p.returncode, stdout, stderr, usage.ru_maxrss / 1024, d)


def assert_one_clear_error(case: Case, p: Run, what: str) -> None:
    shown = f"bpfman {what} ({case.name}): exit {p.returncode}\n{p.stdout}\nstderr:\n{p.stderr}"
    assert p.returncode == 1, shown
    assert "Traceback" not in p.stderr, shown
    assert p.stderr.count("Error:") == 1, shown
    # A plan's own errors are part of the plan shown on stdout (stderr counts them): then that
    # one error is the message, and stdout must hold exactly one.
    plan_errors = p.stdout.count("Error:")
    assert plan_errors == 0 or (plan_errors == 1 and "has 1 error(s)" in p.stderr), shown
    output = p.stdout + p.stderr
    if case.problems == 1:
        assert "(1 problem)" in p.stderr or "problem" not in p.stderr, shown
    else:
        assert f"({case.problems} problems)" in p.stderr, shown
    for fragment in case.expect:
        fragment = _expand(fragment, p.case_dir)
        assert fragment in output, f"missing {fragment!r}\n{shown}"
    for fragment in case.absent:
        assert fragment not in output, f"{fragment!r} must not be shown\n{shown}"
    raw = RAW_CONTROL.search(output)
    assert raw is None, f"raw control character {raw.group()!r} in the output\n{shown}"
    assert p.max_rss_mb <= RSS_BOUND_MB, f"peak RSS {p.max_rss_mb:.0f} MB\n{shown}"


def assert_json_error(case: Case, p: Run, what: str) -> None:
    """With --json the answer is the same, and stdout stays one JSON document with the problems
    as diagnostics (file, line, field, message)."""
    shown = f"bpfman {what} --json ({case.name}): exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    assert p.returncode == 1, shown
    assert "Traceback" not in p.stderr, shown
    assert p.stderr.count("Error:") == 1, shown
    doc = json.loads(p.stdout)
    assert doc["format_version"] == "1.0", shown
    diagnostics = doc["diagnostics"]
    assert diagnostics and all(d["message"] and d["severity"] == "error" for d in diagnostics)
    if what == "validate":
        assert doc["valid"] is False, shown
    text = json.dumps(doc, ensure_ascii=False) + p.stderr
    # Compared as a terminal would show them (bpfman escapes control characters when printing).
    decoded = p.stderr + terminal.escape(
        "\n".join(
            f"{d['file']}:{d['line']}: {d['field'] + ': ' if d['field'] else ''}{d['message']}"
            for d in diagnostics
        )
    )
    for fragment in case.expect:
        fragment = _expand(fragment, p.case_dir)
        assert fragment in decoded or fragment in text, f"missing {fragment!r}\n{shown}"
    for fragment in case.absent:
        assert fragment not in p.stdout + p.stderr, f"{fragment!r} must not be shown\n{shown}"
    raw = RAW_CONTROL.search(p.stdout + p.stderr)
    assert raw is None, f"raw control character {raw.group()!r} in the output\n{shown}"
    assert p.max_rss_mb <= RSS_BOUND_MB, f"peak RSS {p.max_rss_mb:.0f} MB\n{shown}"


def pins_under(root: Path) -> list[str]:
    if not root.exists():
        return []
    return [str(Path(dp) / f) for dp, _, files in os.walk(root) for f in files]


def kernel_ids() -> tuple[set[int], set[int], set[int]]:
    return support.prog_ids(), support.link_ids(), support.map_ids()


def assert_kernel_unchanged(before: tuple[set[int], set[int], set[int]]) -> None:
    """No new programs, links or maps (freed ones may take an RCU grace period to go)."""
    support.wait_gone(support.link_ids, before[1], "links")
    support.wait_gone(support.prog_ids, before[0], "programs")
    support.wait_gone(support.map_ids, before[2], "maps")


# --- the validate cases: all at once ------------------------------------------------------------

VALIDATE = [c for c in ALL if c.mode == "validate"]
HOST = [c for c in ALL if c.mode != "validate"]


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("hostile")
    dirs = {c.name: build(c, base) for c in VALIDATE}
    before = kernel_ids() if support.is_root() else None
    runs = [(c, flags) for c in VALIDATE for flags in ((), ("--json",))]
    try:
        with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 4)) as pool:
            done = pool.map(lambda r: run(dirs[r[0].name], "validate", *r[1], case=r[0]), runs)
            results: dict[str, dict[bool, Run]] = {}
            for (c, flags), result in zip(runs, done, strict=True):
                results.setdefault(c.name, {})[bool(flags)] = result
    finally:
        for c in VALIDATE:
            tear_down(c, dirs[c.name])
    if before is not None:
        assert_kernel_unchanged(before)
    return results


def test_the_corpus_is_large_enough() -> None:
    assert len(ALL) >= 40
    assert len(VALIDATE) > len(HOST)


@pytest.mark.parametrize("case", VALIDATE, ids=lambda c: c.name)
def test_validate_refuses(case: Case, validated) -> None:
    assert_one_clear_error(case, validated[case.name][False], "validate")
    assert_json_error(case, validated[case.name][True], "validate")


# --- the host cases: plan and apply, as root ----------------------------------------------------


@pytest.mark.kernel
@pytest.mark.parametrize("case", HOST, ids=lambda c: c.name)
def test_plan_and_apply_refuse(case: Case, tmp_path: Path) -> None:
    d = build(case, tmp_path)
    root = Path("/sys/fs/bpf") / support.unique("bpfman-hostile-")
    before = kernel_ids()
    try:
        if case.mode == "plan":
            assert_one_clear_error(case, run(d, "plan", case=case, root=root), "plan")
            assert_json_error(case, run(d, "plan", "--json", case=case, root=root), "plan")
        p = run(d, "apply", "--auto-approve", case=case, root=root)
        assert_one_clear_error(case, p, "apply")
        p = run(d, "apply", "--auto-approve", "--json", case=case, root=root)
        assert_json_error(case, p, "apply")
        assert_kernel_unchanged(before)
        assert pins_under(root) == []
    finally:
        run(d, "destroy", "--auto-approve", root=root)
        support.remove_tree(root)
        tear_down(case, d)
