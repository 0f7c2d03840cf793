"""The facts about this host that expanding manifests needs (:class:`reconciler.spec.HostFacts`):
its labels, its default-route interface, the interfaces of a network namespace, where the
dynamic loader would find a library, and which running containers a selector names (through
the container runtime's API, :mod:`reconciler.containers`).

    host = Host()                                        # /etc/bpfman/labels.yaml, if it exists
    host = Host(Path("labels.yaml"), {"zone": "b"})      # e.g. from --labels-file and --label
    state = load_desired(root, host)
"""

from __future__ import annotations

import glob
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reconciler import containers as runtimes
from reconciler import hostfiles
from reconciler.kernel.sys import netns as namespaces
from reconciler.kernel.types import KernelError
from reconciler.spec.host import HostError, HostFacts
from reconciler.values import frozen

DEFAULT_LABELS_FILE = Path("/etc/bpfman/labels.yaml")
DEFAULT_CONFIG_FILE = Path("/etc/bpfman/config.yaml")
XDP_MODES = ("auto", "native", "generic")

# Go's GOARCH names for uname's machine, as the kubelet sets kubernetes.io/arch.
GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i386": "386",
    "i486": "386",
    "i586": "386",
    "i686": "386",
    "armv6l": "arm",
    "armv7l": "arm",
    "armv8l": "arm",
    "ppc64le": "ppc64le",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "loongarch64": "loong64",
    "mips64": "mips64",
    "mips64el": "mips64le",
}
# Debian's multiarch directory names (/usr/lib/<triplet>), by uname's machine.
_TRIPLETS = {
    "x86_64": "x86_64-linux-gnu",
    "aarch64": "aarch64-linux-gnu",
    "i686": "i386-linux-gnu",
    "i386": "i386-linux-gnu",
    "armv7l": "arm-linux-gnueabihf",
    "ppc64le": "powerpc64le-linux-gnu",
    "s390x": "s390x-linux-gnu",
    "riscv64": "riscv64-linux-gnu",
    "loongarch64": "loongarch64-linux-gnu",
}
# ld.so.cache entries carry the ABI they are for (glibc's FLAG_*_LIB64 & co in the high byte of
# the flags); on these machines only entries for the native ABI are candidates.
_CACHE_ABI = {
    "x86_64": 0x0300,
    "aarch64": 0x0A00,
    "s390x": 0x0400,
    "ppc64le": 0x0500,
    "riscv64": 0x1000,
    "loongarch64": 0x1200,
}
_RTF_UP = 0x0001
_RTF_REJECT = 0x0200


