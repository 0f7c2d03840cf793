"""Pieces of FakeKernel for global data and shared maps: the checks of a load, and the in-memory
shared maps directories. (The checks before a load are precheck.py's, shared with RealKernel.)"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.kernel.sys import bpffs
from reconciler.kernel.types import (
    AttachPoint,
    FentryPoint,
    FexitPoint,
    KernelError,
    KprobeLinkView,
    KprobePoint,
    ProgramSpec,
    TracingLinkView,
)

# Kernel functions the fake kernel has (for kprobes, fentry and fexit), unless told otherwise.
DEFAULT_KERNEL_FUNCTIONS = frozenset(
    {"__x64_sys_getpid", "do_sys_openat2", "vfs_read", "tcp_v4_connect", "bpf_fentry_test1"}
)
# Global data maps, as RealKernel names their pins: never shared.
_INTERNAL = ("rodata", "data", "bss", "kconfig")


def is_internal(map_name: str) -> bool:
    return map_name in _INTERNAL or map_name.startswith(tuple(f"{n}_" for n in _INTERNAL))


def check_global_data(spec: ProgramSpec, variables: dict[str, int] | None) -> None:
    """``variables``: the object's global variables and their sizes (None: accept anything)."""
    if variables is None:
        return
    for name, data in spec.global_data:
        if name not in variables:
            known = ", ".join(sorted(variables)) or "none"
            raise KernelError(
                f"global variable {name} not found in {spec.object_path} (its global variables: "
                f"{known}); fix the variable name or rebuild the object"
            )
        if len(data) != variables[name]:
            size = variables[name]
            raise KernelError(
                f"global variable {name} in {spec.object_path} is {size} bytes, got "
                f"{len(data)}; give it a value of exactly {size} bytes"
            )


def btf_id(func_name: str) -> int:
    """A stable stand-in for a kernel function's BTF type id."""
    return 1000 + int.from_bytes(hashlib.sha256(func_name.encode()).digest()[:2], "little")


def describe(point: AttachPoint) -> KprobeLinkView | TracingLinkView | None:
    """RealKernel's view (link info) of a kprobe, fentry or fexit attachment; None otherwise."""
    if isinstance(point, KprobePoint):
        return KprobeLinkView(point.func_name, point.offset, point.retprobe, addr=0)
    if isinstance(point, FentryPoint | FexitPoint):
        kind = "trace_fentry" if isinstance(point, FentryPoint) else "trace_fexit"
        return TracingLinkView(kind, target_obj_id=1, target_btf_id=btf_id(point.func_name))
    return None


@dataclass
class SharedMaps:
    """Shared maps directories: maps_dir -> {map name: (id, type)}."""

    root: Path
    dirs: dict[str, dict[str, tuple[int, str]]] = field(default_factory=dict)

    def directory(self, maps_dir: str, attachments: list[str]) -> None:
        """RealKernel's checks of a maps_dir name (``attachments``: the installed pin dirs)."""
        try:
            bpffs.check_pin_dir(maps_dir)
        except KernelError:
            raise KernelError(
                f"invalid maps directory {maps_dir!r}: it must be relative to the bpfman root, "
                f"and no part of it may be empty, start with '.' or contain {bpffs.STAGING!r}"
            ) from None
        for rel in attachments:
            if maps_dir == rel or maps_dir.startswith(rel + "/"):
                raise KernelError(
                    f"maps directory {maps_dir} is inside the pin directory of attachment "
                    f"{rel}; give shared maps a directory of their own"
                )

    def check(self, maps_dir: str, declared: list[tuple[str, str]], path: str) -> None:
        pinned = self.dirs.get(maps_dir, {})
        for name, mtype in declared:
            if name in pinned and pinned[name][1] != mtype and not is_internal(name):
                raise KernelError(
                    f"the shared map {name} pinned at {self.root / maps_dir / name} does not "
                    f"fit map {name} of {path}: it has type {pinned[name][1]} (wanted {mtype}); "
                    "use another maps directory, or remove the old maps once nothing uses them"
                )

    def use(self, maps_dir: str, name: str, mtype: str, new_id: int) -> tuple[int, str]:
        """(id, pin) of the shared map ``name``, created (with ``new_id``) if not pinned yet."""
        pinned = self.dirs.setdefault(maps_dir, {})
        if name not in pinned:
            pinned[name] = (new_id, mtype)
        return pinned[name][0], str(bpffs.path_of(self.root, maps_dir) / name)

    def forget_unused(self, maps_dir: str, created: list[str]) -> None:
        """Undo the pins a failed install created."""
        for name in created:
            self.dirs.get(maps_dir, {}).pop(name, None)
        if not self.dirs.get(maps_dir, True):
            del self.dirs[maps_dir]

    def map_dirs(self) -> list[str]:
        return sorted(d for d, pinned in self.dirs.items() if pinned)

    def remove(self, maps_dir: str, attachments: list[str]) -> None:
        self.directory(maps_dir, attachments)
        self.dirs.pop(maps_dir, None)
