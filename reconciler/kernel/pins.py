"""The pin store: the directories under the bpffs root where every managed attachment lives, and
the operations on them that ``RealKernel`` and both dispatchers share.

Pin layout of a managed attachment, under ``<root>/<pin_dir>/``::

    prog            the program
    link            its bpf_link (tcx, tracepoint, uprobe, kprobe, fentry, fexit); none for
                    netlink-attached XDP or a program attached to a TC hook or a dispatcher
    maps/<name>     its maps (global data maps as rodata, data, bss); a map shared through
                    ``ProgramSpec.maps_dir`` is a symlink to its pin there (see maps.py)
    %spec-<digest>  a dispatcher component's mark of what it was loaded from
    %next/          staging: the same layout while a new version is loaded and swapped in

('.' is not allowed in bpffs names, so a '.' in a pin dir is stored as ``%2E``: see bpffs.py.)
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

from reconciler.kernel.sys import bpf, bpffs, ifaces
from reconciler.kernel.sys.bpffs import LINK, MAPS, PROG, STAGING
from reconciler.kernel.tc import direct as tcdirect
from reconciler.kernel.xdp import attach as xdpattach

SPEC_MARK = "%spec-"  # a dispatcher component's mark of what it was loaded from


def prog_id_at(pin: Path) -> int | None:
    """The id of the program pinned at ``pin`` (None: no program pinned there)."""
    try:
        with bpf.opened(bpf.obj_get(str(pin))) as fd:
            return bpf.prog_info(fd).id
    except OSError:
        return None


def owner_of(root: Path, prog_id: int) -> str | None:
    """The managed pin dir whose program is ``prog_id`` (None: not ours)."""
    for rel in bpffs.managed_dirs(root):
        if prog_id_at(bpffs.path_of(root, rel) / PROG) == prog_id:
            return rel
    return None


def owners(root: Path) -> dict[int, str]:
    """prog id -> our pin dir, for every managed pin dir."""
    out: dict[int, str] = {}
    for rel in bpffs.managed_dirs(root):
        pid = prog_id_at(bpffs.path_of(root, rel) / PROG)
        if pid is not None:
            out[pid] = rel
    return out


class PinStore:
    """The pin directories under one bpffs root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # Called with "staged", "swapped", "committing", "detached" at the points where a kill
        # leaves something for the next apply to finish: the apply's test-only pause points
        # (apply/interrupt.py, through ``RealKernel.checkpoint``).
        self.checkpoint: Callable[[str], None] = lambda _point: None

    def path(self, pin_dir: str) -> Path:
        """The directory of ``pin_dir`` (an address-derived relative path), checked and encoded."""
        bpffs.check_pin_dir(pin_dir)
        return bpffs.path_of(self.root, pin_dir)

    def rel(self, d: Path) -> str:
        """The pin dir of a directory under the root (``path``'s inverse)."""
        return "/".join(bpffs.decode(p) for p in d.relative_to(self.root).parts)

    def ensure_root(self) -> None:
        bpffs.ensure_root(self.root)

    def owner_of(self, prog_id: int) -> str | None:
        return owner_of(self.root, prog_id)

    def commit(self, d: Path, keep_link: bool) -> None:
        """Move the staged pins into place, ``prog`` last: a pin dir counts as installed once it
        holds a prog, so an interrupted install stays invisible (and is cleaned up by the next
        one), and an interrupted replace shows as not attached (its link runs another program).
        rename(2) over an existing pin drops the old pin's reference: an old perf-event link
        is released (detached) right here.

        Resumable: a commit killed part way is finished by calling it again (with
        ``keep_link``, as ``discard_staging`` does): every move is skipped once done."""
        stage = d / STAGING
        if (stage / MAPS).exists():
            # A directory cannot be renamed over a non-empty one: park the old maps in the stage.
            if (d / MAPS).exists():
                os.rename(d / MAPS, stage / "old-maps")
            os.rename(stage / MAPS, d / MAPS)
        if (stage / LINK).exists():
            os.replace(stage / LINK, d / LINK)
        elif not keep_link:
            (d / LINK).unlink(missing_ok=True)
        # A dispatcher component's marks of what it was loaded from (``%spec-…``) describe the
        # program being replaced, unless they pin the one being committed (XDP's marks are pins
        # of their program: one staged with it, or moved in by a commit killed part way). TC's
        # marks are plain directories: dropped here, written again by the TC dispatcher (or,
        # after a kill, unknown: the next dispatch reloads that program rather than trust them).
        new_id = prog_id_at(stage / PROG)
        for mark in d.iterdir():
            if new_id and mark.name.startswith(SPEC_MARK) and prog_id_at(mark) != new_id:
                bpffs.remove_tree(mark)
        for mark in sorted(stage.iterdir()):
            if mark.name.startswith(SPEC_MARK):
                os.replace(mark, d / mark.name)
        self.checkpoint("committing")
        if (stage / PROG).exists():
            os.replace(stage / PROG, d / PROG)
        bpffs.remove_tree(stage)

    def uninstall(self, pin_dir: str) -> None:
        """Detach and unpin ``pin_dir`` (nothing: already gone)."""
        d = self.path(pin_dir)
        if not d.exists():
            return
        self.discard(d / STAGING)
        # A kill after the detach leaves pins of a program that no longer runs: the next plan
        # unloads them again (detaching twice is harmless), or reinstalls them if wanted.
        self.discard(d, detached=lambda: self.checkpoint("detached"))
        bpffs.prune_empty_parents(d.parent, self.root)

    def discard(self, d: Path, detached: Callable[[], None] | None = None) -> None:
        """Detach what the pins in ``d`` attached (only ours), then unpin everything in it."""
        if not d.exists():
            return
        link = d / LINK
        if link.exists():
            try:
                with bpf.opened(bpf.obj_get(str(link))) as fd:
                    ifaces.link_detach(fd)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
        elif (d / PROG).exists():
            # XDP attached over netlink: the pins do not say where, so look for our program
            # id on every interface of our namespace and of every named (`ip netns`) one.
            # Limitation: a namespace that is neither is not searched; the program then stays
            # attached there (until the interface or namespace goes) although it is unpinned.
            with bpf.opened(bpf.obj_get(str(d / PROG))) as fd:
                info = bpf.prog_info(fd)
                if info.type == bpf.PROG_TYPE_XDP:
                    xdpattach.xdp_detach(fd, info.id)
                elif info.type == bpf.PROG_TYPE_SCHED_CLS:  # a TC program attached directly
                    tcdirect.detach(info.id)
        if detached is not None:
            detached()
        bpffs.remove_tree(d)

    def stagings(self) -> list[str]:
        """``%next`` in pin dirs and the pre-flight's ``%next-verify-<pid>``, relative to root."""
        found: list[str] = []
        if not self.root.is_dir():
            return found
        for dirpath, dirnames, _files in os.walk(self.root):
            here = Path(dirpath)
            for name in dirnames:
                if name == STAGING or (here == self.root and name.startswith(f"{STAGING}-verify-")):
                    found.append(str((here / name).relative_to(self.root)))
            # Dispatcher hooks (%xdp, %tc) are looked at by their own modules.
            dirnames[:] = [n for n in dirnames if not bpffs.skipped(n)]
        return sorted(found)
