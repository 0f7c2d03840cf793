"""The machine-readable plan: a versioned document scripts can rely on.

``format_version`` changes its major number only when a field is removed or changes meaning.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler import __version__
from reconciler.errors import Diagnostic
from reconciler.plan.value import Plan

FORMAT_VERSION = "1.0"


def _attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if attributes is None else dict(attributes)


def plan_document(plan: Plan) -> dict[str, Any]:
    """A pure function of the plan: the same plan always gives the same document."""
    add, change, destroy = plan.counts()
    return {
        "format_version": FORMAT_VERSION,
        "bpfman_version": __version__,
        "source": plan.source,
        "revision": plan.revision,
        "bpffs_root": plan.bpffs_root,
        "destroy": plan.destroy,
        "resource_changes": [
            {
                "address": str(c.address),
                "kind": c.address.kind,
                "name": c.address.name,
                "index": c.address.index,
                "origin": c.origin,
                "change": {
                    "actions": c.action.terraform_actions,
                    "before": _attributes(c.before),
                    "after": _attributes(c.after),
                    "replace_paths": list(c.replace_paths),
                    "reason": c.reason,
                    "uses_maps_of": list(c.uses_maps_of),
                },
            }
            for c in plan.changes
        ],
        "resource_drift": [d.to_json() for d in plan.drift],
        "errors": list(plan.errors),
        # The errors again, each with its address, file and line when it has them.
        "diagnostics": [Diagnostic.parse(e).to_json() for e in plan.errors],
        "warnings": list(plan.warnings),
        "orphans": [{"address": a, "origin": o} for a, o in plan.orphans],
        "unselected": [
            {"resource": r, "origin": o, "reason": why} for r, o, why in plan.unselected
        ],
        "skipped_resources": dict(plan.skipped),
        "summary": {"add": add, "change": change, "destroy": destroy},
        "has_changes": plan.has_changes,
    }
