"""`bpfman graph` end to end: the plan `bpfman plan` computes on the running kernel, drawn as DOT
(rendered by Graphviz to prove it valid) and as Mermaid (checked for structure)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli.conftest import EXAMPLES, TEST_BPF, xdp_manifest
from tests.unit.test_plan_graph import check_mermaid

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz is not installed"),
]

SHARED = TEST_BPF / "shared_counter.o"
OWNER = "TracepointProgram/zz-owner[syscalls/sys_enter_getpid]"
USER = "TracepointProgram/aa-user[syscalls/sys_enter_getppid]"


def owner_manifest(bc: str, function: str = "count_getpid") -> str:
    return f"""apiVersion: bpfman.io/v1alpha1
kind: TracepointProgram
metadata:
  name: zz-owner
  labels: {{maps: counters}}
spec:
  bpffunctionname: {function}
  bytecode: {{path: {bc}}}
  names: [syscalls/sys_enter_getpid]
"""


def user_manifest(bc: str) -> str:
    return f"""apiVersion: bpfman.io/v1alpha1
kind: TracepointProgram
metadata: {{name: aa-user}}
spec:
  bpffunctionname: count_getppid
  bytecode: {{path: {bc}}}
  names: [syscalls/sys_enter_getppid]
  mapownerselector:
    matchLabels: {{maps: counters}}
"""


def render_svg(dot: str, out: Path) -> str:
    """Graphviz's verdict on the DOT: exit 0 and an SVG document."""
    p = subprocess.run(["dot", "-Tsvg", "-o", str(out)], input=dot, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    svg = out.read_text()
    assert "<svg" in svg and "</svg>" in svg
    return svg


def node_id(dot: str, address: str) -> str:
    (line,) = [x for x in dot.splitlines() if f"\\n{address}" in x and "[label=" in x]
    return line.split()[0]


def test_graph_draws_owner_before_user_then_the_forced_replacement(
    no_leaks, bpfman, mdir, tmp_path
):
    bc = mdir.bytecode(SHARED)
    mdir.write("owner.yaml", owner_manifest(bc))
    mdir.write("user.yaml", user_manifest(bc))

    # A fresh plan: the owner is loaded first although its name sorts last.
    dot = bpfman.run("graph", mdir.source).stdout
    o, u = node_id(dot, OWNER), node_id(dot, USER)
    assert f'{o} [label="1. load\\n{OWNER}"' in dot
    assert f'{u} [label="2. load\\n{USER}"' in dot
    assert f'{o} -> {u} [label="maps"' in dot
    svg = render_svg(dot, tmp_path / "fresh.svg")
    assert "1. load" in svg and "maps</text>" in svg
    # The same plan as `bpfman plan` shows it.
    plan = bpfman.run("plan", mdir.source).stdout
    assert "Plan: 2 to add, 0 to change, 0 to destroy." in plan
    assert "2 to add, 0 to change, 0 to destroy" in dot
    check_mermaid(bpfman.run("graph", mdir.source, "--format", "mermaid").stdout)

    bpfman.run("apply", mdir.source, "--auto-approve")
    dot = bpfman.run("graph", mdir.source).stdout
    assert "no change\\n" + OWNER in dot and "no change\\n" + USER in dot

    # A new function forces the owner's replacement, which forces its user's (new maps).
    mdir.write("owner.yaml", owner_manifest(bc, function="count_getppid"))
    dot = bpfman.run("graph", mdir.source).stdout
    o, u = node_id(dot, OWNER), node_id(dot, USER)
    assert f'{o} [label="1. replace\\n{OWNER}\\nforced by: function"' in dot
    assert f'{u} [label="2. replace\\n{USER}\\nforced by: its map owner\'s new maps"' in dot
    assert f'{o} -> {u} [label="forces replace"' in dot
    render_svg(dot, tmp_path / "replace.svg")
    mermaid = bpfman.run("graph", mdir.source, "--format", "mermaid").stdout
    check_mermaid(mermaid)
    assert f"  {o} ==>|forces replace| {u}" in mermaid

    # A saved plan is drawn as it is, from the file alone.
    saved = tmp_path / "plan.out"
    bpfman.run("plan", mdir.source, "--out", str(saved))
    assert bpfman.run("graph", str(saved)).stdout == dot
    bpfman.run("graph", str(saved), "--path", "x", expect=1)

    # Both going: the user is unloaded before its owner.
    mdir.remove("owner.yaml")
    mdir.remove("user.yaml")
    dot = bpfman.run("graph", mdir.source).stdout
    o, u = node_id(dot, OWNER), node_id(dot, USER)
    assert f'{u} [label="1. unload\\n{USER}' in dot and f'{o} [label="2. unload\\n{OWNER}' in dot
    assert f'{u} -> {o} [label="unload first"' in dot
    render_svg(dot, tmp_path / "unload.svg")
    bpfman.run("destroy", "--auto-approve")


def test_graph_draws_an_xdp_hook_in_run_order_even_when_the_plan_has_errors(
    no_leaks, bpfman, mdir, veth, tmp_path
):
    bpfman.netns = veth.ns_a  # the namespace's eth0 is the test's own veth
    bc = mdir.bytecode(EXAMPLES / "bytecode" / "xdp_counter.o")
    mdir.write("late.yaml", xdp_manifest("late", bc, priority=60))
    mdir.write("early.yaml", xdp_manifest("early", bc, priority=5))
    mdir.write("tie-b.yaml", xdp_manifest("tie-b", bc, priority=30))
    mdir.write("tie-a.yaml", xdp_manifest("tie-a", bc, priority=30))

    # Without freplace (this kernel) an interface takes one XDP program: the plan has an
    # error, and the graph is drawn anyway, with it, before exiting 1 as `plan` does.
    p = bpfman.run("graph", mdir.source, expect=1)
    assert "error(s), drawn in the graph; nothing can be applied" in p.stderr
    dot = p.stdout
    assert "errors [label=" in dot
    assert 'label="XDP on eth0"' in dot or 'label="XDP on eth0 (dispatcher' in dot
    ids = [node_id(dot, f"XdpProgram/{n}[eth0]") for n in ("early", "tie-a", "tie-b", "late")]
    for a, b in zip(ids, ids[1:], strict=False):
        assert f'{a} -> {b} [label="runs before"' in dot
    svg = render_svg(dot, tmp_path / "xdp.svg")
    assert "XDP on eth0" in svg and "runs before" in svg
    p = bpfman.run("graph", mdir.source, "--format", "mermaid", expect=1)
    check_mermaid(p.stdout)
    assert "  errors>" in p.stdout
    # Nothing was loaded: graph, like plan, only reads.
    assert not any(bpfman.root.rglob("prog"))
