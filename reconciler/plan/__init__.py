"""Plans: diff desired against observed into a Plan value (``value.py``), render it (text and
JSON), save and load it."""

from reconciler.plan import drift
from reconciler.plan.diff import build_plan
from reconciler.plan.drift import Drift
from reconciler.plan.value import Action, Orphan, Plan, ResourceChange, Unselected

__all__ = [
    "Action",
    "Drift",
    "Orphan",
    "Plan",
    "ResourceChange",
    "Unselected",
    "build_plan",
    "drift",
]
