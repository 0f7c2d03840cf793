"""Image references, parsed as container tools parse them.

``[registry[:port]/]path[:tag][@sha256:<64 hex>]``: the first path component is a registry when
it has a ``.`` or a ``:`` or is ``localhost``; otherwise the registry is Docker Hub (``docker.io``,
where a one-component path is under ``library/``). Without a tag or a digest the tag is
``latest``. Anything else is refused with the rule it breaks, so that a typo is never resolved
to some other image.
"""

from __future__ import annotations

import re

from reconciler.images.errors import ImageError
from reconciler.values import frozen

DOCKER_HUB = "docker.io"
# Docker Hub's registry API lives on another host than its name.
DOCKER_HUB_API = "registry-1.docker.io"
MAX_NAME = 255  # the distribution spec's bound on a repository name, registry included

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


@frozen
class Reference:
    registry: str  # host[:port] as written (docker.io for Docker Hub)
    repository: str  # path inside the registry, e.g. bpfman-bytecode/go-xdp-counter
    tag: str | None  # None when only a digest was given
    digest: str | None  # sha256:<hex> when pinned

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag is not None else ""
        digest = f"@{self.digest}" if self.digest is not None else ""
        return f"{self.registry}/{self.repository}{tag}{digest}"

    @property
    def name(self) -> str:
        """registry/repository, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def lookup(self) -> str:
        """What to ask the registry's manifest endpoint for: the digest when pinned."""
        return self.digest or self.tag or "latest"

    def pinned(self, digest: str) -> Reference:
        """The same image by digest (the tag kept for the reader)."""
        return Reference(self.registry, self.repository, self.tag, digest)


def parse(text: str) -> Reference:
    """Parse ``text``; ImageError says which part is wrong and what a reference looks like."""
    example = "e.g. quay.io/bpfman-bytecode/xdp-pass:latest or registry:5000/prog@sha256:<64 hex>"
    if not isinstance(text, str) or not text or text != text.strip():
        raise ImageError(f"image reference {text!r} is empty or has spaces around it; {example}")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not DIGEST.fullmatch(digest):
            raise ImageError(
                f"image reference {text!r}: digest {digest!r} is not sha256: and 64 lowercase "
                f"hex digits; {example}"
            )
    registry = DOCKER_HUB
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        if not _HOST.fullmatch(first):
            raise ImageError(f"image reference {text!r}: {first!r} is not a registry host[:port]")
        port = first.rpartition(":")[2] if not first.endswith("]") else ""
        if ":" in first and port.isdigit() and not 0 < int(port) < 65536:
            raise ImageError(
                f"image reference {text!r}: port {port} of {first!r} is not between 1 and 65535"
            )
        registry, rest = first, remainder
    tag = None
    if ":" in rest.rsplit("/", 1)[-1]:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise ImageError(
                f"image reference {text!r}: tag {tag!r} must be 1 to 128 letters, digits, '_', "
                f"'.' or '-', not starting with '.' or '-'; {example}"
            )
    if not _PATH.fullmatch(rest):
        raise ImageError(
            f"image reference {text!r}: repository {rest!r} must be lowercase path components "
            f"of letters and digits separated by '.', '_', '__' or '-', joined by '/'; {example}"
        )
    if registry == DOCKER_HUB and "/" not in rest:
        rest = f"library/{rest}"
    if len(f"{registry}/{rest}") > MAX_NAME:
        raise ImageError(f"image reference {text!r}: the name is over {MAX_NAME} characters")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, rest, tag, digest)
