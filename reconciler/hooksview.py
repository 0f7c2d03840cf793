"""``bpfman list --by-hook``: every XDP, TC and TCX hook with its programs in run order and who
put each there (this bpfman, another bpfman root, libxdp, someone else), then the event links
(tracepoints, probes, fentry/fexit) grouped by event; drift shows where it happens.

The document is a pure function of what the kernel scan read (``reconciler.kernel.hookscan``),
what our pins hold (``Installed``) and our state records, so it is tested without a kernel.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from reconciler.address import Address
from reconciler.kernel.hookscan import Entry, EventLink, Hook, Scan
from reconciler.kernel.types import Installed
from reconciler.state import Record

FORMAT_VERSION = "1.0"
KIND_ORDER = {"xdp": 0, "tcx": 1, "tc": 2}  # per direction, tcx runs before the clsact filters
LIBXDP_DIR = Path(os.environ.get("LIBXDP_BPFFS", "/sys/fs/bpf")) / "xdp"


# --- owners ------------------------------------------------------------------------------------


class _Ours:
    """What this bpfman has: prog and link ids of our pins, and the records."""

    def __init__(self, installed: Iterable[Installed], records: Mapping[str, Record]) -> None:
        self.records = records
        self.by_prog: dict[int, Installed] = {}
        self.by_link: dict[int, Installed] = {}
        for inst in installed:
            self.by_prog[inst.prog_id] = inst
            if inst.link_id:
                self.by_link[inst.link_id] = inst

    def owner(self, inst: Installed) -> dict[str, Any]:
        addr = _address(inst.pin_dir)
        rec = self.records.get(addr) if addr else None
        return {
            "kind": "bpfman",
            "address": addr,
            "origin": rec.origin if rec else None,
            "recorded": rec is not None,
        }


def _address(rel: str) -> str | None:
    try:
        return str(Address.parse(str(Address.from_pin_dir(rel))))
    except ValueError:
        return None


def _other_root(pin: str, root: Path) -> dict[str, Any] | None:
    """Another bpfman root's pin: ``<root>/%xdp/…``, ``<root>/%tc/…`` or
    ``<root>/<Kind>/<name>/<index>/{prog,link,%spec-…}``."""
    for mark in ("/%xdp/", "/%tc/"):
        if mark in pin:
            other = pin.split(mark)[0]
            return None if Path(other) == root else {"kind": "bpfman_root", "root": other}
    parts = pin.split("/")
    if len(parts) < 6 or not (parts[-1] in ("prog", "link") or parts[-1].startswith("%spec-")):
        return None
    addr = _address("/".join(parts[-4:-1]))
    other = "/".join(parts[:-4])
    if addr is None or Path(other) == root:
        return None
    return {"kind": "bpfman_root", "root": other, "address": addr}


def _foreign_owner(pins: tuple[str, ...], via: str, root: Path, libxdp: bool) -> dict[str, Any]:
    for pin in pins:
        found = _other_root(pin, root)
        if found is not None:
            return found
    if libxdp or any(Path(p).is_relative_to(LIBXDP_DIR) for p in pins):
        return {"kind": "libxdp"}
    if pins:
        return {"kind": "pinned", "pins": list(pins)}
    what = {
        "xdp": "an XDP program attached by someone else (ip link, xdp-loader in legacy mode, …)",
        "xdp_dispatcher": "a program on someone else's XDP dispatcher",
        "tc_filter": "a tc filter of someone else",
        "tc_dispatcher": "a program on someone else's TC dispatcher",
        "tcx": "a tcx link of someone else",
    }[via]
    return {"kind": "other", "what": what}


# --- the document --------------------------------------------------------------------------


HookKey = tuple[str, str | None, str, str | None]  # type, netns, ifname, direction


def _hook_key(kind: str, netns: str | None, ifname: str, direction: str | None) -> HookKey:
    return (kind, netns, ifname, direction)


def _recorded_hook(rec: Record, inst: Installed | None) -> HookKey | None:
    """Which hook a record's attachment belongs on (XDP, TC, TCX), as far as the kernel's last
    view (the observed pins, else what the record kept) and the attributes say."""
    attach: Mapping[str, Any] = {}
    if inst is not None and inst.attach is not None:
        attach = inst.attach_json()
    attach = attach or rec.extra.get("attach") or {}
    attrs = rec.attributes
    ifname = attach.get("ifname") or attrs.get("interface")
    if not ifname:
        return None
    netns = attach.get("netns", attrs.get("netns"))
    kind_name = Address.parse(rec.address).kind.lower() if _valid(rec.address) else ""
    if attach.get("link_type") == "tcx" or "tcx" in kind_name:
        kind = "tcx"
    elif "pref" in attach or "direction" in attach or kind_name.startswith("tc"):
        kind = "tc"
    elif "xdp" in kind_name or "mode" in attach:
        kind = "xdp"
    else:
        return None
    direction = None
    if kind != "xdp":
        direction = attach.get("direction") or attrs.get("direction")
        if not direction and attach.get("attach_type"):
            direction = str(attach["attach_type"]).removeprefix("tcx_")
    return _hook_key(kind, netns, ifname, direction)


def _valid(address: str) -> bool:
    try:
        Address.parse(address)
    except ValueError:
        return False
    return True


def _entry_doc(
    position: int, e: Entry, hook: Hook, ours: _Ours, root: Path
) -> tuple[dict[str, Any], bool]:
    inst = ours.by_prog.get(e.prog_id) or (ours.by_link.get(e.link_id) if e.link_id else None)
    libxdp = any(
        d.protocol.startswith("libxdp") and _libxdp_pinned(d.pins) for d in hook.dispatchers
    )
    if inst is not None:
        owner = ours.owner(inst)
    else:
        owner = _foreign_owner(e.pins, e.via, root, libxdp and e.via == "xdp_dispatcher")
    doc = {"position": position, **e.to_json(), "owner": owner}
    return doc, inst is not None


def _libxdp_pinned(pins: tuple[str, ...]) -> bool:
    return any(Path(p).is_relative_to(LIBXDP_DIR) for p in pins)


def _dispatcher_owner(pins: tuple[str, ...], root: Path) -> dict[str, Any]:
    if any(Path(p).is_relative_to(root) for p in pins):
        return {"kind": "bpfman"}
    for pin in pins:
        found = _other_root(pin, root)
        if found is not None:
            return found
    if _libxdp_pinned(pins):
        return {"kind": "libxdp"}
    return {"kind": "other"}


def document(
    scan: Scan,
    installed: Iterable[Installed],
    records: Mapping[str, Record],
    root: Path,
) -> dict[str, Any]:
    """The ``list --by-hook --json`` document."""
    installed = list(installed)
    ours = _Ours(installed, records)
    hooks: dict[HookKey, dict[str, Any]] = {}
    on_hooks: set[str] = set()  # addresses of ours found running on a hook
    for hook in scan.hooks:
        programs = []
        managed = False
        for i, e in enumerate(hook.entries, 1):
            doc, mine = _entry_doc(i, e, hook, ours, root)
            managed |= mine
            if mine and doc["owner"]["address"]:
                on_hooks.add(doc["owner"]["address"])
            programs.append(doc)
        key = _hook_key(hook.kind, hook.netns, hook.ifname, hook.direction)
        hooks[key] = {
            "type": hook.kind,
            "netns": hook.netns,
            "ifname": hook.ifname,
            "ifindex": hook.ifindex,
            "direction": hook.direction,
            "mode": hook.mode,
            "dispatchers": [
                {
                    "prog_id": d.prog_id,
                    "prog_name": d.prog_name,
                    "protocol": d.protocol,
                    "pins": list(d.pins),
                    "owner": _dispatcher_owner(d.pins, root),
                }
                for d in hook.dispatchers
            ],
            "managed": managed,
            "programs": programs,
            "missing": [],
        }
    # Drift: our attachments recorded (or pinned) on a hook that does not run them.
    by_addr = {a: inst for inst in installed if (a := _address(inst.pin_dir))}
    for addr in sorted(set(records) | set(by_addr)):
        if addr in on_hooks:
            continue
        rec, inst = records.get(addr), by_addr.get(addr)
        where = _recorded_hook(rec, inst) if rec is not None else None
        if where is None and inst is not None and inst.attach is not None:
            where = _recorded_hook(Record(addr, {}, extra={"attach": inst.attach_json()}), inst)
        if where is None:
            continue
        hook_doc = hooks.setdefault(
            where,
            {
                "type": where[0],
                "netns": where[1],
                "ifname": where[2],
                "ifindex": None,
                "direction": where[3],
                "mode": None,
                "dispatchers": [],
                "managed": True,
                "programs": [],
                "missing": [],
            },
        )
        hook_doc["managed"] = True
        reason = "pins are missing" if inst is None else "pinned, but not attached to the hook"
        if rec is None:
            reason = "pinned without a record, not attached to the hook"
        hook_doc["missing"].append(
            {
                "address": addr,
                "origin": rec.origin if rec else None,
                "prog_id": inst.prog_id if inst else None,
                "reason": reason,
            }
        )
    for hook_doc in hooks.values():
        for p in hook_doc["programs"]:
            foreign = p["owner"]["kind"] != "bpfman"
            p["drift"] = (
                "a program bpfman did not put on a hook it manages"
                if foreign and hook_doc["managed"]
                else None
            )
    ordered = sorted(
        hooks.values(),
        key=lambda h: (
            h["netns"] or "",
            h["ifname"],
            h["direction"] or "",
            KIND_ORDER[h["type"]],
        ),
    )
    return {
        "format_version": FORMAT_VERSION,
        "bpffs_root": str(root),
        "hooks": ordered,
        "events": _events(scan.events, ours, records, root),
        "problems": list(scan.problems),
    }


def _events(
    links: list[EventLink], ours: _Ours, records: Mapping[str, Record], root: Path
) -> list[dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    seen: set[str] = set()
    for li in sorted(links, key=lambda li: li.link_id):
        inst = ours.by_link.get(li.link_id)
        if inst is not None:
            owner = ours.owner(inst)
            if owner["address"]:
                seen.add(owner["address"])
        else:
            owner = _foreign_owner(li.pins, "tcx", root, False)
            if owner["kind"] == "other":
                owner = {"kind": "other", "what": "a bpf link of someone else"}
        groups.setdefault(li.event, []).append(
            {
                "link_id": li.link_id,
                "link_type": li.link_type,
                "prog_id": li.prog_id,
                "prog_name": li.prog_name,
                "owner": owner,
            }
        )
    out = [{"event": ev, "programs": progs, "missing": []} for ev, progs in sorted(groups.items())]
    # Recorded event attachments of ours that no link runs (hook kinds are on their hooks).
    for addr, rec in sorted(records.items()):
        if addr in seen or rec.attributes.get("interface") or not _valid(addr):
            continue
        if ours.by_prog and any(
            _address(i.pin_dir) == addr and i.attached for i in ours.by_prog.values()
        ):
            continue
        kind = Address.parse(addr).kind
        if not any(k in kind.lower() for k in ("tracepoint", "probe", "fentry", "fexit")):
            continue
        out.append(
            {
                "event": f"{kind} {Address.parse(addr).index}",
                "programs": [],
                "missing": [
                    {"address": addr, "origin": rec.origin, "reason": "recorded, no link runs it"}
                ],
            }
        )
    return out


# --- text ------------------------------------------------------------------------------------


def _owner_text(owner: Mapping[str, Any]) -> str:
    kind = owner["kind"]
    if kind == "bpfman":
        where = owner.get("origin") or ("no record" if not owner.get("recorded") else "-")
        return f"bpfman {owner.get('address') or '?'} ({where})"
    if kind == "bpfman_root":
        addr = f" {owner['address']}" if owner.get("address") else ""
        return f"bpfman root {owner['root']}{addr}"
    if kind == "libxdp":
        return "libxdp (xdp-loader)"
    if kind == "pinned":
        return f"pinned at {owner['pins'][0]}"
    return str(owner.get("what", "someone else"))


def _header(h: Mapping[str, Any]) -> str:
    where = f"{h['ifname']} (netns {h['netns'] or 'host'})"
    if h["type"] == "xdp":
        text = f"{where} XDP" + (f", {h['mode']}" if h["mode"] else "")
    else:
        text = f"{where} {h['direction']} {h['type'].upper()}"
    for d in h["dispatchers"]:
        text += f", dispatcher id {d['prog_id']} ({d['protocol']}, {_owner_text(d['owner'])})"
    return text


def _row(p: Mapping[str, Any]) -> list[str]:
    where = []
    if p.get("tc_pref") is not None:
        where.append(f"pref {p['tc_pref']} handle {p['tc_handle']:#x}")
    if p.get("priority") is not None:
        where.append(f"prio {p['priority']}")
    ids = f"id {p['prog_id']}" + (f" link {p['link_id']}" if p.get("link_id") else "")
    if p.get("chain") is not None:
        actions = ",".join(p["chain"]) or "-"
    elif p.get("direct_action") is not None:
        actions = "direct-action" if p["direct_action"] else "-"
    else:
        actions = ""
    owner = _owner_text(p["owner"])
    if p.get("drift"):
        owner += "  [drift: not bpfman's, on a hook it manages]"
    return [f"{p['position']}.", "  ".join(where), p["prog_name"], ids, actions, owner]


def render(doc: Mapping[str, Any]) -> str:
    lines: list[str] = []
    if not doc["hooks"] and not doc["events"]:
        lines.append("No XDP, TC or TCX hook runs a program, and no event link exists.")
    for h in doc["hooks"]:
        lines.append(_header(h))
        rows = [_row(p) for p in h["programs"]]
        widths = [max((len(r[i]) for r in rows), default=0) for i in range(6)]
        for r in rows:
            cells = [c.ljust(w) for c, w in zip(r, widths, strict=True) if w]
            lines.append("  " + "  ".join(cells).rstrip())
        for m in h["missing"]:
            origin = f" ({m['origin']})" if m.get("origin") else ""
            lines.append(f"  -  {m['address']}{origin}  [drift: {m['reason']}]")
    if doc["events"]:
        lines.append("")
        lines.append("Events (bpf links):")
    for ev in doc["events"]:
        lines.append(f"{ev['event']}")
        for p in ev["programs"]:
            lines.append(
                f"  {p['prog_name']}  id {p['prog_id']} link {p['link_id']}  "
                f"{_owner_text(p['owner'])}"
            )
        for m in ev["missing"]:
            origin = f" ({m['origin']})" if m.get("origin") else ""
            lines.append(f"  -  {m['address']}{origin}  [drift: {m['reason']}]")
    for problem in doc["problems"]:
        lines.append(f"Warning: {problem}")
    return "\n".join(lines)
