"""podman's REST API (libpod, v4) over its unix socket: list the running containers, inspect
each for its process and network namespace, and follow containers starting and stopping (the
events endpoint, streaming). Only the standard library: one short HTTP/1.1 request per
connection, as ``curl --unix-socket`` makes it; the event stream is one long response read
without blocking (:mod:`reconciler.containers.stream`).
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from collections.abc import Iterable
from typing import Any

from reconciler.containers.model import (
    CONTAINER_LABEL,
    EVENT_ACTIONS,
    NAMESPACE_LABEL,
    POD_LABEL,
    Container,
    ContainerEvent,
    RuntimeUnreachable,
)
from reconciler.containers.stream import ResponseReader, StreamError

API = "/v4.0.0/libpod"
TIMEOUT = 10.0  # seconds per request: a hung service must not hang a plan
MAX_ANSWER = 64 * 1024 * 1024  # a listing of thousands of containers is a few MiB
CONNECT_TIMEOUT = 2.0  # the event stream's connect and request; its reading never blocks


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)  # Host: localhost, as podman's clients
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Podman:
    """``Podman("/run/podman/podman.sock").running("shop")``."""

    name = "podman"

    def __init__(self, socket_path: str, timeout: float = TIMEOUT) -> None:
        self.socket = socket_path
        self.timeout = timeout

    def running(self, namespace: str | None) -> list[Container]:
        label = NAMESPACE_LABEL if namespace is None else f"{NAMESPACE_LABEL}={namespace}"
        filters = json.dumps({"status": ["running"], "label": [label]})
        listed = self._get(f"/containers/json?filters={urllib.parse.quote(filters)}")
        if not isinstance(listed, list):
            raise self._unreachable("the container list is not a JSON list")
        out = []
        for entry in listed:
            if not isinstance(entry, dict) or entry.get("IsInfra"):
                continue  # a pod's infra container only holds its namespaces
            container = self._inspect(entry)
            if container is not None:
                out.append(container)
        return out

    def events(self, namespaces: Iterable[str] | None) -> PodmanEvents:
        """Subscribe to containers starting and stopping; see Runtime.events."""
        return PodmanEvents(self.socket, namespaces)

    def _inspect(self, entry: dict[str, Any]) -> Container | None:
        """The listed container with its process and network namespace; None when it stopped
        since it was listed."""
        cid = str(entry.get("Id") or "")
        details = self._get(f"/containers/{urllib.parse.quote(cid)}/json", missing_ok=True)
        if not isinstance(details, dict):
            return None
        state = details.get("State") or {}
        pid = state.get("Pid")
        if not state.get("Running") or not isinstance(pid, int) or pid <= 0:
            return None
        labels = {
            str(k): str(v) for k, v in ((details.get("Config") or {}).get("Labels") or {}).items()
        }
        names = entry.get("Names") or [details.get("Name") or cid[:12]]
        own_name = str(names[0]).lstrip("/")
        pod = labels.get(POD_LABEL) or str(entry.get("PodName") or "") or own_name
        # With network none (or the host's network) there is no sandbox path; the process's own
        # link reaches the namespace it runs in either way.
        netns = str((details.get("NetworkSettings") or {}).get("SandboxKey") or "")
        return Container(
            id=cid,
            namespace=labels.get(NAMESPACE_LABEL, ""),
            pod=pod,
            name=labels.get(CONTAINER_LABEL) or own_name,
            pod_labels=labels,
            pid=pid,
            netns=netns or f"/proc/{pid}/ns/net",
        )

    def _get(self, path: str, missing_ok: bool = False) -> Any:
        conn = _UnixConnection(self.socket, self.timeout)
        try:
            conn.request("GET", API + path)
            response = conn.getresponse()
            body = response.read(MAX_ANSWER + 1)
        except FileNotFoundError:
            raise self._unreachable("the socket does not exist") from None
        except ConnectionRefusedError:
            raise self._unreachable("nothing listens on the socket") from None
        except PermissionError:
            raise self._unreachable("permission denied (run bpfman as root)") from None
        except TimeoutError:
            raise self._unreachable(f"no answer within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as e:
            raise self._unreachable(str(e) or type(e).__name__) from None
        finally:
            conn.close()
        if missing_ok and response.status == 404:
            return None
        if len(body) > MAX_ANSWER:
            raise self._unreachable(f"an answer over {MAX_ANSWER} bytes")
        if response.status != 200:
            raise self._unreachable(
                f"GET {API + path} answered HTTP {response.status}: {_said(body)}"
            )
        try:
            return json.loads(body)
        except ValueError:
            raise self._unreachable(f"GET {API + path} did not answer JSON") from None

    def _unreachable(self, reason: str) -> RuntimeUnreachable:
        return RuntimeUnreachable(self.name, self.socket, reason)


class PodmanEvents:
    """``GET /libpod/events?stream=true``, filtered to container EVENT_ACTIONS: one response
    that lasts as long as the service, one JSON object a line. podman sends its headers at
    once, so ``ready`` means the service is listening for events on our behalf.

    podman 4 ANDs every filter, several values of one key included, so the label filter is
    sent only for one namespace; the events are filtered here as well, by their labels (an
    event's ``Actor.Attributes`` holds the container's labels).
    """

    name = "podman"

    def __init__(self, socket_path: str, namespaces: Iterable[str] | None) -> None:
        self.socket = socket_path
        self.namespaces = None if namespaces is None else frozenset(namespaces)
        filters: dict[str, list[str]] = {"type": ["container"], "event": list(EVENT_ACTIONS)}
        if self.namespaces is not None and len(self.namespaces) == 1:
            (only,) = self.namespaces
            filters["label"] = [f"{NAMESPACE_LABEL}={only}"]
        self.path = f"{API}/events?stream=true&filters={urllib.parse.quote(json.dumps(filters))}"
        self._reader = ResponseReader()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(self.socket)
            sock.sendall(f"GET {self.path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        except FileNotFoundError:
            sock.close()
            raise self._unreachable("the socket does not exist") from None
        except ConnectionRefusedError:
            sock.close()
            raise self._unreachable("nothing listens on the socket") from None
        except PermissionError:
            sock.close()
            raise self._unreachable("permission denied (run bpfman as root)") from None
        except TimeoutError:
            sock.close()
            raise self._unreachable(f"no answer within {CONNECT_TIMEOUT:g} s") from None
        except OSError as e:
            sock.close()
            raise self._unreachable(str(e) or type(e).__name__) from None
        sock.setblocking(False)
        self._sock: socket.socket | None = sock

    @property
    def ready(self) -> bool:
        return self._reader.status == 200

    def fileno(self) -> int:
        return -1 if self._sock is None else self._sock.fileno()

    def read(self) -> list[ContainerEvent]:
        if self._sock is None:
            raise self._unreachable("the event stream is closed")
        lines: list[bytes] = []
        try:
            while True:
                try:
                    data = self._sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                if not data:
                    raise self._unreachable("the event stream ended (the service stopped?)")
                lines += self._reader.feed(data)
                status = self._reader.status
                if status is not None and status != 200:
                    said = _said(b"\n".join(lines) or self._reader.pending())
                    raise self._unreachable(f"GET {self.path} answered HTTP {status}: {said}")
                if self._reader.ended:
                    raise self._unreachable("the event stream ended")
        except StreamError as e:
            self.close()
            raise self._unreachable(f"the event stream is not podman's: {e}") from None
        except RuntimeUnreachable:
            self.close()
            raise
        except OSError as e:
            self.close()
            raise self._unreachable(f"the event stream broke: {e.strerror or e}") from None
        out = []
        for line in lines:
            event = self._event(line)
            if event is not None:
                out.append(event)
        return out

    def _event(self, line: bytes) -> ContainerEvent | None:
        try:
            doc = json.loads(line)
        except ValueError:
            return None  # not an event; the stream goes on
        if not isinstance(doc, dict) or doc.get("Type") != "container":
            return None
        action = doc.get("Action") or doc.get("status")
        actor: dict[str, Any] = _mapping(doc.get("Actor"))
        labels: dict[str, Any] = _mapping(actor.get("Attributes"))
        namespace = labels.get(NAMESPACE_LABEL)
        if action not in EVENT_ACTIONS or not isinstance(namespace, str):
            return None  # never selected: not a pod's container
        if self.namespaces is not None and namespace not in self.namespaces:
            return None
        cid = str(actor.get("ID") or doc.get("id") or "")
        own_name = str(labels.get("name") or cid[:12])
        return ContainerEvent(
            action=action,
            id=cid,
            namespace=namespace,
            pod=str(labels.get(POD_LABEL) or own_name),
            name=str(labels.get(CONTAINER_LABEL) or own_name),
        )

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _unreachable(self, reason: str) -> RuntimeUnreachable:
        return RuntimeUnreachable(self.name, self.socket, reason)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _said(body: bytes) -> str:
    """The message of an error answer (libpod's {"cause", "message", "response"})."""
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    text = message if isinstance(message, str) else body[:200].decode("utf-8", "replace")
    return text.strip() or "(no message)"
