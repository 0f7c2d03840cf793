"""The facts about this host that expanding manifests needs (:class:`reconciler.spec.HostFacts`):
its labels, its default-route interface, the interfaces of a network namespace, and where the
dynamic loader would find a library.

    host = Host()                                        # /etc/bpfman/labels.yaml, if it exists
    host = Host(Path("labels.yaml"), {"zone": "b"})      # e.g. from --labels-file and --label
    state = load_desired(root, host)
"""

from __future__ import annotations

import functools
import glob
import json
import os
import re
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, ScalarNode

from reconciler.spec.host import HostError
from reconciler.spec.schema import SCHEMA_DIR

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
    ) -> None:
        self.labels_file = labels_file
        self.extra_labels = dict(extra_labels or {})
        self.config_file = config_file
        self._labels: dict[str, str] | None = None
        self._xdp_modes: dict[str, str] | None = None
        self._bytecode_dirs: list[str] | None = None

    def bytecode_dirs(self) -> list[str]:
        """``bytecode_dirs`` of the host's config file: the directories absolute bytecode paths
        may name (none when the file or the key is missing)."""
        if self._bytecode_dirs is None:
            self._bytecode_dirs = read_bytecode_dirs(self.config_file) if self.config_file else []
        return list(self._bytecode_dirs)

    def xdp_mode(self, ifname: str, netns: str | None = None) -> str | None:
        """``interfaces.<ifname>.xdpmode`` of the host's config file (any namespace)."""
        if self._xdp_modes is None:
            self._xdp_modes = read_xdp_modes(self.config_file) if self.config_file else {}
        return self._xdp_modes.get(ifname)

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
        if netns is None:
            return [name for _, name in socket.if_nameindex()]
        from reconciler.kernel import netns as namespaces
        from reconciler.kernel.types import KernelError

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


@functools.cache
def _label_patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The label key and value syntax, from the schema every manifest's labels follow."""
    defs = json.loads((SCHEMA_DIR / "common.json").read_text())["$defs"]
    return re.compile(defs["labelKey"]["pattern"]), re.compile(defs["labelValue"]["pattern"])


def parse_label(text: str) -> tuple[str, str]:
    """``--label KEY=VALUE`` as (key, value); ValueError with the valid syntax if it is not one
    (usable as an argparse ``type=``)."""
    key, sep, value = text.partition("=")
    key_syntax, value_syntax = _label_patterns()
    if not sep or not key_syntax.match(key) or len(key) > 317:
        raise ValueError(
            f"{text!r} is not KEY=VALUE with a label key, e.g. topology.kubernetes.io/zone=eu-1a"
        )
    if not value_syntax.match(value) or len(value) > 63:
        raise ValueError(
            f"{value!r} is not a label value: at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return key, value


def _read_config(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise HostError(f"{path}: cannot read the bpfman config: {e}") from None


def read_bytecode_dirs(path: Path) -> list[str]:
    """Where manifests may name bytecode by absolute path, from the host's config file::

        bytecode_dirs: [/opt/bpf, /usr/lib/bpf]   # absolute directories; default: none

    A missing file or key allows none; anything else that is wrong raises HostError."""
    doc = _read_config(path)
    dirs = doc.get("bytecode_dirs") if isinstance(doc, dict) else None
    if dirs is None:
        return []
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise HostError(f"{path}: bytecode_dirs must be a list of absolute directory paths")
    for d in dirs:
        if not d.startswith("/") or d.rstrip("/") == "":
            raise HostError(
                f"{path}: bytecode_dirs entry {d!r} must be an absolute directory other than /, "
                "e.g. /opt/bpf"
            )
    return list(dirs)


def read_xdp_modes(path: Path) -> dict[str, str]:
    """Per-interface XDP modes from the host's config file::

        interfaces:
          eth0: {xdpmode: generic}   # auto | native | generic

    A missing file sets nothing; anything else that is wrong raises HostError naming the file."""
    doc = _read_config(path)
    if doc is None:
        return {}
    interfaces = (doc or {}).get("interfaces") or {} if isinstance(doc, dict) else None
    if not isinstance(interfaces, dict):
        raise HostError(f"{path}: 'interfaces' must map interface names to settings")
    modes = {}
    for ifname, settings in interfaces.items():
        mode = (settings or {}).get("xdpmode") if isinstance(settings, dict) else None
        if mode is None:
            continue
        if mode not in XDP_MODES:
            raise HostError(
                f"{path}: interfaces.{ifname}.xdpmode is {mode!r}; "
                f"use one of {', '.join(XDP_MODES)}"
            )
        modes[str(ifname)] = mode
    return modes


def read_labels_file(path: Path) -> dict[str, str]:
    """A flat YAML mapping of label keys to string values. A missing file is no labels; anything
    else that is wrong raises HostError naming ``FILE:LINE``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise HostError(f"{path}:1: cannot read the labels file: {reason or e}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise HostError(
            f"{path}:{line}: YAML syntax error in the labels file: {e.problem or e.context}"
        ) from None
    except yaml.YAMLError as e:
        raise HostError(f"{path}:1: YAML syntax error in the labels file: {e}") from None
    if node is None or (isinstance(node, ScalarNode) and node.value in ("", "~", "null")):
        return {}
    if not isinstance(node, MappingNode):
        raise HostError(
            f"{path}:{node.start_mark.line + 1}: the labels file must be a mapping of label keys "
            "to values, e.g. topology.kubernetes.io/zone: eu-west-1a"
        )
    key_syntax, value_syntax = _label_patterns()
    labels: dict[str, str] = {}
    lines: dict[str, int] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        where = f"{path}:{line}"
        if not isinstance(key_node, ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
            raise HostError(f"{where}: a label key must be a string (quote it)")
        key = key_node.value
        if not key_syntax.match(key) or len(key) > 317:
            raise HostError(
                f"{where}: {key!r} is not a label key: [prefix/]name, the name at most 63 "
                "letters, digits, '-', '_' or '.', e.g. topology.kubernetes.io/zone"
            )
        if key in lines:
            raise HostError(f"{where}: label {key} is set twice (first at line {lines[key]})")
        if not isinstance(value_node, ScalarNode) or value_node.tag != "tag:yaml.org,2002:str":
            raise HostError(
                f"{where}: label {key}: the value must be a string (quote numbers and booleans, "
                'e.g. "true"), not a nested value'
            )
        value = value_node.value
        if not value_syntax.match(value) or len(value) > 63:
            raise HostError(
                f"{where}: label {key}: {value!r} is not a label value: at most 63 letters, "
                "digits, '-', '_' or '.', starting and ending with a letter or digit"
            )
        labels[key] = value
        lines[key] = line
    return labels


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


@dataclass(frozen=True)
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
