#!/usr/bin/env python3
"""Write this Kubernetes node's labels as a bpfman labels file, and keep it current.

The downward API gives a pod its node's *name* (spec.nodeName) but not the node's labels, and
bpfman's nodeselector wants the labels. So this reads the Node object from the API server with
the pod's service account (RBAC: `get` on `nodes`, see rbac.yaml) and writes every label to
PATH as the flat YAML mapping `bpfman --labels-file PATH` reads (docs/manifests.md, "The labels
file"). Keys and values are written as JSON strings, which are YAML strings too, so a label value
such as "true" or "1" stays a string.

The watcher reads the labels file again at every reconcile, so with --every the node's labels
reach node selection within one --interval of `kubectl label node ...` without a restart.

The file is replaced atomically (temp file + fsync + rename in its directory), and only when
the labels changed. A failed read of the Node (API server restart, RBAC missing) keeps the last
good file and is retried; the first read is retried until it succeeds, so the watcher, which
waits for the file (a startupProbe), never starts with no labels at all.

Standard library only: it runs with the image's Python, before and beside the watcher.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def api_server() -> str:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise SystemExit(
            "bpfman-node-labels: KUBERNETES_SERVICE_HOST is not set (not in a pod?); "
            "give --api-server"
        )
    if ":" in host:  # an IPv6 service address
        host = f"[{host}]"
    return f"https://{host}:{port}"


def read_node_labels(server: str, node: str, token_file: Path, ca_file: Path) -> dict[str, str]:
    """The labels of Node ``node``. The token is read at each call: kubelet rotates it."""
    url = f"{server.rstrip('/')}/api/v1/nodes/{urllib.parse.quote(node, safe='')}"
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    token = token_file.read_text().strip()
    request.add_header("Authorization", f"Bearer {token}")
    context = ssl.create_default_context(cafile=str(ca_file))
    with urllib.request.urlopen(request, timeout=30, context=context) as response:
        node_object = json.load(response)
    labels = node_object.get("metadata", {}).get("labels") or {}
    if not isinstance(labels, dict):
        raise ValueError(f"node {node}: metadata.labels is not a mapping")
    return {str(k): str(v) for k, v in labels.items()}


def render(node: str, labels: dict[str, str]) -> str:
    lines = [f"# Labels of Kubernetes node {node}, written by bpfman-node-labels."]
    lines += [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(labels.items())]
    return "\n".join(lines) + "\n"


def write_if_changed(path: Path, text: str) -> bool:
    """Atomically replace ``path`` with ``text`` unless it already holds it."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".labels-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return True


def log(message: str) -> None:
    print(f"bpfman-node-labels: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bpfman-node-labels", description=__doc__.split("\n")[0])
    p.add_argument("--node", default=os.environ.get("NODE_NAME"), help="default: $NODE_NAME")
    p.add_argument("--out", required=True, type=Path, help="the labels file to write")
    p.add_argument(
        "--every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="read the node again every SECONDS and rewrite the file when its labels change "
        "(default: once, then exit)",
    )
    p.add_argument("--api-server", help="default: https://$KUBERNETES_SERVICE_HOST:PORT")
    p.add_argument("--token-file", type=Path, default=SA_DIR / "token")
    p.add_argument("--ca-file", type=Path, default=SA_DIR / "ca.crt")
    args = p.parse_args(argv)
    if not args.node:
        p.error("--node or $NODE_NAME (fieldRef spec.nodeName) is required")
    server = args.api_server or api_server()
    delay = 1.0
    while True:
        try:
            labels = read_node_labels(server, args.node, args.token_file, args.ca_file)
        except (OSError, ValueError, urllib.error.URLError) as e:
            log(f"cannot read node {args.node} from {server}: {e}")
            if args.every <= 0:
                return 1
            # The last good file stays; the first read is retried until it succeeds.
            time.sleep(delay)
            delay = min(delay * 2, args.every)
            continue
        delay = 1.0
        if write_if_changed(args.out, render(args.node, labels)):
            log(f"wrote {len(labels)} labels of node {args.node} to {args.out}")
        if args.every <= 0:
            return 0
        time.sleep(args.every)


if __name__ == "__main__":
    sys.exit(main())
