"""Container selectors as links carry them: bpfman-operator's ``containers: {namespace, pods,
containerNames}`` (uprobes; a legacy network program's ``containers``) and ``networkNamespaces:
{namespace, pods}`` (an application's network links), normalised to one value the host answers
(``Resolver.containers``), and how a selected container or pod is named in an address index."""

from __future__ import annotations

from typing import Any

from reconciler.kinds.record import Values

_SELECTOR_KEYS = ("namespace", "pods", "containernames", "containerNames")


def container_selector(written: dict[str, Any] | None, names_key: str | None) -> Values | None:
    """``{"namespace", "pods", "containerNames"}`` as HostFacts.containers takes it, or None
    when ``written`` selects nothing through the runtime (absent, or only the pid extension).
    An omitted or empty namespace is every namespace; omitted names are every container."""
    if not written or not any(key in written for key in _SELECTOR_KEYS):
        return None
    names = written.get(names_key) if names_key else None
    return {
        "namespace": written.get("namespace") or None,
        "pods": written.get("pods"),
        "containerNames": list(names) if names else None,
    }


def container_index(container: dict[str, Any]) -> str:
    """``NAMESPACE/POD/CONTAINER``: stable while the pod keeps its name, whatever its pid."""
    return f"{container['namespace']}/{container['pod']}/{container['container']}"


def pod_index(container: dict[str, Any]) -> str:
    """``NAMESPACE/POD``: a pod's containers share its network namespace."""
    return f"{container['namespace']}/{container['pod']}"


def selector_rules(v: Values, names_field: str) -> list[tuple[str | None, str]]:
    """What a uprobe's ``containers`` must not mix."""
    selector = v.get("containers")
    if selector is None:
        return []
    if v.get("container_pid") is not None:
        return [
            (
                "containers",
                "set either pid (a host extension: the container of one process) or "
                f"namespace, pods and {names_field} (containers chosen through the host's "
                "container runtime), not both",
            )
        ]
    if selector["pods"] is None:
        return [
            (
                "containers",
                "set pods, a label selector over the pods' labels, as bpfman-operator requires "
                "({} selects every pod of the namespace)",
            )
        ]
    return []
