"""Checks a schema cannot express: unique names, the bytecode file and what is inside it.

Everything here is host-independent (it reads only the manifest tree and the bytecode it names):
whether an interface, a tracepoint or a uprobe target exists on this host is decided at plan time.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from reconciler.spec.elf import BpfObject, ElfError, read_bpf_object
from reconciler.spec.loader import Document
from reconciler.spec.model import Origin, Problem
from reconciler.spec.schema import KINDS

# What each kind accepts, in words, and how a fitting SEC() annotation looks.
_EXPECTED = {
    "XdpProgram": ("a section named xdp, xdp/... or xdp.frags", 'SEC("xdp")'),
    "TcxProgram": ("a section named tc, tc/..., tcx/... or classifier", 'SEC("tcx/ingress")'),
    "TracepointProgram": (
        "a section named tracepoint/... or tp/...",
        'SEC("tracepoint/syscalls/sys_enter_openat")',
    ),
    "UprobeProgram": ("a section named uprobe... or uretprobe...", 'SEC("uprobe")'),
}
_DEVMAP = "an XDP program for a devmap (it runs on redirected frames, not on an interface)"
_CPUMAP = "an XDP program for a cpumap (it runs on redirected frames, not on an interface)"
# Section name prefixes (libbpf's conventions) and what programs they hold; longest match wins.
_SECTION_TYPES = {
    "xdp": "an XDP program",
    "xdp/devmap": _DEVMAP,
    "xdp/cpumap": _CPUMAP,
    "xdp.frags/devmap": _DEVMAP,
    "xdp.frags/cpumap": _CPUMAP,
    "tc": "a TC program",
    "tcx/": "a TC program",
    "classifier": "a TC program",
    "action": "a TC action",
    "tracepoint": "a tracepoint program",
    "tp": "a tracepoint program",
    "tp_btf": "a BTF tracepoint program",
    "raw_tp": "a raw tracepoint program",
    "raw_tracepoint": "a raw tracepoint program",
    "uprobe": "a uprobe program",
    "uretprobe": "a uretprobe program",
    "uprobe.multi": "a multi-uprobe program (bpfman does not attach uprobe.multi links yet)",
    "uretprobe.multi": "a multi-uprobe program (bpfman does not attach uprobe.multi links yet)",
    "usdt": "a USDT program",
    "kprobe": "a kprobe program",
    "kretprobe": "a kretprobe program",
    "ksyscall": "a kprobe program",
    "kretsyscall": "a kretprobe program",
    "fentry": "an fentry program",
    "fexit": "an fexit program",
    "fmod_ret": "an fmod_ret program",
    "freplace": "an freplace extension",
    "lsm": "an LSM program",
    "cgroup": "a cgroup program",
    "sockops": "a sockops program",
    "sk_": "a socket program",
    "socket": "a socket filter",
    "perf_event": "a perf event program",
    "iter": "a BPF iterator",
    "struct_ops": "a struct_ops program",
    "syscall": "a syscall program",
    "netfilter": "a netfilter program",
    "flow_dissector": "a flow dissector",
    "lwt_": "a lightweight tunnel program",
}
_LIST_LIMIT = 12


def section_fits(kind: str, section: str) -> bool:
    """Whether a program in ``section`` can be loaded as ``kind`` asks."""
    if kind == "XdpProgram":
        return section.startswith("xdp") and not section.endswith(("/devmap", "/cpumap"))
    if kind == "TcxProgram":
        return section in ("tc", "classifier") or section.startswith(("tc/", "tcx/"))
    if kind == "TracepointProgram":
        return section in ("tracepoint", "tp") or section.startswith(("tracepoint/", "tp/"))
    if kind == "UprobeProgram":
        return section.startswith(("uprobe", "uretprobe")) and ".multi" not in section
    return False


def describe_section(section: str) -> str:
    """What a program in ``section`` is, by libbpf's naming conventions."""
    for prefix in sorted(_SECTION_TYPES, key=len, reverse=True):
        if section.startswith(prefix):
            return _SECTION_TYPES[prefix]
    return "a program of a type bpfman cannot tell from its section name"


def resolve_bytecode(manifest_file: Path, path: str) -> Path:
    """A relative bytecode path is relative to the directory of the manifest that names it."""
    given = Path(path)
    return given if given.is_absolute() else manifest_file.parent / given