class Host:
    """This host, as :class:`reconciler.spec.HostFacts`. Every fact is read when first asked."""

    def __init__(
        self,
        labels_file: Path | None = DEFAULT_LABELS_FILE,
        extra_labels: dict[str, str] | None = None,
        config_file: Path | None = DEFAULT_CONFIG_FILE,
        image_cache: Path | None = None,
    ) -> None:
        self.labels_file = labels_file
        self.extra_labels = dict(extra_labels or {})
        self.config_file = config_file
        # Where pulled images are kept unless the host config says otherwise (images.cache_dir).
        self.image_cache = image_cache
        self._labels: dict[str, str] | None = None
        self._config: hostfiles.HostConfig | None = None
        self._pullers: dict[str | None, Any] = {}
        self._running: dict[str | None, list[runtimes.Container]] = {}

    def config(self) -> hostfiles.HostConfig:
        """The host config file, read once (HostError when it is wrong)."""
        if self._config is None:
            self._config = (
                hostfiles.read_host_config(self.config_file)
                if self.config_file
                else hostfiles.HostConfig()
            )
        return self._config

    def bytecode_dirs(self) -> list[str]:
        """``bytecode_dirs`` of the host's config file: the directories absolute bytecode paths
        may name (none when the file or the key is missing)."""
        return list(self.config().bytecode_dirs)

    def bytecode_image(self, url: str, policy: str, secret: str | None) -> dict[str, Any]:
        """Pull (or find in the cache) the image ``url``; see HostFacts.bytecode_image."""
        from reconciler.images import ImageError, reference
        from reconciler.images.pull import Puller
        from reconciler.images.store import Store

        settings = self.config().images
        try:
            if secret is not None:
                settings = settings.with_secret(secret)
            puller = self._pullers.get(secret)
            if puller is None:
                root = settings.cache_dir or self.image_cache
                if root is None:
                    raise ImageError("no image cache: set images.cache_dir in the host config")
                puller = self._pullers[secret] = Puller(settings, Store(root))
            image = puller.pull(reference.parse(url), policy)
        except ImageError as e:
            raise HostError(str(e)) from None
        return {
            "object": str(image.object_path),
            "digest": image.digest,
            "platform": image.platform,
            "programs": dict(image.programs),
        }

    def containers(self, selector: dict[str, Any]) -> list[dict[str, Any]]:
        """The running containers ``selector`` names; see HostFacts.containers."""
        namespace = selector.get("namespace")
        config = self.config().containers
        running = self._running.get(namespace)
        if running is None:
            try:
                running = runtimes.connect(config).running(namespace)
            except runtimes.RuntimeUnreachable as e:
                raise HostError(f"{e}; {_start_runtime(config, self.config_file)}") from None
            self._running[namespace] = running
        names = selector.get("containerNames")
        chosen = runtimes.select(
            running,
            runtimes.Selector(
                namespace, selector.get("pods"), None if names is None else tuple(names)
            ),
        )
        seen: dict[tuple[str, str, str], str] = {}
        for c in chosen:
            key = (c.namespace, c.pod, c.name)
            if key in seen:
                raise HostError(
                    f"containers {seen[key][:12]} and {c.id[:12]} are both container {c.name} of "
                    f"pod {c.namespace}/{c.pod} (labels {runtimes.NAMESPACE_LABEL}, "
                    f"{runtimes.POD_LABEL}, {runtimes.CONTAINER_LABEL}), so their attachments "
                    "would have the same address; give each its own pod or container name"
                )
            seen[key] = c.id
        return [c.to_json() for c in chosen]

    def xdp_mode(self, ifname: str, netns: str | None = None) -> str | None:
        """``interfaces.<ifname>.xdpmode`` of the host's config file (any namespace)."""
        return self.config().xdp_modes.get(ifname)

    def labels(self) -> dict[str, str]:
        """Built-ins, then the labels file (if it exists), then ``extra_labels``; later win."""
        if self._labels is None:
            labels = builtin_labels()
            if self.labels_file is not None:
                labels.update(read_labels_file(self.labels_file))
            labels.update(self.extra_labels)
            self._labels = labels
        return dict(self._labels)

    def primary_interface(self) -> str | None:
        return default_route_interface()

    def interfaces(self, netns: str | None = None) -> list[str]:
        """Names of the interfaces, in if_nameindex order (by ifindex)."""
        import socket  # not on every start-up: only a manifest naming interfaces asks

        if netns is None:
            return [name for _, name in socket.if_nameindex()]
        if not os.path.exists(netns):
            raise HostError(
                f"network namespace {netns} does not exist; create it first (e.g. `ip netns add "
                "NAME` for /run/netns/NAME) or fix the path"
            )
        try:
            with namespaces.enter(netns):
                return [name for _, name in socket.if_nameindex()]
        except KernelError as e:
            raise HostError(str(e)) from None
        except OSError as e:
            raise HostError(
                f"cannot list the interfaces of network namespace {netns}: {e.strerror or e}"
            ) from None

    def resolve_library(self, name: str, container_pid: int | None = None) -> str | None:
        root = Path("/") if container_pid is None else Path(f"/proc/{container_pid}/root")
        if container_pid is not None:
            try:
                os.stat(root)
            except FileNotFoundError:
                raise HostError(
                    f"process {container_pid} does not exist, so its container's libraries "
                    "cannot be found; fix containers.pid (a process running in the container)"
                ) from None
            except OSError as e:
                raise HostError(
                    f"cannot look into the mount namespace of process {container_pid}: "
                    f"{e.strerror or e}"
                ) from None
        return resolve_library(name, root)


def _start_runtime(config: runtimes.RuntimeConfig, config_file: Path | None) -> str:
    """What to do when the runtime's API does not answer, in words."""
    where = f"the host config {config_file}" if config_file else "the host config"
    return (
        f"container selectors are resolved through it: start its API service (`systemctl enable "
        f"--now {config.runtime}.socket`, or `{config.runtime} system service --time=0 "
        f"unix://{config.socket}`), or set containers.runtime and containers.socket in {where}"
    )


# --- labels -------------------------------------------------------------------------------------


