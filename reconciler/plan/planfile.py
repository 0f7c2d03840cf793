"""Saved plans: ``bpfman plan --out FILE`` writes the plan, ``bpfman apply FILE`` carries out
exactly it.

A plan file is self-contained: besides the changes it holds the bytecode they load (so a plan
made from a git revision applies after the clone is gone) and a fingerprint of what the plan was
computed from — the programs pinned under the bpffs root and the state file's records. Applying
re-observes and refuses the plan as stale if the fingerprint differs: the kernel or the state
changed, so the plan may no longer be right. The fingerprint is a digest of content, not a
counter, so a no-op run does not make a saved plan stale.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from reconciler import __version__, kinds
from reconciler.address import Address
from reconciler.files import NotReadable, read_regular
from reconciler.kernel import types as kt
from reconciler.plan.drift import Drift
from reconciler.plan.value import Action, Orphan, Plan, ResourceChange, Unselected
from reconciler.sources.redact import redact
from reconciler.spec.model import DesiredAttachment, Origin
from reconciler.state import Record

FORMAT = "bpfman-plan/1"
# A plan embeds the bytecode it loads, base64 (4/3 of its size): 256 MiB holds a few objects of
# the largest size a manifest may name (64 MiB) and is still a bounded read.
MAX_PLAN_SIZE = 256 * 1024 * 1024


class PlanFileError(Exception):
    """A plan file that cannot be used: unreadable, for another root, or stale."""


def fingerprint(root: str, installed: Iterable[kt.Installed], records: dict[str, Record]) -> str:
    """What a plan was computed from, as a digest: every managed program as the kernel reports
    it, and every record of the state file."""
    kernel = sorted(
        (i.pin_dir, i.prog_id, i.link_id, i.attached, i.tag, sorted(m.id for m in i.maps))
        for i in installed
    )
    state = [records[k].to_json() for k in sorted(records)]
    doc = json.dumps({"root": root, "kernel": kernel, "state": state}, sort_keys=True)
    return "sha256:" + hashlib.sha256(doc.encode()).hexdigest()


# --- values to JSON and back --------------------------------------------------------------------


def _point_json(p: object | None) -> dict[str, Any] | None:
    return kinds.point_to_json(p)  # each point class belongs to one kind of the registry


def _point(doc: dict[str, Any] | None) -> Any:
    return kinds.point_from_json(doc)


def _desired_json(d: DesiredAttachment, objects: dict[str, str]) -> dict[str, Any]:
    objects.setdefault(d.bytecode_digest, d.program.object_path)
    p = d.program
    return {
        "address": str(d.address),
        "origin": [d.origin.file, d.origin.line],
        "program": {
            "object_digest": d.bytecode_digest,
            "function": p.function,
            "prog_type": p.prog_type.value,
            "global_data": [[name, value.hex()] for name, value in p.global_data],
            "maps_dir": p.maps_dir,
        },
        "point": _point_json(d.point),
        "priority": d.priority,
        "proceedon": list(d.proceedon),
        "depends_on": [str(a) for a in d.depends_on],
        "attributes": d.attributes,
    }


def _desired(doc: dict[str, Any], objects_dir: Path) -> DesiredAttachment:
    p = doc["program"]
    digest = p["object_digest"]
    spec = kt.ProgramSpec(
        object_path=str(objects_dir / (digest.split(":")[-1] + ".o")),
        function=p["function"],
        prog_type=kt.ProgType(p["prog_type"]),
        global_data=tuple((name, bytes.fromhex(v)) for name, v in p["global_data"]),
        maps_dir=p["maps_dir"],
    )
    return DesiredAttachment(
        address=Address.parse(doc["address"]),
        origin=Origin(*doc["origin"]),
        program=spec,
        point=_point(doc["point"]),
        bytecode_digest=digest,
        priority=doc["priority"],
        proceedon=tuple(doc["proceedon"]),
        depends_on=tuple(Address.parse(a) for a in doc["depends_on"]),
        attributes=doc["attributes"],
    )


def _installed(doc: dict[str, Any] | None) -> kt.Installed | None:
    if doc is None:
        return None
    maps = tuple(kt.MapInfo(**m) for m in doc.pop("maps"))
    return kt.Installed(maps=maps, attach=kt.view_from_json(doc.pop("attach")), **doc)


def _installed_json(inst: kt.Installed) -> dict[str, Any]:
    return dataclasses.asdict(inst) | {"attach": inst.attach_json()}  # the view as JSON


def _change_json(c: ResourceChange, objects: dict[str, str]) -> dict[str, Any]:
    return {
        "address": str(c.address),
        "action": c.action.value,
        "before": None if c.before is None else dict(c.before),
        "after": None if c.after is None else dict(c.after),
        "desired": _desired_json(c.desired, objects) if c.desired else None,
        "replace_paths": list(c.replace_paths),
        "reason": c.reason,
        "origin": c.origin,
        "installed": _installed_json(c.installed) if c.installed else None,
        "uses_maps_of": list(c.uses_maps_of),
        "hook": _point_json(c.hook),
    }


def _change(doc: dict[str, Any], objects_dir: Path) -> ResourceChange:
    return ResourceChange(
        address=Address.parse(doc["address"]),
        action=Action(doc["action"]),
        before=doc["before"],
        after=doc["after"],
        desired=_desired(doc["desired"], objects_dir) if doc["desired"] else None,
        replace_paths=tuple(doc["replace_paths"]),
        reason=doc["reason"],
        origin=doc["origin"],
        installed=_installed(doc["installed"]),
        uses_maps_of=tuple(doc["uses_maps_of"]),
        hook=_point(doc["hook"]),
    )


# --- files --------------------------------------------------------------------------------------


def save(plan: Plan, path: Path, fp: str) -> None:
    objects: dict[str, str] = {}
    changes = [_change_json(c, objects) for c in plan.changes]
    embedded = {}
    for digest, obj in sorted(objects.items()):
        data = Path(obj).read_bytes()
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise PlanFileError(f"{obj} changed while the plan was being made; plan again")
        embedded[digest] = base64.b64encode(data).decode()
    doc = {
        "format": FORMAT,
        "bpfman_version": __version__,
        "bpffs_root": plan.bpffs_root,
        "fingerprint": fp,
        "source": redact(plan.source),  # already redacted at the source; a stored file: again
        "revision": plan.revision,
        "destroy": plan.destroy,
        "dispatching": plan.dispatching,
        # Narrowed by --target/--exclude: apply keeps the records it has no change for. Absent
        # in files from before it was saved (they load as untargeted, as they were applied).
        "targeted": plan.targeted,
        "errors": list(plan.errors),
        "unselected": [list(u) for u in plan.unselected],
        "skipped": [list(s) for s in plan.skipped],
        "orphans": [list(o) for o in plan.orphans],
        "drift": [d.to_json() for d in plan.drift],
        "changes": changes,
        "objects": embedded,
    }
    fd, tmp = tempfile.mkstemp(prefix=".plan-", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.chmod(tmp, 0o600)  # a plan names what runs where
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path, objects_dir: Path) -> tuple[Plan, str]:
    """The plan and its fingerprint; its bytecode is written into ``objects_dir``.

    The file is read as :mod:`reconciler.files` reads anything named on the command line: a
    regular file only, never blocking, at most ``MAX_PLAN_SIZE`` bytes."""
    try:
        doc = json.loads(read_regular(path, MAX_PLAN_SIZE))
    except NotReadable as e:
        raise PlanFileError(f"cannot read saved plan {path}: it {e}") from None
    except OSError as e:
        raise PlanFileError(f"cannot read saved plan {path}: {e.strerror or e}") from None
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested beyond reason
        raise PlanFileError(
            f"{path} is not a bpfman plan file (it is not JSON); make one with "
            "`bpfman plan --out FILE`"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise PlanFileError(
            f"{path} is not a bpfman plan file (format {FORMAT}); make one with "
            "`bpfman plan --out FILE`"
        )
    try:
        for digest, data in doc["objects"].items():
            blob = base64.b64decode(data)
            if "sha256:" + hashlib.sha256(blob).hexdigest() != digest:
                raise PlanFileError(f"{path}: embedded bytecode {digest} is corrupt")
            (objects_dir / (digest.split(":")[-1] + ".o")).write_bytes(blob)
        plan = Plan(
            changes=tuple(_change(c, objects_dir) for c in doc["changes"]),
            errors=tuple(doc["errors"]),
            source=doc["source"],
            revision=doc["revision"],
            bpffs_root=doc["bpffs_root"],
            destroy=doc["destroy"],
            dispatching=doc["dispatching"],
            targeted=bool(doc.get("targeted", False)),
            unselected=tuple(Unselected(*u) for u in doc["unselected"]),
            skipped=tuple((str(w), int(n)) for w, n in doc.get("skipped", [])),
            orphans=tuple(Orphan(str(a), str(o)) for a, o in doc.get("orphans", [])),
            drift=tuple(Drift(d["address"], d["change"]) for d in doc["drift"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise PlanFileError(f"{path} is damaged ({e!r}); make it again") from None
    return plan, doc["fingerprint"]
