"""Draw a Plan as a graph: the order apply follows, for `bpfman graph` (Graphviz DOT or Mermaid).

Nodes are the plan's attachments with their action and their step in the plan's order (all the
changes of one dispatcher hook are one step: one atomic swap, as apply carries them out). Edges
say "before": a map owner is (re)loaded before the programs that use its maps, and those are
unloaded before it; an owner loaded again forces its users' replacement (``diff._cascade``).
Hooks (an interface's XDP or TC dispatcher, a TCX hook) are clusters, their programs chained in
run order: priority, then name (``hookgroups.desired_on_hooks``, ``apply.tcx.TcxOrder``).

Pure functions of the plan, like ``render``: nothing here computes a plan or touches the kernel.
Every text that comes from manifests, paths or the kernel is escaped for the output language
(``dot_string``, ``mermaid_text``), so a name cannot end a string, add attributes or statements.
"""

from __future__ import annotations

import enum
import itertools
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass

from reconciler.kernel.types import (
    Hook,
    Installed,
    TcDirectView,
    TcDispatcherView,
    TcHook,
    TcxLinkView,
    TcxPoint,
    XdpDispatcherView,
    XdpHook,
    XdpPoint,
    XdpView,
)
from reconciler.plan.hookgroups import hook_label
from reconciler.plan.value import Action, Plan, ResourceChange

VERB = {
    Action.CREATE: "load",
    Action.UPDATE: "change",
    Action.REPLACE: "replace",
    Action.DELETE: "unload",
    Action.NOOP: "no change",
}
# Fill and border of each action's node (the plan's colors: green, yellow, magenta, red).
_COLORS = {
    Action.CREATE: ("#d9f2d9", "#2e7d32"),
    Action.UPDATE: ("#fff4cc", "#b38f00"),
    Action.REPLACE: ("#f3daf3", "#8e248e"),
    Action.DELETE: ("#f8d7da", "#b02a37"),
    Action.NOOP: ("#f2f2f2", "#9e9e9e"),
}
_CLASS = {
    Action.CREATE: "load",
    Action.UPDATE: "change",
    Action.REPLACE: "replace",
    Action.DELETE: "unload",
    Action.NOOP: "noop",
}


_WRAP = 48  # a reason's line length in a node


class EdgeKind(enum.Enum):
    MAPS = "maps"  # the map owner is loaded before the program that uses its maps
    UNLOAD_FIRST = "unload first"  # a user of an owner's maps is unloaded before the owner
    FORCES = "forces replace"  # the owner loaded again: its user is reloaded, with the new maps
    RUNS = "runs before"  # run order on a hook (not apply's order)


@dataclass(frozen=True)
class Node:
    id: str
    change: ResourceChange
    step: int | None  # place in apply's order; None for a no-op
    lines: tuple[str, ...]  # its label: step and action, address, why (wrapped)


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    kind: EdgeKind


@dataclass(frozen=True)
class Cluster:
    id: str
    label: str
    members: tuple[str, ...]  # node ids: those that stay in run order, then those that go


@dataclass(frozen=True)
class PlanGraph:
    title: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    clusters: tuple[Cluster, ...]
    errors: tuple[str, ...]


@dataclass(frozen=True, order=True)
class _HookKey:
    """One attach hook, whatever attaches there: XDP (dispatcher or a single program), TC
    (dispatcher or direct) or TCX; the XDP mode is not part of it (one hook per interface)."""

    type: str  # xdp | tc | tcx
    netns: str
    ifname: str
    direction: str = ""

    @property
    def label(self) -> str:
        where = f"{self.netns}:" if self.netns else ""
        if self.type == "xdp":
            return f"XDP on {where}{self.ifname}"
        return f"{self.type.upper()} {self.direction} on {where}{self.ifname}"


def _key_of_hook(hook: Hook) -> _HookKey:
    if isinstance(hook, XdpHook):
        return _HookKey("xdp", hook.netns or "", hook.ifname)
    return _HookKey("tc", hook.netns or "", hook.ifname, hook.direction)