def builtin_labels(nodename: str | None = None, machine: str | None = None) -> dict[str, str]:
    """The labels the kubelet gives every node: hostname (lowercased, as the kubelet does), os
    and arch (Go's name for the machine)."""
    uname = os.uname()
    machine = machine or uname.machine
    return {
        "kubernetes.io/hostname": (nodename or uname.nodename).strip().lower(),
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": GOARCH.get(machine, machine),
    }


def parse_label(text: str) -> tuple[str, str]:
    """``--label KEY=VALUE`` as (key, value); ValueError with the valid syntax if it is not one
    (usable as an argparse ``type=``)."""
    key, sep, value = text.partition("=")
    if not sep or not hostfiles.is_label_key(key):
        raise ValueError(
            f"{text!r} is not KEY=VALUE with a label key, e.g. topology.kubernetes.io/zone=eu-1a"
        )
    if not hostfiles.is_label_value(value):
        raise ValueError(f"{value!r} is not a label value: {hostfiles.VALUE_WORDS}")
    return key, value


def read_bytecode_dirs(path: Path) -> list[str]:
    """``bytecode_dirs`` of the host config at ``path`` (none when the file or key is missing;
    HostError when the file is wrong)."""
    return list(hostfiles.read_host_config(path).bytecode_dirs)


def read_xdp_modes(path: Path) -> dict[str, str]:
    """Per-interface XDP modes (``interfaces.<name>.xdpmode``) of the host config at ``path``."""
    return dict(hostfiles.read_host_config(path).xdp_modes)


def read_labels_file(path: Path) -> dict[str, str]:
    """A flat YAML mapping of label keys to string values. A missing file is no labels; anything
    else that is wrong raises HostError naming ``FILE:LINE``."""
    return hostfiles.read_labels_file(path)


# --- the default route ----------------------------------------------------------------------


def default_route_interface(
    route: Path = Path("/proc/net/route"), ipv6_route: Path = Path("/proc/net/ipv6_route")
) -> str | None:
    """The interface of the default route with the lowest metric (IPv4, else IPv6), or None."""
    best: tuple[int, str] | None = None
    try:
        for line in route.read_text().splitlines()[1:]:
            # Iface Destination Gateway Flags RefCnt Use Metric Mask ...  (hex, host byte order)
            f = line.split()
            if len(f) >= 8 and f[1] == "00000000" and f[7] == "00000000":
                flags, metric = int(f[3], 16), int(f[6])
                if _usable(flags) and (best is None or metric < best[0]):
                    best = (metric, f[0])
    except (OSError, ValueError):
        pass
    if best is not None:
        return best[1]
    try:
        for line in ipv6_route.read_text().splitlines():
            # dest dest_len src src_len next_hop metric refcnt use flags iface
            f = line.split()
            if len(f) >= 10 and int(f[1], 16) == 0 and f[9] != "lo":
                flags, metric = int(f[8], 16), int(f[5], 16)
                if _usable(flags) and (best is None or metric < best[0]):
                    best = (metric, f[9])
    except (OSError, ValueError):
        pass
    return best[1] if best is not None else None


def _usable(flags: int) -> bool:
    return bool(flags & _RTF_UP) and not flags & _RTF_REJECT


# --- libraries ----------------------------------------------------------------------------------


@frozen
class CacheEntry:
    key: str  # the soname, e.g. libc.so.6
    path: str  # where it is, e.g. /lib/x86_64-linux-gnu/libc.so.6
    flags: int
    hwcap: int = 0


_OLD_MAGIC = b"ld.so-1.7.0"
_NEW_MAGIC = b"glibc-ld.so.cache1.1"


def read_ld_so_cache(data: bytes) -> list[CacheEntry]:
    """The entries of an ``/etc/ld.so.cache`` (glibc's old format, new format, or both), in
    cache order (ldconfig puts the preferred entry for a name first). Malformed data: []."""
    try:
        return list(_cache_entries(data))
    except (struct.error, UnicodeDecodeError, ValueError):  # ValueError: unterminated string
        return []


