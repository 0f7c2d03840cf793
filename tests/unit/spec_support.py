"""Helpers shared by the test_spec_* modules (no tests here).

Manifest trees are written into pytest's tmp_path, with the compiled test object copied to
``<tmp>/bytecode/spec_progs.o``, so nothing depends on the current directory.
"""

from __future__ import annotations

import atexit
import functools
import platform
import shutil
import struct
import subprocess
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from reconciler.spec import HostError, ManifestError, load_manifests

HERE = Path(__file__).resolve().parent
BPF_DIR = HERE / "bpf"
DATA_DIR = HERE / "data"


@functools.cache
def bpf_object(name: str = "spec_progs") -> Path:
    """The compiled tests/unit/bpf/<name>.bpf.c: the one ``make bytecode`` built if it is up to
    date, else compiled now (same flags) into a temporary directory."""
    source = BPF_DIR / f"{name}.bpf.c"
    built = BPF_DIR / f"{name}.o"
    if built.exists() and built.stat().st_mtime >= source.stat().st_mtime:
        return built
    clang = shutil.which("clang")
    if clang is None:
        pytest.skip("clang is not installed and the test object is not built (run make bytecode)")
    out_dir = Path(tempfile.mkdtemp(prefix="bpfman-spec-test-"))
    atexit.register(shutil.rmtree, out_dir, True)
    out = out_dir / f"{name}.o"
    include = f"-I/usr/include/{platform.machine()}-linux-gnu"
    cmd = [clang, "-g", "-O2", "-target", "bpf", include, "-c", str(source), "-o", str(out)]
    subprocess.run(cmd, check=True)
    return out


def write_tree(tmp: Path, files: dict[str, str]) -> Path:
    """Write manifests under ``tmp/manifests`` (text is dedented) and put the test object at
    ``tmp/bytecode/spec_progs.o``. Returns the manifests root."""
    (tmp / "bytecode").mkdir(exist_ok=True)
    shutil.copyfile(bpf_object(), tmp / "bytecode" / "spec_progs.o")
    root = tmp / "manifests"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def copy_valid_tree(tmp: Path) -> Path:
    """tests/unit/data/valid copied to ``tmp/manifests``, with the test object beside it."""
    root = write_tree(tmp, {})
    shutil.copytree(DATA_DIR / "valid", root, dirs_exist_ok=True)
    return root


def problems_of(tmp: Path, files: dict[str, str]) -> list[str]:
    """The problems load_manifests reports for these files (it must report some)."""
    root = write_tree(tmp, files)
    with pytest.raises(ManifestError) as info:
        load_manifests(root)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


XDP = """
apiVersion: bpfman.io/v1alpha1
kind: XdpProgram
metadata:
  name: xdp-counter
spec:
  bpffunctionname: xdp_stats
  bytecode:
    path: ../bytecode/spec_progs.o
  interfaceselector:
    interfaces: [eth0]
  priority: 55
"""


def xdp(**spec_lines: str) -> str:
    """The valid XDP manifest above with spec fields replaced or added (values are YAML text).
    Replaced fields keep their line, added ones go at the end (line 12 onwards)."""
    text = textwrap.dedent(XDP).lstrip("\n")
    for key, value in spec_lines.items():
        lines = text.splitlines()
        at = next((i for i, line in enumerate(lines) if line.startswith(f"  {key}:")), None)
        if at is None:
            lines.append(f"  {key}: {value}")
        else:
            end = at + 1
            while end < len(lines) and lines[end].startswith("    "):
                end += 1
            lines[at:end] = [f"  {key}: {value}"]
        text = "\n".join(lines) + "\n"
    return text


SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB = 1, 2, 3
SHF_ALLOC_EXEC = 0x2 | 0x4
STT_OBJECT, STT_FUNC = 1, 2


