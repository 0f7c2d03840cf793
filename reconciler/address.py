"""Stable addresses of managed attachments, e.g. ``XdpProgram/xdp-counter[eth0]``.

An address names one desired attachment. It appears in plans, JSON output, ``--target`` and,
encoded, in the bpffs pin path, so it must round-trip through all of them unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ADDRESS = re.compile(
    r"^(?P<kind>[A-Za-z]+)/(?P<name>[a-z0-9]([-a-z0-9.]*[a-z0-9])?)\[(?P<index>.+)\]$"
)


def _encode(index: str) -> str:
    # bpffs entries cannot contain '/', and '%' must stay reversible.
    return index.replace("%", "%25").replace("/", "%2F")


def _decode(component: str) -> str:
    return component.replace("%2F", "/").replace("%25", "%")


@dataclass(frozen=True, order=True)
class Address:
    kind: str
    name: str
    index: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}[{self.index}]"

    @property
    def resource(self) -> str:
        """The manifest this attachment comes from, e.g. ``XdpProgram/xdp-counter``."""
        return f"{self.kind}/{self.name}"

    def pin_dir(self) -> str:
        """Directory of this attachment's pins, relative to the bpffs root."""
        return f"{self.kind}/{self.name}/{_encode(self.index)}"

    @classmethod
    def from_pin_dir(cls, rel: str) -> Address:
        parts = rel.strip("/").split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"not a managed pin directory: {rel!r}")
        return cls(parts[0], parts[1], _decode(parts[2]))

    @classmethod
    def parse(cls, text: str) -> Address:
        m = _ADDRESS.fullmatch(text.strip())
        if not m:
            raise ValueError(
                f"invalid address {text!r}: expected KIND/NAME[INDEX], "
                "e.g. XdpProgram/xdp-counter[eth0]"
            )
        return cls(m["kind"], m["name"], m["index"])

    def matches(self, pattern: str) -> bool:
        """``--target``: a full address, or ``KIND/NAME`` meaning all of its attachments."""
        return pattern in (str(self), self.resource)
