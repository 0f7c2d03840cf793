"""``plan --markdown``: a Plan value rendered for a pull-request comment, and kept safe."""

from __future__ import annotations

import re

from reconciler.address import Address
from reconciler.plan import build_plan
from reconciler.plan.drift import Drift
from reconciler.plan.markdown import fenced, inline, render_error, render_markdown
from reconciler.plan.render import Style, render_change
from reconciler.plan.value import Action, Plan, ResourceChange
from tests.unit.factories import installed, record, tcx, tracepoint, xdp


def mixed_plan(**extra) -> Plan:
    """One of each: an update, a replace of a running program, an unload of a running one,
    and a load."""
    upd = xdp("upd", "eth1", priority=60)
    rep = tcx("rep", "eth2", priority=5)
    gone = xdp("gone", "eth3")
    new = tracepoint("new")
    return build_plan(
        [upd, rep, new],
        [installed(upd), installed(rep), installed(gone)],
        {
            str(upd.address): record(upd, priority=55),
            str(rep.address): record(rep, priority=9),
            str(gone.address): record(gone),
        },
        source="manifests",
        revision="0123456789abcdef0123",
        bpffs_root="/sys/fs/bpf/bpfman",
        **extra,
    )


def sections(md: str) -> list[str]:
    return re.findall(r"<details>\n(.*?)\n</details>", md, re.S)


def test_counts_come_first_as_a_heading_and_a_table():
    md = render_markdown(mixed_plan())
    assert md.startswith("### bpfman plan: 2 to add, 1 to change, 2 to destroy\n")
    assert "| add | change | destroy |\n|---:|---:|---:|\n| 2 | 1 | 2 |" in md
    assert "revision <code>0123456789ab</code>" in md
    assert md.rstrip().endswith("**Plan: 2 to add, 1 to change, 2 to destroy.**")


def test_one_collapsible_section_per_change_with_the_text_plans_block():
    plan = mixed_plan()
    md = render_markdown(plan)
    found = sections(md)
    assert len(found) == len(plan.actionable) == 4
    for c, section in zip(plan.actionable, found, strict=True):
        summary = section.splitlines()[0]
        assert summary.startswith("<summary>") and summary.endswith("</summary>")
        assert inline(str(c.address)) in summary and inline(c.origin or "") in summary
        # The body is the text plan's block for this change, verbatim, inside a fence.
        assert "\n".join(render_change(c, Style(False))) in section
    by_summary = {s.splitlines()[0]: s for s in found}
    (replace,) = [s for k, s in by_summary.items() if "must be replaced" in k]
    assert "~ priority        = 9 -> 5  # forces replacement" in replace
    (update,) = [s for k, s in by_summary.items() if "updated in-place" in k]
    assert "~ priority        = 55 -> 60" in update
    (unload,) = [s for k, s in by_summary.items() if "will be unloaded" in k]
    assert "(because it is no longer in the manifests)" in unload
    assert "(<code>xdp.yaml:1</code>)" in unload.splitlines()[0]


def test_programs_taken_off_their_attach_point_are_named_in_a_warning():
    md = render_markdown(mixed_plan())
    (line,) = [x for x in md.splitlines() if "detaches" in x]
    assert line.startswith("> :warning: **Warning:** this plan detaches 2 attached programs")
    assert "<code>TcxProgram/rep&#91;eth2&#93;</code> (replaced)" in line
    assert "<code>XdpProgram/gone&#91;eth3&#93;</code> (unloaded)" in line
    # The update and the load detach nothing.
    assert "upd" not in line and "new" not in line


def test_programs_not_attached_now_are_not_warned_about():
    gone = xdp("gone", "eth3")
    plan = build_plan([], [installed(gone, attached=False)], {str(gone.address): record(gone)})
    assert [c.action for c in plan.actionable] == [Action.DELETE]
    assert "detaches" not in render_markdown(plan)


def test_drift_errors_and_warnings_are_shown():
    plan = mixed_plan(
        drift=[Drift("XdpProgram/gone[eth3]", "was detached (program id 10) outside bpfman")],
        errors=["XdpProgram/a[eth9] (x.yaml:4): interface 'eth9' does not exist"],
        warnings=["Resource targeting is in effect"],
    )
    md = render_markdown(plan)
    assert md.startswith("### bpfman plan: 1 error\n")
    assert "#### Errors (1): nothing can be applied" in md
    assert "\nError: XdpProgram/a[eth9] (x.yaml:4): interface 'eth9' does not exist\n" in md
    assert "#### Changed outside bpfman (1)" in md
    assert "  ~ XdpProgram/gone[eth3] was detached (program id 10) outside bpfman" in md
    assert "> :warning: **Warning:** Resource targeting is in effect" in md