def build_elf(
    sections: list[tuple[str, int, int, bytes]],
    symbols: list[tuple[str, int, str | None]] | None = None,
    *,
    order: str = "<",
    machine: int = 247,
    elf_class: int = 2,
    e_type: int = 1,
) -> bytes:
    """A minimal ELF64 file: ``sections`` are (name, sh_type, sh_flags, data), ``symbols`` are
    (name, STT_*, section name or None). With ``symbols=None`` there is no symbol table, like a
    stripped object."""
    extra = [(".shstrtab", SHT_STRTAB, 0)]
    if symbols is not None:
        extra += [(".strtab", SHT_STRTAB, 0), (".symtab", SHT_SYMTAB, 0)]
    every = [(name, kind, flags) for name, kind, flags, _ in sections] + extra
    shstr, name_at = b"\0", {}
    for name, _, _ in every:
        name_at[name] = len(shstr)
        shstr += name.encode() + b"\0"
    index = {name: i + 1 for i, (name, _, _, _) in enumerate(sections)}
    blobs = [data for _, _, _, data in sections] + [shstr]
    if symbols is not None:
        strtab, entries = b"\0", [bytes(24)]
        for name, st_type, section in symbols:
            entries.append(
                struct.pack(
                    order + "IBBHQQ",
                    len(strtab),
                    0x10 | st_type,
                    0,
                    index.get(section or "", 0),
                    0,
                    0,
                )
            )
            strtab += name.encode() + b"\0"
        blobs += [strtab, b"".join(entries)]
    out = bytearray(64)
    offsets = []
    for blob in blobs:
        offsets.append(len(out))
        out += blob
    shoff = len(out)
    strtab_index = len(sections) + 2
    out += bytes(64)  # section 0
    for (name, kind, flags), blob, offset in zip(every, blobs, offsets, strict=True):
        link, entsize = (strtab_index, 24) if kind == SHT_SYMTAB else (0, 0)
        out += struct.pack(
            order + "IIQQQQIIQQ",
            name_at[name],
            kind,
            flags,
            0,
            offset,
            len(blob),
            link,
            0,
            8,
            entsize,
        )
    ident = b"\x7fELF" + bytes([elf_class, 1 if order == "<" else 2, 1]) + bytes(9)
    header = struct.pack(
        order + "HHIQQQIHHHHHH",
        e_type,
        machine,
        1,
        0,
        0,
        shoff,
        0,
        64,
        0,
        0,
        64,
        len(every) + 1,
        len(sections) + 1,
    )
    out[:64] = ident + header
    return bytes(out)


@dataclass
class StubHost:
    """HostFacts for tests: fixed answers, and a log of every question asked.

    ``interfaces`` maps a network namespace path (None: the host's) to its interfaces;
    ``libraries`` maps (name, container pid) to a path. A fact given as a HostError is raised."""

    labels_: dict[str, str] | HostError = field(
        default_factory=lambda: {
            "kubernetes.io/hostname": "web1",
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        }
    )
    primary: str | None | HostError = "ens3"
    interfaces_: dict[str | None, list[str] | HostError] = field(
        default_factory=lambda: {None: ["lo", "eth0", "eth1", "veth1a2b", "docker0"]}
    )
    libraries: dict[tuple[str, int | None], str | HostError] = field(
        default_factory=lambda: {
            ("libc", None): "/usr/lib/x86_64-linux-gnu/libc.so.6",
            ("libc.so.6", None): "/usr/lib/x86_64-linux-gnu/libc.so.6",
            ("libc", 4242): "/lib/ld-musl-x86_64.so.1",
        }
    )
    # Image url -> its answer ({"object", "digest", "platform", "programs"}) or a HostError.
    images: dict[str, dict[str, Any] | HostError] = field(default_factory=dict)
    # The running containers, as the runtime reports them (reconciler.containers.Container), or
    # a HostError (the runtime cannot be reached); selected as the real host selects them.
    running: list[Any] | HostError = field(default_factory=list)
    asked: list[tuple[Any, ...]] = field(default_factory=list)

    def labels(self) -> dict[str, str]:
        self.asked.append(("labels",))
        return dict(_answer(self.labels_))

    def primary_interface(self) -> str | None:
        self.asked.append(("primary_interface",))
        return _answer(self.primary)

    def interfaces(self, netns: str | None = None) -> list[str]:
        self.asked.append(("interfaces", netns))
        if netns not in self.interfaces_:
            raise HostError(f"network namespace {netns} cannot be opened (No such file)")
        return list(_answer(self.interfaces_[netns]))

    def resolve_library(self, name: str, container_pid: int | None = None) -> str | None:
        self.asked.append(("resolve_library", name, container_pid))
        found = self.libraries.get((name, container_pid))
        return _answer(found) if found is not None else None

    def xdp_mode(self, ifname: str, netns: str | None = None) -> str | None:
        return None  # no host config: no interface has a mode set

    def bytecode_dirs(self) -> list[str] | None:
        return None  # bytecode unconfined: the tests read objects from anywhere

    def bytecode_image(self, url: str, policy: str, secret: str | None) -> dict[str, Any]:
        self.asked.append(("bytecode_image", url, policy, secret))
        if url not in self.images:
            raise HostError(f"{url}: not found on the registry")
        return dict(_answer(self.images[url]))

    def containers(self, selector: dict[str, Any]) -> list[dict[str, Any]]:
        from reconciler.containers import Selector, select

        self.asked.append(("containers", selector))
        names = selector.get("containerNames")
        chosen = select(
            list(_answer(self.running)),
            Selector(selector.get("namespace"), selector.get("pods"), names and tuple(names)),
        )
        return [c.to_json() for c in chosen]


T = TypeVar("T")


def _answer(value: T | HostError) -> T:
    if isinstance(value, HostError):
        raise value
    return value
