"""podman's REST API (libpod, v4) over its unix socket: list the running containers, inspect
each for its process and network namespace. Only the standard library: one short HTTP/1.1
request per connection, as ``curl --unix-socket`` makes it.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from typing import Any

from reconciler.containers.model import (
    CONTAINER_LABEL,
    NAMESPACE_LABEL,
    POD_LABEL,
    Container,
    RuntimeUnreachable,
)

API = "/v4.0.0/libpod"
TIMEOUT = 10.0  # seconds per request: a hung service must not hang a plan
MAX_ANSWER = 64 * 1024 * 1024  # a listing of thousands of containers is a few MiB


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


def _said(body: bytes) -> str:
    """The message of an error answer (libpod's {"cause", "message", "response"})."""
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    text = message if isinstance(message, str) else body[:200].decode("utf-8", "replace")
    return text.strip() or "(no message)"
