"""What expanding manifests needs to know about the host, as a protocol: the spec layer asks,
``reconciler.hostfacts.Host`` answers (from /proc, the host's files, netlink), tests pass a stub
(``tests/unit/spec_support.StubHost``). Both implement every method."""

from __future__ import annotations

from typing import Any, Protocol


class HostError(Exception):
    """A host fact cannot be learned (a network namespace that cannot be entered), or one of the
    host's own files is wrong. The message is one sentence naming what and why; expansion
    reports a fact's error as a problem of the manifest field that needed the fact.

    ``source`` names the host file at fault (e.g. ``the host config /etc/bpfman/config.yaml``)
    when the error is that file's, and ``problems`` lists each of its problems as
    ``FILE:LINE: FIELD: what and the fix``: such an error is not the manifests' fault and is
    reported under its own heading."""

    def __init__(
        self, message: str, *, source: str | None = None, problems: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.source = source
        self.problems = list(problems) if problems else [message]


class HostFacts(Protocol):
    """Every method may raise :class:`HostError`."""

    def labels(self) -> dict[str, str]:
        """This host's labels: built-ins (kubernetes.io/hostname, kubernetes.io/os,
        kubernetes.io/arch), then the labels file, then --label flags (later ones win)."""
        ...

    def primary_interface(self) -> str | None:
        """The interface of the default route, None when there is none."""
        ...

    def interfaces(self, netns: str | None = None) -> list[str]:
        """Interface names, in the network namespace at path ``netns`` if given."""
        ...

    def resolve_library(self, name: str, container_pid: int | None = None) -> str | None:
        """Where the dynamic loader would find library ``name`` (e.g. ``libc`` or
        ``libc.so.6``), inside ``container_pid``'s mount namespace if given; None if nowhere."""
        ...

    def xdp_mode(self, ifname: str, netns: str | None = None) -> str | None:
        """The XDP mode (auto, native, generic) the host's config sets for this interface,
        None when it sets none."""
        ...

    def bytecode_dirs(self) -> list[str] | None:
        """Directories outside the source that bytecode may be read from (absolute paths, from
        the host config's ``bytecode_dirs``; [] for none). None leaves bytecode unconfined,
        which only test doubles do."""
        ...

    def bytecode_image(self, url: str, policy: str, secret: str | None) -> dict[str, Any]:
        """The bytecode image ``url`` pulled by ``policy`` (Always, IfNotPresent, Never) with the
        pull secret named ``secret``, as plain JSON values: ``object`` (the path of its ELF
        object in the cache), ``digest`` (what the reference resolved to), ``platform`` and
        ``programs`` (its labels' program names and types)."""
        ...

    def containers(self, selector: dict[str, Any]) -> list[dict[str, Any]]:
        """The running containers a manifest's container selector names, through the container
        runtime of the host config: ``selector`` is ``{"namespace": str | None, "pods": a label
        selector | None, "containerNames": [str] | None}``; each container as ``{"id",
        "namespace", "pod", "container", "pid", "netns"}``, ordered by namespace, pod and
        container (docs/containers.md). HostError when the runtime cannot be reached."""
        ...
