"""Render a Plan as Markdown for a pull-request (or merge-request) comment: ``plan --markdown``.

A reviewer sees the counts first, then what will stop running, then errors and drift, then one
collapsible ``<details>`` section per change holding the change exactly as the text plan shows
it, inside a fenced code block.

Everything that comes from manifests or the host (names, indexes, file names, values, reasons)
is untrusted: a value may hold backticks, ``</details>``, HTML or Markdown of its own. It can
reach the comment in only two ways, both safe:

- inside a fenced code block whose fence is longer than any run of backticks in its content
  (CommonMark closes a fence only with one at least as long), so nothing inside can close it,
  and a renderer shows everything inside as text: ``</details>`` or ``<img>`` there is inert;
- inline (a ``<summary>``, a list item), with every character Markdown or HTML gives a meaning
  written as a numeric character reference (``&#96;`` for a backtick, ``&#60;`` for ``<``) and
  line breaks flattened, which both a Markdown paragraph and an HTML block show as the
  character itself.

Pure functions of the plan, like ``render`` and ``jsonout``: nothing here computes.
"""

from __future__ import annotations

import re

from reconciler.plan.render import Style, render_change, render_drift, summary_line
from reconciler.plan.value import Action, Plan, ResourceChange

_SYMBOL = {Action.CREATE: "+", Action.UPDATE: "~", Action.REPLACE: "+/-", Action.DELETE: "-"}
_HEADLINE = {
    Action.CREATE: "will be loaded",
    Action.UPDATE: "will be updated in-place",
    Action.REPLACE: "must be replaced",
    Action.DELETE: "will be unloaded",
}

# Characters that mean something to Markdown inside a line (emphasis, links, images, code,
# tables, escapes) or to HTML (tags, entities, attributes). Inline text never starts a line (it
# always follows bpfman's own words and its line breaks are flattened), so the characters that
# matter only there (``-``, ``+``, ``=``, a leading ``#``) need nothing.
_SPECIAL = re.compile(r"[\\`*_{}\[\]()<>#!|~&\"']")
_BREAKS = re.compile(r"[\r\n\u0085\u2028\u2029]+")
_BACKTICKS = re.compile(r"`+")

# A comment of at most this many characters fits GitHub's limit (65,536) with room to spare;
# past it, the remaining changes are counted, not shown.
MAX_CHARS = 60_000


def inline(text: str) -> str:
    """``text`` safe anywhere outside a code block: in a paragraph, a list item, a table cell
    and inside an HTML block such as ``<summary>`` (where backslash escapes would not work,
    so character references are used)."""
    flat = _BREAKS.sub(" ", text)
    return _SPECIAL.sub(lambda m: f"&#{ord(m.group())};", flat)


def code(text: str) -> str:
    """``text`` as inline code that cannot break out: an HTML ``<code>`` element around the
    escaped text (a Markdown code span would have to count backticks and cannot hold ``|``
    in a table)."""
    return f"<code>{inline(text)}</code>"


def fenced(text: str, info: str = "") -> list[str]:
    """``text`` in a fenced code block that nothing in it can close."""
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    body = text[:-1] if text.endswith("\n") else text
    return [fence + info, body, fence]


def detached(plan: Plan) -> list[tuple[ResourceChange, str]]:
    """The changes that take a running program off its attach point: a replacement of an
    attached program (the old one is detached once the new one runs: its maps and counters
    start over) and any unload of an attached one."""
    out = []
    for c in plan.changes:
        running = c.installed is not None and c.installed.attached
        if running and c.action is Action.REPLACE:
            out.append((c, "replaced"))
        elif running and c.action is Action.DELETE:
            out.append((c, "unloaded"))
    return out