def _key_of_installed(inst: Installed | None) -> _HookKey | None:
    """Where an unload without a manifest ran, as the kernel said when planned."""
    view = inst.attach if inst is not None else None
    if isinstance(view, XdpView | XdpDispatcherView):
        return _HookKey("xdp", view.netns or "", view.ifname)
    if isinstance(view, TcDirectView | TcDispatcherView):
        return _HookKey("tc", view.netns or "", view.ifname, view.direction)
    if isinstance(view, TcxLinkView) and view.ifname:
        direction = view.attach_type.removeprefix("tcx_")
        return _HookKey("tcx", view.netns or "", view.ifname, direction)
    return None


def _hook_key(c: ResourceChange) -> _HookKey | None:
    if c.hook is not None:
        return _key_of_hook(c.hook)
    point = c.desired.point if c.desired is not None else None
    if isinstance(point, XdpPoint):
        return _HookKey("xdp", point.netns or "", point.ifname)
    if isinstance(point, TcHook):
        return _key_of_hook(point)
    if isinstance(point, TcxPoint):
        return _HookKey("tcx", point.netns or "", point.ifname, point.direction)
    if c.desired is None:
        return _key_of_installed(c.installed)
    return None


def _steps(plan: Plan) -> dict[int, int]:
    """Step number (from 1) by index in ``plan.changes``, as apply numbers its steps: each
    change alone, except that a dispatcher hook's changes are one step, at its first change."""
    out: dict[int, int] = {}
    hook_step: dict[Hook, int] = {}
    step = 0
    for i, c in enumerate(plan.changes):
        if c.action is Action.NOOP:
            continue
        if c.hook is None:
            step += 1
            out[i] = step
        else:
            if c.hook not in hook_step:
                step += 1
                hook_step[c.hook] = step
            out[i] = hook_step[c.hook]
    return out


def _lines(c: ResourceChange, step: int | None, forced_by_owner: bool) -> tuple[str, ...]:
    head = VERB[c.action] if step is None else f"{step}. {VERB[c.action]}"
    lines = [head, str(c.address)]
    if c.replace_paths:
        lines += textwrap.wrap("forced by: " + ", ".join(c.replace_paths), _WRAP)
    elif forced_by_owner:
        lines.append("forced by: its map owner's new maps")
    elif c.reason and c.action is not Action.NOOP:
        lines += textwrap.wrap(f"({c.reason})", _WRAP)
    return tuple(lines)


def _stays(c: ResourceChange) -> bool:
    """On its hook once the plan is applied (what the hook then runs, in run order)."""
    return c.desired is not None and c.action is not Action.DELETE


def _run_key(c: ResourceChange) -> tuple[int, str, str]:
    d = c.desired
    assert d is not None
    return (d.priority or 0, d.address.name, d.address.index)


def plan_graph(plan: Plan) -> PlanGraph:
    """The graph of ``plan``: the value both renderers draw."""
    steps = _steps(plan)
    ids = {str(c.address): f"n{i}" for i, c in enumerate(plan.changes)}
    by_address = {str(c.address): c for c in plan.changes}

    edges: list[Edge] = []
    for c in plan.changes:
        for owner_address in c.uses_maps_of:
            owner = by_address.get(owner_address)
            if owner is None:
                continue
            user_id, owner_id = ids[str(c.address)], ids[owner_address]
            if c.action is Action.DELETE:
                if owner.action is Action.DELETE:
                    edges.append(Edge(user_id, owner_id, EdgeKind.UNLOAD_FIRST))
                continue
            if owner.action is Action.DELETE:
                continue  # cannot come from a valid plan: hostcheck refuses it
            reloaded = owner.action in (Action.CREATE, Action.REPLACE)
            forced = reloaded and c.action is Action.REPLACE
            edges.append(Edge(owner_id, user_id, EdgeKind.FORCES if forced else EdgeKind.MAPS))
    forced_ids = {e.dst for e in edges if e.kind is EdgeKind.FORCES}
    nodes = tuple(
        Node(f"n{i}", c, steps.get(i), _lines(c, steps.get(i), f"n{i}" in forced_ids))
        for i, c in enumerate(plan.changes)
    )

    on_hook: dict[_HookKey, list[Node]] = {}
    for n in nodes:
        key = _hook_key(n.change)
        if key is not None:
            on_hook.setdefault(key, []).append(n)
    clusters: list[Cluster] = []
    for i, key in enumerate(sorted(on_hook)):
        members = on_hook[key]
        staying = sorted((n for n in members if _stays(n.change)), key=lambda n: _run_key(n.change))
        going = [n for n in members if not _stays(n.change)]
        edges += [Edge(a.id, b.id, EdgeKind.RUNS) for a, b in itertools.pairwise(staying)]
        order = tuple(n.id for n in staying + going)
        clusters.append(Cluster(f"cluster_{i}", _cluster_label(key, members), order))

    return PlanGraph(_title(plan), nodes, tuple(edges), tuple(clusters), plan.errors)