def _cache_entries(data: bytes) -> Iterator[CacheEntry]:
    start = 0
    if data.startswith(_OLD_MAGIC):
        (count,) = struct.unpack_from("<I", data, 12)
        strings = 16 + 12 * count  # old header, then 12-byte entries, then their strings
        start = (strings + 7) & ~7  # ... unless the new format follows, aligned
        if not data.startswith(_NEW_MAGIC, start):
            for i in range(count):
                flags, key, value = struct.unpack_from("<iII", data, 16 + 12 * i)
                yield CacheEntry(_cstr(data, strings + key), _cstr(data, strings + value), flags)
            return
    if not data.startswith(_NEW_MAGIC, start):
        return
    (count,) = struct.unpack_from("<I", data, start + 20)
    for i in range(count):
        # flags, key, value, osversion, hwcap; string offsets are from the new header
        flags, key, value, _os, hwcap = struct.unpack_from("<iIIIQ", data, start + 48 + 24 * i)
        yield CacheEntry(_cstr(data, start + key), _cstr(data, start + value), flags, hwcap)


def _cstr(data: bytes, offset: int) -> str:
    end = data.index(b"\0", offset)
    return data[offset:end].decode("utf-8")


def _matches(name: str, soname: str) -> bool:
    """``libc`` finds ``libc.so.6``; ``libc.so.6`` finds itself (and ``libc.so.6.x``)."""
    prefix = name if ".so" in name else name + ".so"
    return soname == name or soname.startswith(prefix)


def _in_root(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x7fELF"  # not a linker script such as libc.so
    except OSError:
        return False


def library_dirs(root: Path, machine: str | None = None) -> list[str]:
    """Where the dynamic loader looks, in order: the directories of /etc/ld.so.conf (and its
    includes), then the multiarch and default directories."""
    machine = machine or os.uname().machine
    dirs: list[str] = []
    _read_conf(root, "/etc/ld.so.conf", dirs, set())
    triplet = _TRIPLETS.get(machine)
    defaults = [f"/lib/{triplet}", f"/usr/lib/{triplet}"] if triplet else []
    defaults += ["/lib64", "/usr/lib64"] if machine.endswith("64") else []
    defaults += ["/lib", "/usr/lib"]
    return list(dict.fromkeys(dirs + defaults))


def _read_conf(root: Path, conf: str, dirs: list[str], seen: set[str]) -> None:
    if conf in seen or len(seen) > 64:
        return
    seen.add(conf)
    try:
        text = _in_root(root, conf).read_text(errors="replace")
    except OSError:
        return
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("include"):
            for pattern in line.split()[1:]:
                if not pattern.startswith("/"):
                    pattern = os.path.join(os.path.dirname(conf), pattern)
                matched = sorted(glob.glob(str(_in_root(root, pattern))))
                for path in matched:
                    _read_conf(root, "/" + os.path.relpath(path, root), dirs, seen)
        elif line and not line.startswith("hwcap"):
            dirs.extend(d for d in re.split(r"[\s:,]+", line) if d.startswith("/"))


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name))


def resolve_library(name: str, root: Path = Path("/"), machine: str | None = None) -> str | None:
    """Where the dynamic loader would find library ``name`` under ``root`` (``/``, or a
    container's ``/proc/PID/root``): the path as seen inside ``root``, or None.

    An absolute ``name`` is returned if it exists. Otherwise ``root``'s ld.so.cache is asked
    first (entries for this machine's ABI, in cache order), then the library directories: in
    each, the file ``name`` itself, else the highest-versioned ``name.so*`` that is an ELF file.
    """
    machine = machine or os.uname().machine
    if name.startswith("/"):
        return name if _in_root(root, name).exists() else None
    try:
        cache = read_ld_so_cache(_in_root(root, "/etc/ld.so.cache").read_bytes())
    except OSError:
        cache = []
    abi = _CACHE_ABI.get(machine)
    candidates = [
        e
        for e in cache
        if _matches(name, e.key) and (abi is None or e.flags & 0xFF00 == abi) and not e.hwcap
    ]
    candidates.sort(key=lambda e: e.key != name)  # an exact soname first, else cache order
    for entry in candidates:
        if _in_root(root, entry.path).exists():
            return entry.path
    prefix = name if ".so" in name else name + ".so"
    for directory in library_dirs(root, machine):
        exact = _in_root(root, f"{directory}/{name}")
        if ".so" in name and _is_elf(exact):
            return f"{directory}/{name}"
        try:
            names = os.listdir(_in_root(root, directory))
        except OSError:
            continue
        found = sorted(
            (n for n in names if n.startswith(prefix) and _matches(name, n)),
            key=_version_key,
            reverse=True,
        )
        for candidate in found:
            if _is_elf(_in_root(root, f"{directory}/{candidate}")):
                return f"{directory}/{candidate}"
    return None


_HOST: type[HostFacts] = Host  # mypy: Host answers every question of the protocol
