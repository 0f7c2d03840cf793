"""What XDP, TCX and TC programs share: an interface selector, optionally in a network namespace
(named by path, or the namespaces of the pods a container selector names), and the host checks
that the namespace and the interface exist."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from reconciler.kinds.containers import container_selector, pod_index
from reconciler.kinds.record import FieldPath, HostQuery, IndexPart, LinkValues, Resolver, Values

# Where `ip netns add NAME` bind-mounts named namespaces (as reconciler.kernel.netns knows too; not
# imported from there, which would load libc through ctypes just to expand manifests).
NAMED_NETNS_DIR = "/run/netns"
IFNAME_MAX = 15  # IFNAMSIZ - 1: the longest interface name Linux accepts


def netns_index(netns: str | None, ifname: str) -> str:
    """``eth0``; in a namespace ``ip netns`` named, ``blue:eth0`` (for /run/netns/blue); in any
    other namespace, its path: ``/proc/42/ns/net:eth0``. Interface names never hold ':' or '/',
    so the index is unambiguous."""
    if netns is None:
        return ifname
    parent, name = os.path.split(netns)
    return f"{name if parent == NAMED_NETNS_DIR else netns}:{ifname}"


def normal_netns(values: Values) -> str | None:
    return os.path.normpath(values["netns"]) if values["netns"] else None


def legacy_selector(spec: dict[str, Any], at: FieldPath) -> LinkValues:
    """The values every network kind's legacy spec has (lowercase fields)."""
    selector = spec["interfaceselector"]
    values: Values = {
        "interfaces": selector.get("interfaces"),
        "primary": bool(selector.get("primarynodeinterface")),
        "discovery": None,
        "netns": spec.get("netns"),
        "priority": spec["priority"],
        "containers": container_selector(spec.get("containers"), "containernames"),
    }
    fields = {
        "selector": (*at, "interfaceselector"),
        "primary": (*at, "interfaceselector", "primarynodeinterface"),
        "netns": (*at, "netns"),
        "containers": (*at, "containers"),
    }
    return LinkValues(values, fields)


def app_selector(link: dict[str, Any], path: FieldPath) -> LinkValues:
    """The values every network link of an application has (camelCase fields)."""
    selector = link["interfaceSelector"]
    discovery = selector.get("interfacesDiscoveryConfig")
    values: Values = {
        "interfaces": selector.get("interfaces"),
        "primary": bool(selector.get("primaryNodeInterface")),
        "discovery": (
            {
                "allowed": list(discovery.get("allowedInterfaces") or []),
                "exclude": list(discovery["excludeInterfaces"]),
            }
            if discovery is not None
            else None
        ),
        "netns": link.get("netnsPath"),
        "priority": link["priority"],
        "containers": container_selector(link.get("networkNamespaces"), None),
    }
    fields = {
        "selector": (*path, "interfaceSelector"),
        "primary": (*path, "interfaceSelector", "primaryNodeInterface"),
        "discovery": (*path, "interfaceSelector", "interfacesDiscoveryConfig"),
        "netns": (*path, "netnsPath"),
        "containers": (*path, "networkNamespaces"),
    }
    return LinkValues(values, fields)


def with_values(base: LinkValues, **more: Any) -> LinkValues:
    return LinkValues({**base.values, **more}, base.fields)


def namespaces(values: Values, host: Resolver) -> list[tuple[str | None, str | None]]:
    """Where the link attaches: (the network namespace's path, the pod ``NAMESPACE/POD`` that
    names it in addresses, if selected through the container runtime). A pod's containers
    share one namespace, so each selected pod is one namespace (its first container's)."""
    if values.get("containers") is None:
        return [(normal_netns(values), None)]
    pods: dict[str, str] = {}
    for container in host.containers(values["containers"]):
        pods.setdefault(pod_index(container), container["netns"])
    return [(netns, pod) for pod, netns in pods.items()]


def point_index(netns: str | None, pod: str | None, ifname: str) -> str:
    """``NAMESPACE/POD:eth0`` in a selected pod's namespace, else :func:`netns_index`."""
    return f"{pod}:{ifname}" if pod is not None else netns_index(netns, ifname)


def hook_index(values: Values, index: str) -> str:
    """A TC or TCX link's index: in an application, with its direction (``eth0/ingress``), since
    one program may have links in both directions of one interface (as bpfman-operator's samples
    do); a program kind has one direction, so its index stays the interface."""
    return f"{index}/{values['direction']}" if values.get("per_direction") else index


def hook_index_parts(values: Values, stored_length: Callable[[str], int]) -> list[IndexPart]:
    return [
        dataclasses.replace(p, index=hook_index(values, p.index))
        for p in index_parts(values, stored_length)
    ]


def link_rules(values: Values, in_application: bool) -> list[tuple[str | None, str]]:
    """A container selector names the namespaces itself."""
    selector = values.get("containers")
    if selector is None:
        return []
    written = "networkNamespaces" if in_application else "containers"
    netns = "netnsPath" if in_application else "netns"
    if values["netns"]:
        return [("containers", f"set {netns} or {written}, not both: each names the namespace")]
    if values["primary"]:
        return [
            (
                "primary",
                "the primary interface is the host's default route interface, which is not in "
                f"the network namespaces {written} selects; name the interfaces",
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


def static_count(values: Values) -> int | None:
    if values["discovery"] is not None or values.get("containers") is not None:
        return None
    return len(values["interfaces"]) if values["interfaces"] is not None else 1


def index_parts(values: Values, stored_length: Callable[[str], int]) -> list[IndexPart]:
    """Interfaces found on the host are assumed as long as Linux allows."""
    netns = normal_netns(values)
    names = values["interfaces"] if values["interfaces"] is not None else ["x" * IFNAME_MAX]
    if values.get("containers") is not None:
        # The pod's name is the host's; only the namespace is known here.
        namespace = values["containers"]["namespace"] or ""
        what = "the namespace or the interface name"
        return [IndexPart(f"{namespace}/:{ifname}", "containers", None, what) for ifname in names]
    if netns is None:
        return [IndexPart(ifname, "selector", None, "the interface name") for ifname in names]
    what = (
        f"the network namespace path (a namespace under {NAMED_NETNS_DIR} is named by its file "
        "name alone)"
    )
    return [IndexPart(netns_index(netns, ifname), "netns", None, what) for ifname in names]


def interface_present(point: Any, q: HostQuery) -> list[str]:
    """The network namespace and the interface exist (``point`` has ifname and netns)."""
    if point.netns and not os.path.exists(point.netns):
        return [
            f"network namespace {point.netns} does not exist; create it first (e.g. "
            "`ip netns add NAME` for /run/netns/NAME) or fix the netns path"
        ]
    if not q.kernel.interface_exists(point.ifname, point.netns):
        names = ", ".join(sorted(q.kernel.interfaces(point.netns)))
        return [
            f"interface {point.ifname!r} does not exist on this host "
            f"(interfaces: {names}); fix spec.interfaceselector or create the interface"
        ]
    return []