def _cluster_label(key: _HookKey, members: list[Node]) -> str:
    hooks = {n.change.hook for n in members if n.change.hook is not None}
    if not hooks:
        return key.label
    hook = next(iter(sorted(hooks, key=str)))
    step = min((n.step for n in members if n.step is not None), default=None)
    swap = f", one swap at step {step}" if step is not None else ""
    return f"{hook_label(hook)} (dispatcher{swap})"


def _title(plan: Plan) -> str:
    add, change, destroy = plan.counts()
    what = "destroy" if plan.destroy else plan.source
    if plan.revision:
        what += f" @ {plan.revision}"
    counts = f"{add} to add, {change} to change, {destroy} to destroy"
    return f"bpfman plan of {what}: {counts}" if what else f"bpfman plan: {counts}"


# --- Graphviz DOT ------------------------------------------------------------------------------

_DOT_EDGE: Mapping[EdgeKind, Mapping[str, str]] = {
    EdgeKind.MAPS: {"color": "#2e7d32"},
    EdgeKind.UNLOAD_FIRST: {"color": "#b02a37"},
    EdgeKind.FORCES: {"color": "#8e248e", "style": "bold"},
    EdgeKind.RUNS: {"color": "#555555", "style": "dashed"},
}


def dot_string(text: str) -> str:
    """``text`` as a DOT double-quoted string that renders as written: ``"`` and ``\\`` are
    escaped (no escString such as ``\\N`` or ``\\l`` is left to interpret), ``&`` as an entity
    (Graphviz decodes entities in labels), control characters as visible ``\\xNN``."""
    out = ['"']
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "&":
            out.append("&amp;")
        elif ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or ch in "\u2028\u2029":
            out.append(f"\\\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _dot_label(lines: tuple[str, ...] | list[str]) -> str:
    """Several lines, each escaped, joined by DOT's centred line break ``\\n``."""
    return '"' + "\\n".join(dot_string(line)[1:-1] for line in lines) + '"'


def _dot_attrs(label: str | None, attrs: Mapping[str, str]) -> str:
    """``label`` already a DOT string (``_dot_label``); every other value is quoted here."""
    parts = [f"label={label}"] if label is not None else []
    return ", ".join(parts + [f"{k}={dot_string(v)}" for k, v in attrs.items()])


def to_dot(plan: Plan) -> str:
    """The plan as a Graphviz digraph (``bpfman graph | dot -Tsvg > plan.svg``)."""
    g = plan_graph(plan)
    out = [
        'digraph "bpfman-plan" {',
        f"  label={dot_string(g.title)}; labelloc=t; rankdir=LR; fontname=Helvetica;",
        '  node [shape=box, style="rounded,filled", fontname=Helvetica, fontsize=11];',
        "  edge [fontname=Helvetica, fontsize=9];",
    ]
    in_cluster = {m for cl in g.clusters for m in cl.members}
    by_id = {n.id: n for n in g.nodes}
    for cl in g.clusters:
        out.append(f"  subgraph {cl.id} {{")
        out.append(f'    label={dot_string(cl.label)}; style="rounded,dashed"; color="#607d8b";')
        out += [f"    {_dot_node(by_id[m])}" for m in cl.members]
        out.append("  }")
    out += [f"  {_dot_node(n)}" for n in g.nodes if n.id not in in_cluster]
    for e in g.edges:
        attrs = _dot_attrs(dot_string(e.kind.value), _DOT_EDGE[e.kind])
        out.append(f"  {e.src} -> {e.dst} [{attrs}];")
    if g.errors:
        text = ["The plan has errors; nothing can be applied:"] + [f"- {e}" for e in g.errors]
        # Left-justified lines (each ends with DOT's ``\\l``).
        label = '"' + "".join(dot_string(line)[1:-1] + "\\l" for line in text) + '"'
        attrs = 'shape=note, style=filled, fillcolor="#f8d7da", color="#b02a37"'
        out.append(f"  errors [label={label}, {attrs}];")
    out.append("}")
    return "\n".join(out) + "\n"


def _dot_node(n: Node) -> str:
    fill, line = _COLORS[n.change.action]
    attrs = {"fillcolor": fill, "color": line}
    if n.change.action is Action.NOOP:
        attrs["fontcolor"] = "#757575"
    return f"{n.id} [{_dot_attrs(_dot_label(n.lines), attrs)}];"


# --- Mermaid -----------------------------------------------------------------------------------

_MERMAID_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ._-/:,=+@~[]()'"
)
_MERMAID_EDGE = {
    EdgeKind.MAPS: "-->|maps|",
    EdgeKind.UNLOAD_FIRST: "-->|unload first|",
    EdgeKind.FORCES: "==>|forces replace|",
    EdgeKind.RUNS: "-.->|runs before|",
}