def test_no_changes():
    d = xdp("a")
    md = render_markdown(build_plan([d], [installed(d)], {str(d.address): record(d)}))
    assert md.startswith("### bpfman plan: no changes\n")
    assert "No changes. Kernel state matches the manifests." in md
    assert "<details>" not in md and "Warning" not in md


# --- escaping: nothing from a manifest can end the code block or add HTML -----------------------

HOSTILE = "x``` </details><img src=x onerror=alert(1)> *bold* [link](http://e) @someone \n# h"


def hostile_plan() -> Plan:
    change = ResourceChange(
        address=Address("UprobeProgram", "evil", f"/bin/{HOSTILE}:main"),
        action=Action.CREATE,
        before=None,
        after={"target": HOSTILE, "note": "````` four and five backticks ````"},
        origin=f"dir/</summary>{HOSTILE}.yaml:3",
    )
    return Plan(
        changes=(change,),
        source=f"repo<script>{HOSTILE}",
        drift=(Drift(f"x[{HOSTILE}]", f"changed ``` </details> {HOSTILE}"),),
    )


def outside_code_blocks(md: str) -> str:
    """The document with every fenced code block removed, as a CommonMark reader finds them
    (a block closes only at a fence of at least its opening length)."""
    kept, fence = [], None
    for line in md.splitlines():
        m = re.match(r"^ {0,3}(`{3,})", line)
        if fence is None and m:
            fence = m.group(1)
        elif fence is not None and m and m.group(1).startswith(fence) and not line.strip("`"):
            fence = None
        elif fence is None:
            kept.append(line)
    assert fence is None, "a code block is left open"
    return "\n".join(kept)


def test_values_cannot_close_the_code_block():
    md = render_markdown(hostile_plan())
    (section,) = sections(md)
    fences = re.findall(r"^(`{3,})$", section, re.M)
    # Longer than the longest run of backticks in the content (5), opened and closed once.
    assert fences == ["``````", "``````"]
    # Inside, the text is as the text plan shows it (the renderer shows it verbatim, inert).
    assert '+ note   = "````` four and five backticks ````"' in section


def test_no_html_or_markdown_from_data_outside_code_blocks():
    md = render_markdown(hostile_plan())
    prose = outside_code_blocks(md)
    tags = re.findall(r"</?([a-z]+)", prose)
    assert set(tags) <= {"details", "summary", "code"}  # bpfman's own elements only
    assert prose.count("<details>") == prose.count("</details>") == 1
    assert prose.count("<summary>") == prose.count("</summary>") == 1
    for raw in ("<img", "<script", "*bold*", "[link]", "``"):
        assert raw not in prose
    assert "&#60;img src=x onerror=alert&#40;1&#41;&#62;" in prose  # shown, as text
    # A line break in a name cannot start a heading of its own.
    assert not any(line.startswith("# h") for line in prose.splitlines())


def test_inline_and_fenced_helpers():
    assert inline("a<b>&`c`\n|d|") == "a&#60;b&#62;&#38;&#96;c&#96; &#124;d&#124;"
    assert fenced("plain") == ["```", "plain", "```"]
    assert fenced("a ```` b\n")[0] == "`````"


def test_long_plans_are_cut_to_fit_a_comment():
    plan = build_plan([tracepoint(f"t{i}", f"syscalls/sys_enter_e{i}") for i in range(50)], [], {})
    md = render_markdown(plan, limit=5_000)
    assert len(md) < 6_000
    shown = len(sections(md))
    assert 0 < shown < 50
    assert f"... and {50 - shown} more changes, not shown" in md
    assert md.rstrip().endswith("**Plan: 50 to add, 0 to change, 0 to destroy.**")


def test_a_failure_before_any_plan_is_markdown_too():
    md = render_error("a manifest is invalid (1 problem):\n  a.yaml:3: ``` </details>")
    assert md.startswith("### bpfman plan: failed\n")
    assert "````\nError: a manifest is invalid (1 problem):\n  a.yaml:3: ``` </details>\n````" in md
