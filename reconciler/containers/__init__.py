"""Containers on this host, as a container runtime's API reports them: which are running, the
Kubernetes names the kubelet labels them with, a process of each and its network namespace.

Manifests select containers the way bpfman-operator does (``containers: {namespace, pods,
containerNames}`` on uprobes, ``networkNamespaces: {namespace, pods}`` on network links); on a
host the runtime's own API answers instead of Kubernetes (docs/containers.md). Nothing here knows
manifests or the kernel: :mod:`reconciler.hostfacts` asks :func:`connect` for a runtime and
:func:`select` picks what a selector names.

    runtime = connect(RuntimeConfig("podman", "/run/podman/podman.sock"))
    chosen = select(runtime.running("shop"), Selector("shop", {"matchLabels": {"app": "web"}}))
    stream = runtime.events(["shop"])  # containers starting and stopping, for the watcher
"""

from __future__ import annotations

from reconciler.containers.model import (
    CONTAINER_LABEL,
    EVENT_ACTIONS,
    NAMESPACE_LABEL,
    POD_LABEL,
    Container,
    ContainerEvent,
    EventStream,
    Runtime,
    RuntimeConfig,
    RuntimeUnreachable,
    Selector,
    connect,
)
from reconciler.containers.select import select

__all__ = [
    "CONTAINER_LABEL",
    "EVENT_ACTIONS",
    "NAMESPACE_LABEL",
    "POD_LABEL",
    "Container",
    "ContainerEvent",
    "EventStream",
    "Runtime",
    "RuntimeConfig",
    "RuntimeUnreachable",
    "Selector",
    "connect",
    "select",
]
