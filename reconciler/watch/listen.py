"""``HOST:PORT`` for the watcher's listeners (webhooks, metrics): one parser, one set of
messages. Loopback unless a host is given; port 0 means any free port."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

DEFAULT_HOST = "127.0.0.1"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_LISTEN_FORMS = "expected HOST:PORT, :PORT or PORT, e.g. 127.0.0.1:9000 or [::1]:9000"


def parse_listen(text: str, error: type[ValueError] = ValueError) -> tuple[str, int]:
    """``(host, port)`` from ``HOST:PORT``, ``[IPV6]:PORT``, ``:PORT`` or ``PORT`` (host
    127.0.0.1 when left out). Port 0 means any free port. ``error`` (a ValueError) when ``text`` is
    none of these."""

    def bad(why: str) -> ValueError:
        return error(f"listen address {text!r}: {why} ({_LISTEN_FORMS})")

    s = text.strip()
    if not s:
        raise bad("empty")
    if "/" in s:
        raise bad("a URL is not an address")
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise bad("no ']' closes the IPv6 address")
        host, rest = s[1:end], s[end + 1 :]
        if not rest.startswith(":"):
            raise bad("a port must follow ']' as ':PORT'")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"{host!r} is not an IPv6 address") from None
    elif s.count(":") > 1:
        raise bad("an IPv6 address needs brackets")
    elif ":" in s:
        host, port_text = s.split(":")
        host = host or DEFAULT_HOST
        _check_host(host, bad)
    else:
        host, port_text = DEFAULT_HOST, s
    if not (port_text.isascii() and port_text.isdigit()):
        raise bad(f"the port {port_text!r} is not a number" if port_text else "no port")
    port = int(port_text)
    if port > 65535:
        raise bad(f"the port {port} is over 65535")
    return host, port


def _check_host(host: str, bad: Callable[[str], ValueError]) -> None:
    if re.fullmatch(r"[0-9.]+", host):
        # Digits and dots would pass as a host name, yet are meant as an IPv4 address.
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise bad(f"{host!r} is not an IPv4 address") from None
    elif not _HOSTNAME.fullmatch(host):
        raise bad(f"{host!r} is not a host name or IP address")
