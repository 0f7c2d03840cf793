"""Carry out a plan: exactly its changes, in its order, recording each success as it lands."""

from reconciler.apply.execute import ApplyFailed, Outcome, apply_plan, summary

__all__ = ["ApplyFailed", "Outcome", "apply_plan", "summary"]
