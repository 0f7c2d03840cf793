"""Which containers a selector names, as bpfman-operator picks them from Kubernetes."""

from __future__ import annotations

from reconciler.containers.model import Container, Selector
from reconciler.spec.selector import LabelSelector


def select(containers: list[Container], selector: Selector) -> list[Container]:
    """The containers ``selector`` names, ordered by (namespace, pod, container, id) so that
    plans list them the same way every time."""
    pods = LabelSelector.parse(selector.pods)
    chosen = [
        c
        for c in containers
        if (selector.namespace is None or c.namespace == selector.namespace)
        and pods.matches(c.pod_labels)
        and (selector.names is None or c.name in selector.names)
    ]
    return sorted(chosen, key=lambda c: (c.namespace, c.pod, c.name, c.id))
