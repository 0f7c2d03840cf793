"""The values the runtime clients return and the selection takes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from reconciler.values import frozen

# The labels the kubelet puts on every container it runs through CRI (and that plain podman
# containers can be given by hand, --label KEY=VALUE).
NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
POD_LABEL = "io.kubernetes.pod.name"
CONTAINER_LABEL = "io.kubernetes.container.name"

RUNTIMES = ("podman",)
DEFAULT_RUNTIME = "podman"
DEFAULT_SOCKETS = {"podman": "/run/podman/podman.sock"}  # where podman.socket listens as root


class RuntimeUnreachable(Exception):
    """The runtime's API did not answer (no socket, nobody listening, not its API). The message
    names the socket and what failed; the caller adds what to do."""

    def __init__(self, runtime: str, socket: str, reason: str) -> None:
        super().__init__(f"cannot reach the {runtime} API at unix://{socket}: {reason}")
        self.runtime = runtime
        self.socket = socket
        self.reason = reason


@frozen
class RuntimeConfig:
    """The host config's ``containers:`` section."""

    runtime: str = DEFAULT_RUNTIME
    socket: str = DEFAULT_SOCKETS[DEFAULT_RUNTIME]


@frozen
class Container:
    """One running container. ``namespace``, ``pod`` and ``name`` are the Kubernetes names (the
    labels above; a plain podman container without POD_LABEL/CONTAINER_LABEL is named by its
    podman pod, else itself); ``pod_labels`` are what a ``pods`` selector is matched against."""

    id: str
    namespace: str
    pod: str
    name: str
    pod_labels: dict[str, str]
    pid: int
    netns: str  # a path that opens its network namespace

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "namespace": self.namespace,
            "pod": self.pod,
            "container": self.name,
            "pid": self.pid,
            "netns": self.netns,
        }


@frozen
class Selector:
    """``namespace`` (None: every namespace), ``pods`` (a label selector, as written; {} or None
    selects every pod) and ``names`` (None: every container of the pods)."""

    namespace: str | None
    pods: dict[str, Any] | None = None
    names: tuple[str, ...] | None = None


# What a container doing one of these can change in a plan: a selected container appearing,
# going, or (stopped and started again) getting a new process.
EVENT_ACTIONS = ("start", "stop", "died", "remove")
_PAST = {"start": "started", "stop": "stopped", "died": "exited", "remove": "removed"}


@frozen
class ContainerEvent:
    """A container of a Kubernetes namespace started, stopped, exited or was removed."""

    action: str  # one of EVENT_ACTIONS
    id: str
    namespace: str
    pod: str
    name: str

    def describe(self) -> str:
        """``container shop/web-2/app started``: the reason a reconcile gives."""
        did = _PAST.get(self.action, self.action)
        return f"container {self.namespace}/{self.pod}/{self.name} {did}"


class EventStream(Protocol):
    """One subscription to a runtime's container events, read without blocking: poll
    ``fileno()`` for input, then ``read()``. ``ready`` turns true once the runtime accepted
    the subscription (events from then on are delivered)."""

    @property
    def ready(self) -> bool: ...

    def fileno(self) -> int: ...

    def read(self) -> list[ContainerEvent]:
        """The events received so far. Raises RuntimeUnreachable when the stream ended or
        broke (then it is closed)."""
        ...

    def close(self) -> None: ...


class Runtime(Protocol):
    socket: str

    def running(self, namespace: str | None) -> list[Container]:
        """The running containers labelled with NAMESPACE_LABEL (equal to ``namespace`` when
        given). Raises RuntimeUnreachable."""
        ...

    def events(self, namespaces: Iterable[str] | None) -> EventStream:
        """Subscribe to EVENT_ACTIONS of containers labelled with NAMESPACE_LABEL (one of
        ``namespaces`` when given). Raises RuntimeUnreachable when the runtime cannot be
        reached; the subscription is then confirmed asynchronously (``ready``)."""
        ...


def connect(config: RuntimeConfig) -> Runtime:
    """A client of the configured runtime (nothing is asked until ``running``)."""
    if config.runtime == "podman":
        from reconciler.containers.podman import Podman

        return Podman(config.socket)
    raise ValueError(f"unknown container runtime {config.runtime!r}")  # the schema allows podman