def check_duplicates(docs: list[Document]) -> list[Problem]:
    """Two manifests of the same kind with the same name would fight over the same addresses."""
    first: dict[tuple[str, str], Origin] = {}
    problems = []
    for doc in docs:
        kind = doc.data.get("kind")
        metadata = doc.data.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        if kind not in KINDS or not isinstance(name, str):
            continue
        origin = doc.origin_of(("metadata", "name"))
        if (kind, name) in first:
            problems.append(
                Problem(
                    origin,
                    "metadata.name",
                    f"{kind}/{name} is defined twice: here and at {first[(kind, name)]}; "
                    f"names must be unique per kind, so rename or remove one",
                )
            )
        else:
            first[(kind, name)] = origin
    return problems


class SemanticChecker:
    """Checks schema-valid documents; reads each bytecode file once however many name it."""

    def __init__(self) -> None:
        self._objects: dict[Path, BpfObject | ElfError] = {}

    def check(self, doc: Document) -> list[Problem]:
        kind: str = doc.data["kind"]
        spec: dict[str, Any] = doc.data["spec"]
        problems = self._check_bytecode(doc, kind, spec)
        if kind == "UprobeProgram" and "func_name" not in spec and spec.get("offset", 0) == 0:
            problems.append(
                doc.problem(
                    ("spec",),
                    "set func_name (a function in target) or a non-zero offset (a byte offset "
                    "in target); with neither, the uprobe has nowhere to attach",
                )
            )
        return problems

    def _object(self, path: Path) -> BpfObject | ElfError:
        key = path.resolve()
        if key not in self._objects:
            try:
                self._objects[key] = read_bpf_object(key)
            except ElfError as e:
                self._objects[key] = e
        return self._objects[key]

    def _check_bytecode(self, doc: Document, kind: str, spec: dict[str, Any]) -> list[Problem]:
        written: str = spec["bytecode"]["path"]
        path = Path(os.path.abspath(resolve_bytecode(doc.path, written)))
        where = ("spec", "bytecode", "path")
        if not path.exists():
            hint = (
                "" if Path(written).is_absolute() else f" (relative to the directory of {doc.file})"
            )
            return [doc.problem(where, f"bytecode file not found: {path}{hint}")]
        if path.is_dir():
            return [doc.problem(where, f"{written} is a directory, not an eBPF object file")]
        obj = self._object(path)
        if isinstance(obj, ElfError):
            return [doc.problem(where, f"{written}: {obj}")]
        message = _function_problem(kind, spec["bpffunctionname"], written, obj)
        return [doc.problem(("spec", "bpffunctionname"), message)] if message else []


def _function_problem(kind: str, name: str, written: str, obj: BpfObject) -> str | None:
    expected, example = _EXPECTED[kind]
    if not obj.has_symbols:
        return (
            f"{written} has no symbol table (was it stripped?), so no function can be found by "
            "name; keep the symbols (llvm-strip -g removes only debug information)"
        )
    function = obj.function(name)
    if function is None:
        programs = obj.programs()
        fitting = [f.name for f in programs if section_fits(kind, f.section)]
        hint = _did_you_mean(name, fitting or [f.name for f in programs])
        if fitting:
            return (
                f"function {name!r} is not in {written}{hint}; functions there that "
                f"{_a(kind)} can use: {_listing(fitting)}"
            )
        others = [f"{f.name} ({f.section})" for f in programs]
        return (
            f"function {name!r} is not in {written}, and no function there is in {expected}; "
            f"its programs: {_listing(others) if others else 'none'}"
        )
    if not function.is_program:
        return (
            f"function {name!r} is a subprogram in .text, not a program entry point; "
            f"put it in its own section, e.g. {example}"
        )
    if not section_fits(kind, function.section):
        what = describe_section(function.section)
        message = (
            f"function {name!r} is in section {function.section!r}, {what}; "
            f"{_a(kind)} needs {expected}"
        )
        other = next((k for k in KINDS if section_fits(k, function.section)), None)
        if other:
            message += f" (for this section, use kind {other})"
        return message
    return None


def _a(kind: str) -> str:
    return f"an {kind}" if kind.startswith("Xdp") else f"a {kind}"


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_LIST_LIMIT])
    return shown + (f" and {len(names) - _LIST_LIMIT} more" if len(names) > _LIST_LIMIT else "")


def _did_you_mean(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
