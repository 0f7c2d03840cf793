"""Changes made outside bpfman: what the state file recorded against what the kernel holds.

Shown before the actions, as Terraform does ("Objects have changed outside of bpfman"), so a
reviewer sees why a plan repairs something nobody asked to change.
"""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.address import Address
from reconciler.kernel.types import Installed, InterfaceView
from reconciler.state import Record
from reconciler.values import frozen


@frozen
class Drift:
    address: str
    what: str  # one sentence: what changed, with ids where they help

    def to_json(self) -> dict[str, str]:
        return {"address": self.address, "change": self.what}


def _where(attach: dict) -> str:
    name = attach.get("ifname")
    return f" on {name}" if name else ""


def detect(
    installed: Iterable[Installed],
    records: dict[str, Record],
    interfaces: set[tuple[str | None, str]] | None = None,
) -> list[Drift]:
    """``interfaces``: (netns, name) of the interfaces that exist now, to tell a deleted
    interface from a detached program (None: not known)."""
    have: dict[str, Installed] = {}
    for found in installed:
        try:
            have[str(Address.from_pin_dir(found.pin_dir))] = found
        except ValueError:
            continue
    out: list[Drift] = []
    for key in sorted(set(have) | set(records)):
        inst, rec = have.get(key), records.get(key)
        if rec is None:
            assert inst is not None
            out.append(
                Drift(
                    key,
                    f"is pinned (program id {inst.prog_id}) but has no record in "
                    "the state file (the state was lost or is from another tool)",
                )
            )
            continue
        if inst is None:
            out.append(
                Drift(
                    key,
                    "was removed outside bpfman: its pins are gone"
                    + (f" (program id {rec.prog_id})" if rec.prog_id else ""),
                )
            )
            continue
        recorded = rec.extra.get("attach") or {}
        if rec.prog_id is not None and inst.prog_id != rec.prog_id:
            out.append(
                Drift(
                    key, f"was replaced outside bpfman: program id {rec.prog_id} -> {inst.prog_id}"
                )
            )
        if not inst.attached:
            iface = recorded.get("ifname") or rec.attributes.get("interface")
            netns = recorded.get("netns") or rec.attributes.get("netns")
            if iface and interfaces is not None and (netns, iface) not in interfaces:
                out.append(Drift(key, f"lost its interface: {iface} no longer exists"))
            else:
                out.append(
                    Drift(
                        key,
                        f"was detached outside bpfman{_where(recorded)} (its "
                        "program is loaded but no longer runs there)",
                    )
                )
            continue
        on = inst.attach if isinstance(inst.attach, InterfaceView) else None
        old_idx, new_idx = recorded.get("ifindex"), on.ifindex if on else None
        if old_idx and new_idx and old_idx != new_idx:
            out.append(Drift(key, f"runs on a recreated interface: ifindex {old_idx} -> {new_idx}"))
        old_name, new_name = recorded.get("ifname"), on.ifname if on else None
        if old_idx == new_idx and old_name and new_name and old_name != new_name:
            out.append(Drift(key, f"runs on a renamed interface: {old_name} -> {new_name}"))
    return out
