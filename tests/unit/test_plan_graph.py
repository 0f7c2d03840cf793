"""`bpfman graph`: a plan value drawn as Graphviz DOT and as Mermaid (reconciler/plan/graph.py)."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess

import pytest

from reconciler.address import Address
from reconciler.cli import build_parser
from reconciler.kernel.types import TcHook, TcxLinkView
from reconciler.plan import build_plan
from reconciler.plan.graph import (
    EdgeKind,
    dot_string,
    mermaid_text,
    plan_graph,
    to_dot,
    to_mermaid,
)
from reconciler.plan.value import Action, Plan
from reconciler.spec.model import DesiredAttachment
from tests.unit.factories import installed, record, tcx, tracepoint, xdp

OWNER = tracepoint("owner", "syscalls/sys_enter_getpid")


def user_of(owner: DesiredAttachment, name: str = "user") -> DesiredAttachment:
    d = tracepoint(name, "syscalls/sys_enter_getppid")
    attrs = {**d.attributes, "map_owner": owner.address.resource}
    return dataclasses.replace(d, depends_on=(owner.address,), attributes=attrs)


def node_of(plan: Plan, address: Address) -> str:
    (n,) = [n for n in plan_graph(plan).nodes if n.change.address == address]
    return n.id


def edges(plan: Plan) -> set[tuple[str, str, EdgeKind]]:
    return {(e.src, e.dst, e.kind) for e in plan_graph(plan).edges}


def test_a_map_owner_is_loaded_before_its_user():
    user = user_of(OWNER, "aa-user")  # sorts first by name; the owner still goes first
    plan = build_plan([user, OWNER], [], {})
    o, u = node_of(plan, OWNER.address), node_of(plan, user.address)
    assert edges(plan) == {(o, u, EdgeKind.MAPS)}
    dot = to_dot(plan)
    assert f'{o} [label="1. load\\nTracepointProgram/owner[syscalls/sys_enter_getpid]"' in dot
    assert f'{u} [label="2. load\\nTracepointProgram/aa-user[syscalls/sys_enter_getppid]"' in dot
    assert f'{o} -> {u} [label="maps"' in dot
    assert f"  {o} -->|maps| {u}" in to_mermaid(plan)


def test_a_replaced_owner_forces_its_users_replacement():
    user = user_of(OWNER)
    plan = build_plan(
        [OWNER, user],
        [installed(OWNER), installed(user)],
        {
            str(OWNER.address): record(OWNER, bytecode_digest="sha256:old"),
            str(user.address): record(user),
        },
    )
    assert [c.action for c in plan.changes] == [Action.REPLACE, Action.REPLACE]
    o, u = node_of(plan, OWNER.address), node_of(plan, user.address)
    assert edges(plan) == {(o, u, EdgeKind.FORCES)}
    dot = to_dot(plan)
    assert "1. replace\\nTracepointProgram/owner[syscalls/sys_enter_getpid]\\n" in dot
    assert "forced by: bytecode_digest" in dot
    assert "forced by: its map owner's new maps" in dot
    assert f'{o} -> {u} [label="forces replace", color="#8e248e", style="bold"]' in dot
    mermaid = to_mermaid(plan)
    assert f"  {o} ==>|forces replace| {u}" in mermaid
    assert f"  class {o},{u} replace" in mermaid


def test_an_unchanged_owner_only_orders_a_new_user():
    user = user_of(OWNER)
    plan = build_plan([OWNER, user], [installed(OWNER)], {str(OWNER.address): record(OWNER)})
    o, u = node_of(plan, OWNER.address), node_of(plan, user.address)
    assert edges(plan) == {(o, u, EdgeKind.MAPS)}
    dot = to_dot(plan)
    assert f'{o} [label="no change\\nTracepointProgram/owner' in dot  # no step number
    assert f'{u} [label="1. load\\n' in dot


def test_users_are_unloaded_before_their_owner():
    user = user_of(OWNER)
    recs = {str(OWNER.address): record(OWNER), str(user.address): record(user)}
    recs[str(user.address)].extra["depends_on"] = [str(OWNER.address)]
    plan = build_plan([], [installed(OWNER), installed(user)], recs)
    assert [c.address for c in plan.changes] == [user.address, OWNER.address]
    o, u = node_of(plan, OWNER.address), node_of(plan, user.address)
    assert edges(plan) == {(u, o, EdgeKind.UNLOAD_FIRST)}
    dot = to_dot(plan)
    assert f'{u} [label="1. unload\\nTracepointProgram/user' in dot
    assert f'{o} [label="2. unload\\nTracepointProgram/owner' in dot
    assert f"  {u} -->|unload first| {o}" in to_mermaid(plan)


def test_a_dispatcher_hook_is_one_cluster_in_run_order_and_one_step():
    # Run order: priority, then name (as hookgroups.desired_on_hooks and apply give it).
    late, early, tie_b, tie_a = (
        xdp("late", priority=60),
        xdp("early", priority=5),
        *(xdp(n, priority=30) for n in ("tie-b", "tie-a")),
    )
    tp = tracepoint("tp")
    plan = build_plan([late, early, tie_b, tie_a, tp], [], {}, dispatching=True)
    g = plan_graph(plan)
    (cluster,) = g.clusters
    ids = {n.change.address.name: n.id for n in g.nodes}
    assert cluster.members == tuple(ids[n] for n in ("early", "tie-a", "tie-b", "late"))
    runs = [(e.src, e.dst) for e in g.edges if e.kind is EdgeKind.RUNS]
    assert runs == [
        (ids["early"], ids["tie-a"]),
        (ids["tie-a"], ids["tie-b"]),
        (ids["tie-b"], ids["late"]),
    ]
    # The hook's four loads are one atomic swap: one step number.
    steps = {n.change.address.name: n.step for n in g.nodes}
    assert len({steps[n] for n in ("late", "early", "tie-a", "tie-b")}) == 1
    assert steps == {"tp": 1, "early": 2, "tie-a": 2, "tie-b": 2, "late": 2}
    label = f"XDP on eth0 (dispatcher, one swap at step {steps['early']})"
    assert cluster.label == label
    dot = to_dot(plan)
    assert "  subgraph cluster_0 {" in dot and f'label="{label}"' in dot
    assert f'{ids["early"]} -> {ids["tie-a"]} [label="runs before"' in dot
    mermaid = to_mermaid(plan)
    assert f'  subgraph h0 ["{mermaid_text(label)}"]' in mermaid
    assert f"  {ids['tie-b']} -.->|runs before| {ids['late']}" in mermaid


def test_tcx_and_tc_hooks_are_clusters_per_interface_and_direction():
    a, b = tcx("a", priority=20), tcx("b", priority=10)
    out = tcx("out", direction="egress")
    other = tcx("c", iface="eth1")
    plan = build_plan([a, b, out, other], [], {})
    labels = sorted(c.label for c in plan_graph(plan).clusters)
    assert labels == ["TCX egress on eth0", "TCX ingress on eth0", "TCX ingress on eth1"]
    (ingress,) = [c for c in plan_graph(plan).clusters if c.label == "TCX ingress on eth0"]
    assert ingress.members == (node_of(plan, b.address), node_of(plan, a.address))
    # A TC program's point is its hook: a dispatcher cluster when dispatching.
    tc = dataclasses.replace(xdp("tc-prog"), point=TcHook("eth0", "ingress"))
    tc = dataclasses.replace(tc, address=Address("TcProgram", "tc-prog", "eth0"))
    (cluster,) = plan_graph(build_plan([tc], [], {}, dispatching=True)).clusters
    assert cluster.label == "TC ingress on eth0 (dispatcher, one swap at step 1)"


def test_an_unload_stays_on_its_hook_but_out_of_the_run_order():
    keep, gone = tcx("keep"), tcx("gone", priority=1)
    inst = dataclasses.replace(
        installed(gone), attach=TcxLinkView(3, "tcx_ingress", "eth0", netns="/run/netns/x")
    )
    keep = dataclasses.replace(keep, point=dataclasses.replace(keep.point, netns="/run/netns/x"))
    plan = build_plan([keep], [inst], {str(gone.address): record(gone)})
    (cluster,) = plan_graph(plan).clusters
    assert cluster.label == "TCX ingress on /run/netns/x:eth0"
    assert cluster.members == (node_of(plan, keep.address), node_of(plan, gone.address))
    assert not [e for e in plan_graph(plan).edges if e.kind is EdgeKind.RUNS]


def test_a_plan_with_errors_is_drawn_with_them():
    plan = build_plan([xdp("a"), xdp("b")], [], {}, errors=["two XDP programs want eth0"])
    dot = to_dot(plan)
    assert "errors [label=" in dot and "- two XDP programs want eth0\\l" in dot
    mermaid = to_mermaid(plan)
    assert "  errors>" in mermaid and "two XDP programs want eth0" in mermaid
    assert "  class errors error" in mermaid


def test_title_names_source_revision_and_counts():
    plan = build_plan([xdp("a")], [], {}, source="git@host:ops/ebpf.git", revision="abc123")
    g = plan_graph(plan)
    assert (
        g.title
        == "bpfman plan of git@host:ops/ebpf.git @ abc123: 1 to add, 0 to change, 0 to destroy"
    )


# --- escaping ---------------------------------------------------------------------------------

HOSTILE = 'x"];\n  evil [label="pwned"]; a -> b; //\\N\\l & &lt; <b>`%%|#59;\r\x00\u2028'


def hostile_plan() -> Plan:
    d = tracepoint("t")
    d = dataclasses.replace(d, address=Address("UprobeProgram", HOSTILE, HOSTILE))
    owner = dataclasses.replace(OWNER, address=Address("TracepointProgram", "o", HOSTILE))
    d = dataclasses.replace(d, depends_on=(owner.address,))
    return build_plan([owner, d], [], {}, source=HOSTILE, revision=HOSTILE, errors=[HOSTILE])


def test_dot_string_leaves_nothing_to_interpret():
    s = dot_string(HOSTILE)
    assert s.startswith('"') and s.endswith('"')
    inner = s[1:-1]
    # Every quote is escaped, every backslash doubled, no raw control character is left.
    assert re.search(r'(?<!\\)"', inner.replace("\\\\", "")) is None
    assert not any(ord(ch) < 0x20 for ch in inner) and "\u2028" not in inner
    assert "\\\\N" in inner and "\\\\l" in inner and "&amp;lt;" in inner
    assert "\\\\x0a" in inner and "\\\\x00" in inner


def test_hostile_names_cannot_add_dot_statements_or_attributes():
    dot = to_dot(hostile_plan())
    lines = dot.splitlines()
    # The only statements are ours: every line is one of the shapes the renderer writes.
    shapes = [
        r'digraph "bpfman-plan" \{',
        r"  label=\"(?:[^\"\\]|\\.)*\"; labelloc=t; rankdir=LR; fontname=Helvetica;",
        r"  (node|edge) \[.*\];",
        r"  subgraph cluster_\d+ \{",
        r'    label="(?:[^"\\]|\\.)*"; style="rounded,dashed"; color="#607d8b";',
        r'\s+n\d+ \[label="(?:[^"\\]|\\.)*", fillcolor="#[0-9a-f]{6}", color="#[0-9a-f]{6}"'
        r'(, fontcolor="#[0-9a-f]{6}")?\];',
        r'  n\d+ -> n\d+ \[label="[a-z ]+", color="#[0-9a-f]{6}"(, style="[a-z]+")?\];',
        r'  errors \[label="(?:[^"\\]|\\.)*", shape=note, style=filled, fillcolor="#f8d7da", '
        r'color="#b02a37"\];',
        r"\s*\}",
    ]
    for line in lines:
        assert any(re.fullmatch(p, line) for p in shapes), line
    assert "pwned" in dot  # shown, as text
    # One edge statement per edge of the graph: the owner's maps, nothing injected.
    assert len([x for x in lines if re.match(r"  n\d+ -> n\d+ ", x)]) == 1


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz is not installed")
def test_hostile_dot_renders_as_text():
    p = subprocess.run(
        ["dot", "-Tsvg"], input=to_dot(hostile_plan()), capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    # Two managed nodes plus the errors note: the injected "evil" node does not exist.
    assert len(re.findall(r'<g id="node\d+" class="node">', p.stdout)) == 3
    assert "<title>evil</title>" not in p.stdout
    assert "&amp;lt; &lt;b&gt;" in p.stdout  # "&lt; <b>" as written


def test_mermaid_text_is_entities_for_everything_but_a_safe_set():
    s = mermaid_text(HOSTILE)
    assert re.fullmatch(r"[A-Za-z0-9 ._\-/:,=+@~\[\]()#;']*", s)
    assert "#34;" in s and "#10;" in s and "#96;" in s and "#37;#37;" in s and "#35;59#59;" in s
    assert mermaid_text("XdpProgram/a-b[eth0]") == "XdpProgram/a-b[eth0]"


def check_mermaid(text: str) -> None:
    """A structural check of the flowcharts `to_mermaid` writes (no Mermaid parser offline):
    every line is one of our statement shapes, subgraphs are closed, every node an edge or a
    class names is declared, and labels are quoted strings without a quote inside."""
    label = r'"[^"]*"'
    declared: set[str] = set()
    used: set[str] = set()
    depth = 0
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    for line in lines[1:]:
        if m := re.fullmatch(r"  %% [^\n]*", line):
            continue
        if m := re.fullmatch(rf"  subgraph (h\d+) \[{label}\]", line):
            depth += 1
        elif line == "    direction LR":
            assert depth == 1
        elif line == "  end":
            depth -= 1
            assert depth == 0
        elif m := re.fullmatch(rf"\s+(n\d+)\[{label}\]", line):
            declared.add(m[1])
        elif m := re.fullmatch(rf"  errors>{label}\]", line):
            declared.add("errors")
        elif m := re.fullmatch(r"  (n\d+) (-->|==>|-\.->)\|[a-z ]+\| (n\d+)", line):
            used |= {m[1], m[3]}
        elif m := re.fullmatch(r"  classDef [a-z]+ fill:#[0-9a-f]{6},stroke:#[0-9a-f]{6}", line):
            pass
        elif m := re.fullmatch(r"  class ([a-z0-9,]+) [a-z]+", line):
            used |= set(m[1].split(","))
        else:
            raise AssertionError(f"not a statement to_mermaid writes: {line!r}")
    assert depth == 0
    assert used <= declared, used - declared


def test_mermaid_structure_of_plans_with_hooks_owners_and_errors():
    user = user_of(OWNER)
    plans = [
        build_plan(
            [xdp("a"), xdp("b", priority=1), tcx("t"), OWNER, user], [], {}, dispatching=True
        ),
        build_plan([], [installed(OWNER)], {str(OWNER.address): record(OWNER)}),
        build_plan([xdp("a")], [], {}, errors=["e1", "e2"]),
        hostile_plan(),
    ]
    for plan in plans:
        check_mermaid(to_mermaid(plan))


def test_hostile_names_stay_inside_mermaid_labels():
    text = to_mermaid(hostile_plan())
    check_mermaid(text)
    assert "evil" in text and '"pwned"' not in text and "\x00" not in text


def test_graph_takes_plan_source_arguments():
    args = build_parser().parse_args(
        ["graph", "src", "--path", "sub", "--ref", "v1", "--format", "mermaid", "--target", "X/y"]
    )
    assert (args.command, args.source, args.path, args.ref) == ("graph", "src", "sub", "v1")
    assert args.format == "mermaid" and args.target == ["X/y"]
    assert build_parser().parse_args(["graph"]).format == "dot"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["graph", "--format", "svg"])
