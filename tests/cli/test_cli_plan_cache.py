"""The remembered no-op plan (reconciler/plancache.py), through the ``bpfman`` executable against
the running kernel: a repeated plan answers exactly what a full plan would, and every kind of
change the plan depends on (a manifest, the bytecode, the host's labels file, the state file, a
pin removed or an XDP program detached behind bpfman's back) is seen at once. The changes behind
bpfman's back are made with rm and ip, as an operator would."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from reconciler import cli, commands, plancache
from reconciler.plancache import CACHE_DIR, PLAN_FILE
from tests import support
from tests.cli.conftest import EXAMPLES, tracepoint_manifest, xdp_manifest

pytestmark = pytest.mark.kernel

TP_O = EXAMPLES / "bytecode" / "tracepoint_counter.o"
XDP_O = EXAMPLES / "bytecode" / "xdp_counter.o"
NO_CHANGES = "No changes. Kernel state matches the manifests."


def entry(b) -> Path:
    return Path(b.state) / CACHE_DIR / PLAN_FILE


def full_plan(b, *args: str) -> str:
    """A plan computed from scratch: the remembered one removed first."""
    shutil.rmtree(Path(b.state) / CACHE_DIR, ignore_errors=True)
    return b.run("--no-color", "plan", *args).stdout


def test_a_repeated_plan_is_answered_as_a_full_plan_would_be(no_leaks, bpfman, mdir) -> None:
    mdir.write(
        "tp.yaml", tracepoint_manifest("tp", mdir.bytecode(TP_O), "syscalls/sys_enter_getppid")
    )
    bpfman.run("apply", mdir.source, "--auto-approve")

    first = bpfman.run("--no-color", "plan", mdir.source).stdout
    assert NO_CHANGES in first and entry(bpfman).is_file()
    assert bpfman.run("--no-color", "plan", mdir.source).stdout == first
    remembered = json.loads(bpfman.run("plan", mdir.source, "--json").stdout)
    shutil.rmtree(Path(bpfman.state) / CACHE_DIR)
    assert json.loads(bpfman.run("plan", mdir.source, "--json").stdout) == remembered
    # apply answers from it too, and still changes nothing (bpftool: the same program runs)
    before = support.prog_ids()
    out = bpfman.run("--no-color", "apply", mdir.source, "--auto-approve").stdout
    assert "0 added, 0 changed, 0 destroyed" in out
    assert support.prog_ids() == before


def test_a_hit_reads_no_manifest_and_plans_nothing(
    no_leaks, bpfman, mdir, monkeypatch, capsys
) -> None:
    mdir.write(
        "tp.yaml", tracepoint_manifest("tp", mdir.bytecode(TP_O), "syscalls/sys_enter_getppid")
    )
    bpfman.run("apply", mdir.source, "--auto-approve")
    bpfman.run("plan", mdir.source)  # remembered

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("planned again although nothing changed")

    monkeypatch.setattr(commands, "plan_for", refuse)
    monkeypatch.setattr(commands, "load_desired", refuse)
    argv = ["--bpffs-root", str(bpfman.root), "--state-dir", str(bpfman.state)]
    with pytest.raises(SystemExit) as done:
        cli.main([*argv, "--no-color", "plan", mdir.source])
    assert done.value.code == 0
    assert NO_CHANGES in capsys.readouterr().out


def test_every_input_of_the_plan_is_compared(no_leaks, bpfman, mdir, tmp_path) -> None:
    labels = tmp_path / "labels"
    labels.write_text("role: probe\n")
    manifest = tracepoint_manifest("tp", mdir.bytecode(TP_O), "syscalls/sys_enter_getppid")
    selected = manifest.replace(
        "spec:\n", "spec:\n  nodeselector:\n    matchLabels:\n      role: probe\n"
    )
    mdir.write("tp.yaml", selected)
    flags = ("--labels-file", str(labels))
    bpfman.run(*flags, "apply", mdir.source, "--auto-approve")

    def plan() -> str:
        out = bpfman.run(*flags, "--no-color", "plan", mdir.source).stdout
        assert out == full_plan(bpfman, *flags, mdir.source)  # never a stale answer
        bpfman.run(*flags, "plan", mdir.source)  # remember it again (when it is a no-op)
        return out

    assert NO_CHANGES in plan()
    assert NO_CHANGES in plan()

    # the host's labels file: the manifest no longer selects this host
    labels.write_text("role: other\n")
    assert "will be unloaded" in bpfman.run(*flags, "--no-color", "plan", mdir.source).stdout
    labels.write_text("role: probe\n")
    assert NO_CHANGES in plan()

    # the manifest
    mdir.write("tp.yaml", selected.replace("sys_enter_getppid", "sys_enter_getpid"))
    assert (
        "1 to add, 0 to change, 1 to destroy"
        in bpfman.run(*flags, "--no-color", "plan", mdir.source).stdout
    )
    mdir.write("tp.yaml", selected)
    assert NO_CHANGES in plan()

    # the bytecode, same path, other content
    bytecode = mdir.root / "bytecode" / TP_O.name
    original = bytecode.read_bytes()
    bytecode.write_bytes(original + b"\0" * 8)  # another digest, still the same ELF
    assert NO_CHANGES not in bpfman.run(*flags, "--no-color", "plan", mdir.source).stdout
    bytecode.write_bytes(original)
    assert NO_CHANGES in plan()

    # the state file
    state_file = Path(bpfman.state) / "state.json"
    saved = state_file.read_bytes()
    state_file.unlink()
    out = bpfman.run(*flags, "--no-color", "plan", mdir.source, expect=None).stdout
    assert NO_CHANGES not in out and "no record" in out
    state_file.write_bytes(saved)
    assert NO_CHANGES in plan()

    # a pin removed behind bpfman's back: the link goes, the program no longer runs
    (link,) = [p for p in Path(bpfman.root).rglob("link")]
    link.unlink()
    out = bpfman.run(*flags, "--no-color", "plan", mdir.source).stdout
    assert NO_CHANGES not in out and "TracepointProgram/tp" in out


@pytest.fixture
def in_ns(bpfman, veth):
    bpfman.netns = veth.ns_a
    return bpfman


def test_an_xdp_program_detached_with_ip_is_seen(no_leaks, in_ns, veth, mdir) -> None:
    b = in_ns
    mdir.write("xdp.yaml", xdp_manifest("fw", mdir.bytecode(XDP_O)))
    b.run("apply", mdir.source, "--auto-approve")
    assert NO_CHANGES in b.run("--no-color", "plan", mdir.source).stdout
    assert NO_CHANGES in b.run("--no-color", "plan", mdir.source).stdout  # remembered

    for mode in ("xdp", "xdpgeneric"):  # whichever mode the kernel chose
        support.sh("ip", "-n", veth.ns_a, "link", "set", "dev", "eth0", mode, "off")
    out = b.run("--no-color", "plan", mdir.source).stdout
    assert NO_CHANGES not in out and "detached outside bpfman" in out


def plan_changed_meanwhile(b, mdir, monkeypatch, capsys, change) -> str:
    """With the plan cache emptied, a plan (in this process) during which ``change()`` runs
    between the load and the measure; it must still say what it planned ("No changes"). Then
    the output of the next plan, which must not be answered from that entry."""
    shutil.rmtree(Path(b.state) / CACHE_DIR, ignore_errors=True)
    measure = plancache.PlanCache.measure

    def changed_meanwhile(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        change()
        return measure(self, *args, **kwargs)

    monkeypatch.setattr(plancache.PlanCache, "measure", changed_meanwhile)
    argv = ["--bpffs-root", str(b.root), "--state-dir", str(b.state)]
    with pytest.raises(SystemExit) as done:
        cli.main([*argv, "--no-color", "plan", mdir.source])
    assert done.value.code == 0
    assert NO_CHANGES in capsys.readouterr().out  # planned from the bytes read first
    monkeypatch.undo()
    return b.run("--no-color", "plan", mdir.source).stdout


def test_a_manifest_rewritten_while_planning_is_not_remembered_as_planned(
    no_leaks, bpfman, mdir, monkeypatch, capsys
) -> None:
    """The remembered plan carries the digests of the bytes it was made from: a manifest saved
    between the read and the remembering makes the next plan a full one, not "No changes"."""
    manifest = tracepoint_manifest("tp", mdir.bytecode(TP_O), "syscalls/sys_enter_getppid")
    mdir.write("tp.yaml", manifest)
    bpfman.run("apply", mdir.source, "--auto-approve")

    def edit() -> None:
        mdir.write("tp.yaml", manifest.replace("sys_enter_getppid", "sys_enter_getpid"))

    out = plan_changed_meanwhile(bpfman, mdir, monkeypatch, capsys, edit)
    assert "1 to add, 0 to change, 1 to destroy" in out


def test_bytecode_rewritten_while_planning_is_not_remembered_as_planned(
    no_leaks, bpfman, mdir, monkeypatch, capsys
) -> None:
    """Likewise for the ELF file: the plan is remembered with the digest expand took of it."""
    mdir.write(
        "tp.yaml", tracepoint_manifest("tp", mdir.bytecode(TP_O), "syscalls/sys_enter_getppid")
    )
    bpfman.run("apply", mdir.source, "--auto-approve")
    bytecode = mdir.root / "bytecode" / TP_O.name

    def rebuild() -> None:
        bytecode.write_bytes(bytecode.read_bytes() + b"\0" * 8)  # another digest, same ELF

    out = plan_changed_meanwhile(bpfman, mdir, monkeypatch, capsys, rebuild)
    assert NO_CHANGES not in out


def test_a_kustomized_resource_rewritten_while_planning_is_not_remembered_as_planned(
    no_leaks, bpfman, mdir, monkeypatch, capsys
) -> None:
    """And for the files a kustomization reads."""
    code = mdir.bytecode(TP_O).replace("../", "../../")
    manifest = tracepoint_manifest("tp", code, "syscalls/sys_enter_getppid")
    mdir.write("k/tp.yaml", manifest)
    mdir.write("k/kustomization.yaml", "resources: [tp.yaml]\n")
    bpfman.run("apply", mdir.source, "--auto-approve")

    def edit() -> None:
        mdir.write("k/tp.yaml", manifest.replace("sys_enter_getppid", "sys_enter_getpid"))

    out = plan_changed_meanwhile(bpfman, mdir, monkeypatch, capsys, edit)
    assert "1 to add, 0 to change, 1 to destroy" in out
