"""Containers on this host, as a container runtime's API reports them: which are running, the
Kubernetes names the kubelet labels them with, a process of each and its network namespace.

Manifests select containers the way bpfman-operator does (``containers: {namespace, pods,
containerNames}`` on uprobes, ``networkNamespaces: {namespace, pods}`` on network links); on a
host the runtime's own API answers instead of Kubernetes (docs/containers.md). Nothing here knows
manifests or the kernel: :mod:`reconciler.hostfacts` asks :func:`connect` for a runtime and
:func:`select` picks what a selector names.

    runtime = connect(RuntimeConfig("podman", "/run/podman/podman.sock"))
    chosen = select(runtime.running("shop"), Selector("shop", {"matchLabels": {"app": "web"}}))
"""

from __future__ import annotations

from reconciler.containers.model import (
    CONTAINER_LABEL,
    NAMESPACE_LABEL,
    POD_LABEL,
    Container,
    Runtime,
    RuntimeConfig,
    RuntimeUnreachable,
    Selector,
    connect,
)
from reconciler.containers.select import select

__all__ = [
    "CONTAINER_LABEL",
    "NAMESPACE_LABEL",
    "POD_LABEL",
    "Container",
    "Runtime",
    "RuntimeConfig",
    "RuntimeUnreachable",
    "Selector",
    "connect",
    "select",
]