def mermaid_text(text: str) -> str:
    """``text`` for inside a Mermaid ``"..."`` label: every character but a small safe set is
    an entity code (``#34;``), so quotes, brackets of other shapes, ``|``, ``;``, ``%%``,
    backticks (markdown strings), ``<`` (HTML) and line breaks are text, never syntax."""
    return "".join(ch if ch in _MERMAID_SAFE else f"#{ord(ch)};" for ch in text)


def _mermaid_label(lines: tuple[str, ...] | list[str]) -> str:
    return '"' + "<br/>".join(mermaid_text(line) for line in lines) + '"'


def to_mermaid(plan: Plan) -> str:
    """The plan as a Mermaid flowchart (for Markdown that renders Mermaid, e.g. a pull request)."""
    g = plan_graph(plan)
    out = ["flowchart LR"]
    # A comment line: escaped like a label, so that it stays one line.
    out.append(f"  %% {mermaid_text(g.title)}")
    in_cluster = {m for cl in g.clusters for m in cl.members}
    by_id = {n.id: n for n in g.nodes}
    for i, cl in enumerate(g.clusters):
        out.append(f"  subgraph h{i} [{_mermaid_label([cl.label])}]")
        out.append("    direction LR")
        out += [f"    {m}[{_mermaid_label(by_id[m].lines)}]" for m in cl.members]
        out.append("  end")
    out += [f"  {n.id}[{_mermaid_label(n.lines)}]" for n in g.nodes if n.id not in in_cluster]
    out += [f"  {e.src} {_MERMAID_EDGE[e.kind]} {e.dst}" for e in g.edges]
    if g.errors:
        text = ["The plan has errors; nothing can be applied:"] + [f"- {e}" for e in g.errors]
        out.append(f"  errors>{_mermaid_label(text)}]")
    for action, name in _CLASS.items():
        fill, line = _COLORS[action]
        out.append(f"  classDef {name} fill:{fill},stroke:{line}")
    fill, line = _COLORS[Action.DELETE]
    out.append(f"  classDef error fill:{fill},stroke:{line}")
    for action, name in _CLASS.items():
        ids = [n.id for n in g.nodes if n.change.action is action]
        if ids:
            out.append(f"  class {','.join(ids)} {name}")
    if g.errors:
        out.append("  class errors error")
    return "\n".join(out) + "\n"
