"""Render a Plan for people, in Terraform's shapes so CI tooling and reviewers read it at a glance.

Pure functions of the plan: nothing here computes or touches the kernel.
"""

from __future__ import annotations

import json
from typing import Any

from reconciler import terminal
from reconciler.plan.value import Action, Plan, ResourceChange

_SYMBOL = {
    Action.CREATE: "+",
    Action.UPDATE: "~",
    Action.REPLACE: "+/-",
    Action.DELETE: "-",
}
_LEGEND = {
    Action.CREATE: "load",
    Action.UPDATE: "update in-place",
    Action.REPLACE: "replace (the new program is loaded before the old one is unloaded)",
    Action.DELETE: "unload",
}
_HEADLINE = {
    Action.CREATE: "will be loaded",
    Action.UPDATE: "will be updated in-place",
    Action.REPLACE: "must be replaced",
    Action.DELETE: "will be unloaded",
}
_COLOR = {Action.CREATE: "32", Action.UPDATE: "33", Action.REPLACE: "35", Action.DELETE: "31"}


class Style:
    def __init__(self, color: bool) -> None:
        self.color = color

    def paint(self, text: str, code: str) -> str:
        return terminal.paint(text, code) if self.color else text

    def bold(self, text: str) -> str:
        return self.paint(text, "1")


def value(v: Any) -> str:
    return json.dumps(v)


def _body(c: ResourceChange, style: Style) -> list[str]:
    before = c.before or {}
    after = c.after or {}
    keys = sorted(set(before) | set(after))
    width = max((len(k) for k in keys), default=0)
    lines = []
    for k in keys:
        name = k.ljust(width)
        if c.action is Action.CREATE:
            lines.append(
                f"      {style.paint('+', _COLOR[Action.CREATE])} {name} = {value(after[k])}"
            )
        elif c.action is Action.DELETE:
            lines.append(
                f"      {style.paint('-', _COLOR[Action.DELETE])} {name} = {value(before[k])}"
            )
        elif k in before and k in after and before[k] == after[k]:
            lines.append(f"        {name} = {value(after[k])}")
        else:
            old = value(before[k]) if k in before else "(unknown)"
            new = value(after[k]) if k in after else "null"
            note = "  # forces replacement" if k in c.replace_paths else ""
            lines.append(
                f"      {style.paint('~', _COLOR[Action.UPDATE])} {name} = {old} -> {new}{note}"
            )
    return lines


def render_change(c: ResourceChange, style: Style) -> list[str]:
    sym = _SYMBOL[c.action]
    head = f"  # {style.bold(str(c.address))} {_HEADLINE[c.action]}"
    out = [head]
    if c.action is Action.REPLACE and c.replace_paths and not c.reason:
        out.append(f"  # (because {', '.join(c.replace_paths)} changed)")
    if c.reason:
        out.append(f"  # (because {c.reason})")
    if c.uses_maps_of:
        owners = ", ".join(c.uses_maps_of)
        when = "unloaded before" if c.action is Action.DELETE else "loaded after"
        out.append(f"  # (uses the maps of {owners}, so it is {when} it)")
    if c.origin and c.action is not Action.DELETE:
        out.append(f"  # (from {c.origin})")
    out.append(f"{style.paint(sym.rjust(3), _COLOR[c.action])} {c.address} {{")
    out.extend(_body(c, style))
    out.append("    }")
    return out


def summary_line(plan: Plan) -> str:
    add, change, destroy = plan.counts()
    return f"Plan: {add} to add, {change} to change, {destroy} to destroy."


def render_unselected(plan: Plan, style: Style | None = None) -> str:
    """The manifests this host skipped, and why (``plan --show-unselected``)."""
    style = style or Style(False)
    if not plan.unselected:
        return "All manifests are selected for this host.\n\n"
    out = [style.bold("Manifests not selected for this host:")]
    for resource, origin, reason in plan.unselected:
        out.append(f"  {resource} ({origin}): {reason}")
    return "\n".join(out) + "\n\n"


def render_drift(plan: Plan, style: Style) -> list[str]:
    if not plan.drift:
        return []
    out = [style.bold("Note: Objects have changed outside of bpfman"), ""]
    out.append("bpfman detected the following changes made outside of bpfman since the last apply:")
    out.append("")
    for d in plan.drift:
        out.append(f"  {style.paint('~', _COLOR[Action.UPDATE])} {d.address} {d.what}")
    out.append("")
    if not plan.destroy:
        out.append("The plan below repairs what the manifests own; nothing else is touched.")
        out.append("")
    return out


def render_orphans(plan: Plan, style: Style) -> list[str]:
    if not plan.orphans:
        return []
    out = [
        style.bold("Orphaned:") + " kept loaded by bpfman.io/prune: disabled, though their "
        "manifests are gone; `bpfman destroy --target ADDRESS` unloads one:"
    ]
    for address, origin in plan.orphans:
        out.append(f"  {address} (was {origin})")
    out.append("")
    return out


def render_plan(plan: Plan, style: Style | None = None) -> str:
    style = style or Style(False)
    out: list[str] = []
    if plan.errors:
        for e in plan.errors:
            out.append(style.paint("Error: ", "31;1") + e)
        out.append("")
    for w in plan.warnings:
        out.append(style.paint("Warning: ", "33;1") + w)
        out.append("")
    out.extend(render_drift(plan, style))
    out.extend(render_orphans(plan, style))
    if plan.skipped:
        total = sum(n for _, n in plan.skipped)
        kinds = ", ".join(f"{n} {what}" for what, n in plan.skipped)
        out.append(
            f"Skipped {total} resource{'s' if total != 1 else ''} the kustomization lists that "
            f"bpfman does not load ({kinds})."
        )
        out.append("")
    if not plan.has_changes:
        if not plan.errors:
            out.append(style.bold("No changes.") + " Kernel state matches the manifests.")
        return "\n".join(out) + "\n"
    used = [a for a in _SYMBOL if any(c.action is a for c in plan.changes)]
    rev = f" (revision {plan.revision[:12]})" if plan.revision else ""
    if plan.destroy:
        out.append(f"bpfman will unload everything it manages under {plan.bpffs_root}.")
    else:
        out.append(
            f"bpfman read the manifests in {plan.source}{rev} and compared them with the kernel."
        )
    out.append("Actions are indicated with the following symbols:")
    for a in used:
        out.append(f"{style.paint(_SYMBOL[a].rjust(3), _COLOR[a])} {_LEGEND[a]}")
    out.append("")
    out.append("bpfman will perform the following actions:")
    out.append("")
    for c in plan.actionable:
        out.extend(render_change(c, style))
        out.append("")
    out.append(style.bold(summary_line(plan)))
    return "\n".join(out) + "\n"