def _heading(plan: Plan) -> list[str]:
    add, change, destroy = plan.counts()
    if plan.errors:
        title = f"bpfman plan: {len(plan.errors)} error{'s' if len(plan.errors) != 1 else ''}"
    elif not plan.has_changes:
        title = "bpfman plan: no changes"
    else:
        title = f"bpfman plan: {add} to add, {change} to change, {destroy} to destroy"
    out = [f"### {title}", ""]
    where = f"bpffs root {code(plan.bpffs_root)}" if plan.bpffs_root else ""
    if plan.destroy:
        out.append(f"Destroy: everything bpfman manages under {where or 'the bpffs root'}.")
    elif plan.source:
        rev = f" at revision {code(plan.revision[:12])}" if plan.revision else ""
        out.append(f"Source {code(plan.source)}{rev}" + (f", {where}." if where else "."))
    out += [
        "",
        "| add | change | destroy |",
        "|---:|---:|---:|",
        f"| {add} | {change} | {destroy} |",
    ]
    return out + [""]


def _warnings(plan: Plan) -> list[str]:
    out = []
    gone = detached(plan)
    if gone:
        n = len(gone)
        what = ", ".join(f"{code(str(c.address))} ({why})" for c, why in gone)
        out.append(
            f"> :warning: **Warning:** this plan detaches {n} attached program"
            f"{'s' if n != 1 else ''}, at least briefly: {what}."
        )
        out.append("")
    for w in plan.warnings:
        out.append(f"> :warning: **Warning:** {inline(w)}")
        out.append("")
    return out


def _errors(plan: Plan) -> list[str]:
    if not plan.errors:
        return []
    n = len(plan.errors)
    head = f"#### Errors ({n}): nothing can be applied"
    return [head, "", *fenced("\n".join(f"Error: {e}" for e in plan.errors)), ""]


def _drift(plan: Plan) -> list[str]:
    if not plan.drift:
        return []
    text = "\n".join(render_drift(plan, Style(False))).strip("\n")
    return [f"#### Changed outside bpfman ({len(plan.drift)})", "", *fenced(text), ""]


def _orphans(plan: Plan) -> list[str]:
    if not plan.orphans:
        return []
    out = ["#### Orphaned (kept loaded by `bpfman.io/prune: disabled`)", ""]
    out += [f"- {code(address)} (was {code(origin)})" for address, origin in plan.orphans]
    return out + [""]


def _section(c: ResourceChange) -> list[str]:
    head = f"<code>{inline(_SYMBOL[c.action])}</code> {code(str(c.address))} {_HEADLINE[c.action]}"
    if c.origin:
        head += f" ({code(c.origin)})"
    text = "\n".join(render_change(c, Style(False)))
    # The blank lines around the block let Markdown render it inside the HTML element.
    return ["<details>", f"<summary>{head}</summary>", "", *fenced(text), "", "</details>", ""]


def render_markdown(plan: Plan, limit: int = MAX_CHARS) -> str:
    """The plan as one Markdown document, ending with the text plan's summary line."""
    out = _heading(plan) + _warnings(plan) + _errors(plan) + _drift(plan) + _orphans(plan)
    changes = plan.actionable
    if not changes and not plan.errors:
        out += ["No changes. Kernel state matches the manifests.", ""]
    if changes:
        out += [f"#### Changes ({len(changes)})", ""]
        size = sum(len(line) + 1 for line in out)
        for i, c in enumerate(changes):
            section = _section(c)
            cost = sum(len(line) + 1 for line in section)
            if size + cost > limit:
                rest = len(changes) - i
                out.append(
                    f"... and {rest} more change{'s' if rest != 1 else ''}, not shown (the "
                    "comment would be too long): run `bpfman plan` for all of them."
                )
                out.append("")
                break
            out += section
            size += cost
        out.append(f"**{summary_line(plan)}**")
    return "\n".join(out).rstrip("\n") + "\n"


def render_error(message: str, command: str = "plan") -> str:
    """A failure before any plan exists (an invalid manifest, a bad source) as Markdown, so
    that a CI step posting ``plan --markdown`` posts why there is no plan."""
    return (
        "\n".join(
            [
                f"### bpfman {inline(command)}: failed",
                "",
                "No plan could be made; nothing was changed.",
                "",
                *fenced(f"Error: {message}"),
            ]
        )
        + "\n"
    )
