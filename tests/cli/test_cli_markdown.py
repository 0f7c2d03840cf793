"""``plan --markdown`` and ``show PLANFILE``, through the ``bpfman`` executable against the kernel
(tracepoint programs, a private bpffs root and state dir)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from reconciler import cli, commands
from reconciler.plancache import CACHE_DIR
from tests.cli.conftest import EXAMPLES, Bpfman, tracepoint_manifest

pytestmark = pytest.mark.kernel

TP_O = EXAMPLES / "bytecode" / "tracepoint_counter.o"
A = "TracepointProgram/md-a[syscalls/sys_enter_getpid]"
B = "TracepointProgram/md-b[syscalls/sys_enter_getppid]"


def two(mdir) -> None:
    bc = mdir.bytecode(TP_O)
    mdir.write("a.yaml", tracepoint_manifest("md-a", bc, "syscalls/sys_enter_getpid"))
    mdir.write("b.yaml", tracepoint_manifest("md-b", bc, "syscalls/sys_enter_getppid"))


def escaped(address: str) -> str:
    return address.replace("[", "&#91;").replace("]", "&#93;").replace("_", "&#95;")


def summaries(md: str) -> list[str]:
    return re.findall(r"^<summary>(.*)</summary>$", md, re.M)


def test_plan_markdown_adds_then_replaces_and_destroys_with_a_detach_warning(
    no_leaks, bpfman, mdir
):
    two(mdir)
    md = bpfman.run("plan", mdir.source, "--markdown").stdout
    assert md.startswith("### bpfman plan: 2 to add, 0 to change, 0 to destroy\n")
    assert summaries(md) == [
        f"<code>+</code> <code>{escaped(a)}</code> will be loaded (<code>manifests/{f}</code>)"
        for a, f in ((A, "a.yaml:1"), (B, "b.yaml:1"))
    ]
    assert "detaches" not in md  # nothing runs yet
    # Each section holds the text plan's block for that change.
    text = bpfman.run("--no-color", "plan", mdir.source).stdout
    for block in re.findall(r"^```\n(.*?)\n```$", md, re.M | re.S):
        assert block in text

    bpfman.run("apply", mdir.source, "--auto-approve")
    # a's bytecode changes (a replacement), b's manifest goes (an unload): both detach.
    other = mdir.bytecode(TP_O, "copy.o")
    mdir.root.joinpath("bytecode", "copy.o").write_bytes(TP_O.read_bytes() + b"\0" * 8)
    mdir.write("a.yaml", tracepoint_manifest("md-a", other, "syscalls/sys_enter_getpid"))
    mdir.remove("b.yaml")
    md = bpfman.run("plan", mdir.source, "--markdown", "--detailed-exitcode", expect=2).stdout
    assert md.startswith("### bpfman plan: 1 to add, 0 to change, 2 to destroy\n")
    (warning,) = [line for line in md.splitlines() if "detaches" in line]
    assert "this plan detaches 2 attached programs" in warning
    assert f"<code>{escaped(A)}</code> (replaced)" in warning
    assert f"<code>{escaped(B)}</code> (unloaded)" in warning
    assert "~ bytecode_digest" in md and "# forces replacement" in md
    assert md.rstrip().endswith("**Plan: 1 to add, 0 to change, 2 to destroy.**")


def test_a_remembered_no_op_plan_prints_the_same_markdown(
    no_leaks, bpfman, mdir, monkeypatch, capsys
):
    two(mdir)
    bpfman.run("apply", mdir.source, "--auto-approve")
    shutil.rmtree(Path(bpfman.state) / CACHE_DIR, ignore_errors=True)
    full = bpfman.run("plan", mdir.source, "--markdown").stdout  # computed, then remembered
    assert full.startswith("### bpfman plan: no changes\n")
    assert "No changes. Kernel state matches the manifests." in full

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("planned again although nothing changed")

    monkeypatch.setattr(commands, "plan_for", refuse)
    monkeypatch.setattr(commands, "load_desired", refuse)
    argv = ["--bpffs-root", str(bpfman.root), "--state-dir", str(bpfman.state)]
    with pytest.raises(SystemExit) as done:
        cli.main([*argv, "plan", mdir.source, "--markdown"])
    assert done.value.code == 0
    assert capsys.readouterr().out == full


def test_show_renders_a_saved_plan_as_plan_printed_it(no_leaks, bpfman, mdir, tmp_path):
    two(mdir)
    saved = tmp_path / "p.plan"
    printed = bpfman.run("--no-color", "plan", mdir.source, "--out", str(saved)).stdout
    md = bpfman.run("plan", mdir.source, "--markdown").stdout
    document = json.loads(bpfman.run("plan", mdir.source, "--json").stdout)

    shown = bpfman.run("--no-color", "show", str(saved)).stdout
    assert printed.startswith(shown)  # plan adds only "Saved the plan to ..." after it
    assert "Saved the plan" in printed[len(shown) :]
    assert bpfman.run("show", str(saved), "--markdown").stdout == md
    assert json.loads(bpfman.run("show", str(saved), "--json").stdout) == document
    # show reads the file only: no bpffs root, no state dir, no kernel.
    nowhere = Bpfman(tmp_path / "no-root", tmp_path / "no-state")
    assert nowhere.run("show", str(saved), "--markdown").stdout == md
    assert not nowhere.root.exists() and not nowhere.state.exists()


def test_show_refuses_what_is_not_a_plan(bpfman, mdir, tmp_path):
    two(mdir)
    p = bpfman.run("show", str(mdir.root / "manifests" / "a.yaml"), expect=1)
    assert "a.yaml is a manifest file, not a plan saved by `bpfman plan --out FILE`" in p.stderr
    p = bpfman.run("show", str(tmp_path / "missing.plan"), "--json", expect=1)
    assert json.loads(p.stdout)["error"].startswith("cannot read saved plan")
    for name, data in (("binary.plan", bytes(range(256))), ("text.plan", b"not json {")):
        (tmp_path / name).write_bytes(data)
        p = bpfman.run("show", str(tmp_path / name), expect=1)
        assert f"{name} is not a bpfman plan file (it is not JSON)" in p.stderr, p.stderr
    p = bpfman.run("show", str(tmp_path / "x"), "--json", "--markdown", expect=2)
    assert "not allowed with argument" in p.stderr


def test_markdown_of_a_source_that_cannot_be_planned(bpfman, mdir):
    bc = mdir.bytecode(TP_O)
    mdir.write("bad.yaml", tracepoint_manifest("md-bad", bc, "syscalls/sys_enter_getpid", "nope"))
    p = bpfman.run("plan", mdir.source, "--markdown", expect=1)
    assert p.stdout.startswith("### bpfman plan: failed\n")
    assert "manifests/bad.yaml:6: spec.bpffunctionname:" in p.stdout
    assert p.stderr.startswith("Error: a manifest is invalid")


def test_names_from_the_source_cannot_break_the_comment(no_leaks, bpfman, mdir):
    """A manifest's file name reaches the plan (its origin): backticks and HTML in it stay
    text."""
    bc = mdir.bytecode(TP_O)
    name = "x```<summary><img src=x onerror=alert(1)>.yaml"  # no "/": it would be a directory
    mdir.write(name, tracepoint_manifest("md-a", bc, "syscalls/sys_enter_getpid"))
    md = bpfman.run("plan", mdir.source, "--markdown").stdout
    (summary,) = summaries(md)
    assert "&#96;&#96;&#96;&#60;summary&#62;&#60;img src=x onerror=alert&#40;1&#41;&#62;" in (
        summary
    )
    assert "\n````\n" in md  # the fence outgrows the backticks inside
    assert "# (from manifests/x```<summary><img" in md  # in the code block, as text
    prose = re.sub(r"^(`{3,})\n.*?\n\1$", "", md, flags=re.M | re.S)
    assert prose.count("<summary>") == 1 and "<img" not in prose and "```" not in prose
