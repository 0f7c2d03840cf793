"""``bpfman list`` and ``bpfman get``: what bpfman manages here, as our state and the kernel's view
of it side by side (ids, tag, JIT-ed size, pins, attach point, maps)."""

from __future__ import annotations

import argparse
from typing import Any

from reconciler import hooksview
from reconciler.address import Address
from reconciler.engine import Context, observe
from reconciler.errors import UserError
from reconciler.terminal import print_json


def _entries(ctx: Context) -> list[dict[str, Any]]:
    installed, records = observe(ctx)
    out = []
    seen = set()
    for inst in sorted(installed, key=lambda i: i.pin_dir):
        try:
            addr = str(Address.from_pin_dir(inst.pin_dir))
        except ValueError:
            continue
        seen.add(addr)
        rec = records.get(addr)
        out.append(
            {
                "address": addr,
                "recorded": rec is not None,
                "origin": rec.origin if rec else None,
                "revision": rec.revision if rec else None,
                "attributes": rec.attributes if rec else None,
                "applied_at": rec.applied_at if rec else None,
                "kernel": {
                    "prog_id": inst.prog_id,
                    "prog_name": inst.prog_name,
                    "prog_type": inst.prog_type,
                    "tag": inst.tag,
                    "jited_size": inst.jited_size,
                    "prog_pin": inst.prog_pin,
                    "link_id": inst.link_id,
                    "link_pin": inst.link_pin,
                    "attached": inst.attached,
                    "attach_point": inst.attach_json(),
                    "maps": [
                        {"name": m.name, "id": m.id, "type": m.type, "pin": m.pin}
                        for m in inst.maps
                    ],
                },
            }
        )
    for addr, rec in sorted(records.items()):
        if addr not in seen:
            out.append(
                {
                    "address": addr,
                    "recorded": True,
                    "origin": rec.origin,
                    "revision": rec.revision,
                    "attributes": rec.attributes,
                    "applied_at": rec.applied_at,
                    "kernel": None,
                }
            )
    return out


def _status(e: dict[str, Any]) -> str:
    k = e["kernel"]
    if k is None:
        return "missing (recorded, not pinned)"
    if not e["recorded"]:
        return "unrecorded"
    return "attached" if k["attached"] else "detached"


def cmd_list(args: argparse.Namespace, ctx: Context) -> int:
    if getattr(args, "by_hook", False):
        return _by_hook(args, ctx)
    entries = _entries(ctx)
    if args.json:
        print_json({"format_version": "1.0", "bpffs_root": args.bpffs_root, "attachments": entries})
        return 0
    if not entries:
        print(f"No programs managed under {args.bpffs_root}.")
        return 0
    rows = [("ADDRESS", "PROG ID", "LINK ID", "STATUS", "MANIFEST")]
    for e in entries:
        k = e["kernel"] or {}
        rows.append(
            (
                e["address"],
                str(k.get("prog_id", "-")),
                str(k.get("link_id") or "-"),
                _status(e),
                e["origin"] or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _by_hook(args: argparse.Namespace, ctx: Context) -> int:
    """``list --by-hook``: every hook with what runs there and who put it there (read-only)."""
    # Imported here, for start-up time: the scan loads libbpf (BTF of dispatchers).
    from reconciler.kernel import hookscan

    installed, records = observe(ctx)  # also tells the kernel the recorded namespaces
    root = ctx.kernel.root
    doc = hooksview.document(hookscan.scan([root]), installed, records, root)
    if args.json:
        print_json(doc)
    else:
        print(hooksview.render(doc))
    return 0


def cmd_get(args: argparse.Namespace, ctx: Context) -> int:
    try:
        wanted = str(Address.parse(args.address))
    except ValueError as e:
        raise UserError(str(e)) from None
    entries = {e["address"]: e for e in _entries(ctx)}
    entry = entries.get(wanted)
    if entry is None:
        known = ", ".join(sorted(entries)) or "none"
        raise UserError(f"{wanted} is not managed under {args.bpffs_root} (managed: {known})")
    if args.json:
        print_json({"format_version": "1.0", **entry})
        return 0
    print(f"# {entry['address']}  ({_status(entry)})")
    meta = {
        "manifest": entry["origin"],
        "revision": entry["revision"],
        "applied_at": entry["applied_at"],
    }
    rows = [(k, str(v)) for k, v in meta.items() if v]
    rows += [(k, json_value(v)) for k, v in (entry["attributes"] or {}).items()]
    width = max((len(k) for k, _ in rows), default=0)
    for key, text in rows:
        print(f"{key:<{width}} = {text}")
    k = entry["kernel"]
    if k:
        print("kernel:")
        for key in (
            "prog_id",
            "prog_name",
            "prog_type",
            "tag",
            "jited_size",
            "prog_pin",
            "link_id",
            "link_pin",
            "attached",
        ):
            if k[key] is not None:
                print(f"  {key:<10} = {k[key]}")
        if k["attach_point"]:
            print(f"  attach     = {json_value(k['attach_point'])}")
        for m in k["maps"]:
            print(f"  map {m['name']}: id {m['id']} ({m['type']}) pinned at {m['pin']}")
    return 0


def json_value(v: Any) -> str:
    import json

    return json.dumps(v)
