"""Shared maps: programs of several attachments using the same maps, pinned in a maps directory.

A *maps directory* is a directory under the root holding map pins and nothing else (no ``prog``,
no ``link``). An attachment loaded with ``ProgramSpec.maps_dir`` reuses each of its object's
maps pinned there under the map's name, and creates and pins there the ones that are not yet.
Global data maps (.rodata, .data, .bss, .kconfig) stay private to the attachment.

The attachment's own ``maps/`` directory then holds, for each shared map, a relative symlink to
the shared pin (bpffs supports symlinks): observing the attachment finds every map it uses, and
uninstalling it removes only the symlinks, never the shared maps. ``remove_maps`` unpins a maps
directory once no attachment uses it (the caller decides when).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.kernel.sys import bpf, bpffs
from reconciler.kernel.sys.bpffs import LINK, PROG
from reconciler.kernel.sys.bpfobject import LibbpfObject, MapDecl, MapShape
from reconciler.kernel.types import KernelError

_PERF_EVENT_ARRAY = 4  # libbpf sizes it to the number of CPUs when it declares max_entries 0


def _owner_of(root: Path, d: Path) -> Path | None:
    """The attachment pin dir (holding a prog or link) that ``d`` is or lies inside of."""
    for p in [d, *d.parents]:
        if p == root or root not in p.parents:
            return None
        if (p / PROG).exists() or (p / LINK).exists():
            return p
    return None


def directory(root: Path, maps_dir: str) -> Path:
    """Where ``maps_dir`` lives under the root; refuses names that could escape the root or that
    fall inside an attachment's own pin directory."""
    try:
        bpffs.check_pin_dir(maps_dir)
    except KernelError:
        raise KernelError(
            f"invalid maps directory {maps_dir!r}: it must be relative to the bpfman root, and "
            f"no part of it may be empty, start with '.' or contain {bpffs.STAGING!r}"
        ) from None
    d = bpffs.path_of(root, maps_dir)
    owner = _owner_of(root, d)
    if owner is not None:
        rel = "/".join(bpffs.decode(p) for p in owner.relative_to(root).parts)
        raise KernelError(
            f"maps directory {maps_dir} is inside the pin directory of attachment {rel}; "
            "give shared maps a directory of their own"
        )
    return d


@dataclass
class Sharing:
    """The shared maps of one load: which maps are pinned where, and which pins it creates."""

    directory: Path
    maps: list[tuple[MapDecl, Path]] = field(default_factory=list)
    created: list[Path] = field(default_factory=list)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(decl.name for decl, _ in self.maps)


def _describe(shape: MapShape) -> dict[str, object]:
    return {
        "type": bpf.MAP_TYPES[shape.type] if shape.type < len(bpf.MAP_TYPES) else shape.type,
        "key_size": shape.key_size,
        "value_size": shape.value_size,
        "max_entries": shape.max_entries,
        "flags": shape.flags,
    }


def shape_difference(have: MapShape, wanted: MapShape) -> str | None:
    """None when a map of shape ``have`` can be used where ``wanted`` is declared; otherwise the
    differing fields, e.g. ``max_entries 4 (wanted 1)``."""
    if wanted.type == _PERF_EVENT_ARRAY and wanted.max_entries == 0:
        # libbpf sizes it to the number of CPUs when it declares max_entries 0
        wanted = dataclasses.replace(wanted, max_entries=have.max_entries)
    if have == wanted:
        return None
    h, w = _describe(have), _describe(wanted)
    return ", ".join(f"{k} {h[k]} (wanted {w[k]})" for k in h if h[k] != w[k])


def _check_compatible(decl: MapDecl, pin: Path, path: str) -> None:
    try:
        with bpf.opened(bpf.obj_get(str(pin))) as fd:
            info = bpf.map_info(fd)
    except OSError as e:
        raise KernelError(f"cannot open the shared map pinned at {pin}: {e.strerror}") from e
    pinned = MapShape(info.type, info.key_size, info.value_size, info.max_entries, info.flags)
    diff = shape_difference(pinned, decl.shape)
    if diff is not None:
        raise KernelError(
            f"the shared map {decl.pin_name} pinned at {pin} does not fit map {decl.name} of "
            f"{path}: it has {diff}; use another maps directory, or remove the old maps once "
            "nothing uses them"
        )


def share(obj: LibbpfObject, d: Path, create: bool = True) -> Sharing:
    """Before load: make libbpf reuse each non-internal map pinned in ``d`` (after checking it
    fits) and, with ``create``, pin the others there when it creates them. Without ``create``
    (a dry run) maps not pinned yet stay private and nothing is pinned."""
    sharing = Sharing(d)
    for decl in obj.declared_maps():
        if decl.internal:
            continue
        pin = d / decl.pin_name
        if pin.exists():
            _check_compatible(decl, pin, obj.path)
        elif create:
            sharing.created.append(pin)
        else:
            continue
        sharing.maps.append((decl, pin))
    if sharing.created:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    for decl, pin in sharing.maps:
        obj.set_pin_path(decl, str(pin))
    return sharing


def link_into(sharing: Sharing, stage_maps: Path, final_maps: Path) -> None:
    """Symlink each shared map into the attachment's (staged) maps directory, relative to where
    that directory ends up once committed."""
    for decl, pin in sharing.maps:
        os.symlink(os.path.relpath(pin, final_maps), stage_maps / decl.pin_name)


def undo(sharing: Sharing, root: Path) -> None:
    """After a failed install: unpin the maps this load created (pins that existed before stay)."""
    for pin in sharing.created:
        pin.unlink(missing_ok=True)
    bpffs.prune_empty_parents(sharing.directory, root)


def pin_of(link: Path) -> Path:
    """The shared pin a symlink in an attachment's maps directory points to."""
    return Path(os.path.normpath(link.parent / os.readlink(link)))


def map_dirs(root: Path) -> list[str]:
    """Maps directories under the root (decoded, relative, sorted): directories holding map pins
    (not symlinks) but neither a prog nor a link, outside every attachment's pin directory."""
    found: list[str] = []
    top = os.path.normpath(root)
    if not os.path.isdir(top):
        return found
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not bpffs.skipped(d))
        if PROG in filenames or LINK in filenames:
            dirnames[:] = []  # an attachment (or an interrupted one): its maps/ are its own
            continue
        if dirpath == top:
            continue
        pins = [
            f
            for f in filenames
            if not bpffs.skipped(f) and not os.path.islink(os.path.join(dirpath, f))
        ]
        if pins:
            found.append(bpffs.rel_of(top, dirpath))
    return sorted(found)


def remove(root: Path, maps_dir: str) -> None:
    """Unpin the maps pinned directly in ``maps_dir`` (not its subdirectories) and remove the
    directory and its parents once empty. Idempotent."""
    d = directory(root, maps_dir)
    if not d.is_dir():
        return
    for entry in d.iterdir():
        if entry.is_symlink() or not entry.is_dir():
            entry.unlink(missing_ok=True)
    bpffs.prune_empty_parents(d, root)
