"""Kubernetes label selectors: ``nodeselector`` against the host's labels, and
``mapownerselector`` against other manifests' ``metadata.labels``.

The syntax (keys, values, operators, In/NotIn need values, Exists/DoesNotExist take none) is
checked by the schema; this module only evaluates a schema-valid selector, with the same meaning
as ``metav1.LabelSelector``: every ``matchLabels`` entry and every ``matchExpressions``
requirement must hold, and an empty selector matches everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.values import frozen


@frozen
class Requirement:
    key: str
    operator: str  # "=" (a matchLabels entry), In, NotIn, Exists, DoesNotExist
    values: tuple[str, ...] = ()

    def failure(self, labels: Mapping[str, str]) -> str | None:
        """Why ``labels`` do not satisfy this requirement, or None when they do."""
        value = labels.get(self.key)
        shown = f'"{value}"' if value is not None else None
        values = "[" + ", ".join(self.values) + "]"
        if self.operator == "=":
            want = f'"{self.values[0]}"'
            if value is None:
                return f"label {self.key} is not set (needs {want})"
            return None if value == self.values[0] else f"label {self.key} is {shown}, not {want}"
        if self.operator == "In":
            if value is None:
                return f"label {self.key} is not set (needs one of {values})"
            return None if value in self.values else f"label {self.key} is {shown}, not in {values}"
        if self.operator == "NotIn":
            if value is not None and value in self.values:
                return f"label {self.key} is {shown}, which NotIn {values} excludes"
            return None
        if self.operator == "Exists":
            return None if value is not None else f"label {self.key} is not set (Exists needs it)"
        if self.operator == "DoesNotExist":
            if value is None:
                return None
            return f"label {self.key} is {shown} (DoesNotExist needs it unset)"
        raise ValueError(f"unknown selector operator {self.operator!r}")  # the schema allows 4

    def __str__(self) -> str:
        if self.operator == "=":
            return f"{self.key}={self.values[0]}"
        if self.operator == "Exists":
            return self.key
        if self.operator == "DoesNotExist":
            return f"!{self.key}"
        return f"{self.key} {self.operator.lower()} ({','.join(self.values)})"


@frozen
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, data: Mapping[str, Any] | None) -> LabelSelector:
        """From a schema-valid ``{matchLabels: ..., matchExpressions: [...]}`` (None: empty)."""
        if not data:
            return cls()
        requirements = [
            Requirement(key, "=", (value,))
            for key, value in (data.get("matchLabels") or {}).items()
        ]
        for expression in data.get("matchExpressions") or []:
            values = tuple(expression.get("values") or ())
            requirements.append(Requirement(expression["key"], expression["operator"], values))
        return cls(tuple(requirements))

    @property
    def empty(self) -> bool:
        return not self.requirements

    def failures(self, labels: Mapping[str, str]) -> list[str]:
        """Every requirement ``labels`` fail, in words; empty when the selector matches."""
        return [f for r in self.requirements if (f := r.failure(labels)) is not None]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return not self.failures(labels)

    def __str__(self) -> str:
        """Kubernetes' string form, e.g. ``app=web,tier in (a,b),!legacy``."""
        return ",".join(str(r) for r in self.requirements) or "(everything)"
