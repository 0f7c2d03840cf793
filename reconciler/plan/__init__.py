"""Plans: diff desired against observed, render them, (later) save and load them."""

from reconciler.plan import drift
from reconciler.plan.diff import build_plan
from reconciler.plan.value import Action, Plan, ResourceChange

__all__ = ["Action", "Plan", "ResourceChange", "build_plan", "drift"]
