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

import contextlib
import errno
import os
from collections.abc import Callable, Collection
from pathlib import Path

from reconciler.kernel.sys import bpf, bpffs, ifaces
from reconciler.kernel.sys.bpffs import LINK, MAPS, PROG, STAGING
from reconciler.kernel.tc import direct as tcdirect
from reconciler.kernel.xdp import attach as xdpattach

SPEC_MARK = "%spec-"  # a dispatcher component's mark of what it was loaded from


def prog_id_at(pin: str | os.PathLike[str]) -> int | None:
    """The id of the program pinned at ``pin`` (None: no program pinned there)."""
    try:
        with bpf.opened(bpf.obj_get(os.fspath(pin))) as fd:
            return bpf.prog_info(fd).id
    except OSError:
        return None


def owner_of(root: Path, prog_id: int) -> str | None:
    """The managed pin dir whose program is ``prog_id`` (None: not ours)."""
    for rel in bpffs.managed_dirs(root):
        if prog_id_at(f"{bpffs.dir_of(root, rel)}/{PROG}") == prog_id:
            return rel
    return None


def owners(root: Path) -> dict[int, str]:
    """prog id -> our pin dir, for every managed pin dir."""
    out: dict[int, str] = {}
    for rel in bpffs.managed_dirs(root):
        pid = prog_id_at(f"{bpffs.dir_of(root, rel)}/{PROG}")
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
        # (st_dev, st_ino) of the root once ensure_root made it: a root removed or replaced
        # since is made again, an unchanged one costs one stat.
        self._ready: tuple[int, int] | None = None

    def path(self, pin_dir: str) -> Path:
        """The directory of ``pin_dir`` (an address-derived relative path), checked and encoded."""
        return Path(self.dir_of(pin_dir))

    def dir_of(self, pin_dir: str) -> str:
        """``path`` as a string, for the paths used once per program."""
        bpffs.check_pin_dir(pin_dir)
        return bpffs.dir_of(self.root, pin_dir)

    def rel(self, d: str | os.PathLike[str]) -> str:
        """The pin dir of a directory under the root (``path``'s inverse)."""
        return bpffs.rel_of(self.root, d)

    def ensure_root(self) -> None:
        if self._ready is not None:
            try:
                st = os.stat(self.root)
                if (st.st_dev, st.st_ino) == self._ready:
                    return
            except OSError:
                pass
        bpffs.ensure_root(self.root)
        st = os.stat(self.root)
        self._ready = (st.st_dev, st.st_ino)

    def owner_of(self, prog_id: int) -> str | None:
        return owner_of(self.root, prog_id)

    def commit(
        self,
        d: str | os.PathLike[str],
        keep_link: bool,
        staged: Collection[str] | None = None,
        present: Collection[str] | None = None,
    ) -> None:
        """Move the staged pins into place, ``prog`` last: a pin dir counts as installed once it
        holds a prog, so an interrupted install stays invisible (and is cleaned up by the next
        one), and an interrupted replace shows as not attached (its link runs another program).
        rename(2) over an existing pin drops the old pin's reference: an old perf-event link
        is released (detached) right here.

        Resumable: a commit killed part way is finished by calling it again (with
        ``keep_link``, as ``discard_staging`` does): every move is skipped once done.

        ``staged`` and ``present`` name what the stage and the pin dir hold, when the caller
        knows (it made them); otherwise one listing of each says (no stat per name)."""
        d = os.fspath(d)
        stage = f"{d}/{STAGING}"
        staged = set(os.listdir(stage)) if staged is None else staged
        present = os.listdir(d) if present is None else present
        if MAPS in staged:
            # A directory cannot be renamed over a non-empty one: park the old maps in the stage.
            if MAPS in present:
                os.rename(f"{d}/{MAPS}", f"{stage}/old-maps")
            os.rename(f"{stage}/{MAPS}", f"{d}/{MAPS}")
        if LINK in staged:
            os.replace(f"{stage}/{LINK}", f"{d}/{LINK}")
        elif not keep_link and LINK in present:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{d}/{LINK}")
        # A dispatcher component's marks of what it was loaded from (``%spec-…``) describe the
        # program being replaced, unless they pin the one being committed (XDP's marks are pins
        # of their program: one staged with it, or moved in by a commit killed part way). TC's
        # marks are plain directories: dropped here, written again by the TC dispatcher (or,
        # after a kill, unknown: the next dispatch reloads that program rather than trust them).
        marks = [name for name in present if name.startswith(SPEC_MARK)]
        new_id = prog_id_at(f"{stage}/{PROG}") if marks else None
        for name in marks:
            if new_id and prog_id_at(f"{d}/{name}") != new_id:
                bpffs.remove_tree(f"{d}/{name}")
        for name in sorted(staged):
            if name.startswith(SPEC_MARK):
                os.replace(f"{stage}/{name}", f"{d}/{name}")
        self.checkpoint("committing")
        if PROG in staged:
            os.replace(f"{stage}/{PROG}", f"{d}/{PROG}")
        bpffs.remove_tree(stage)

    def uninstall(self, pin_dir: str) -> None:
        """Detach and unpin ``pin_dir`` (nothing: already gone)."""
        d = self.dir_of(pin_dir)
        if not os.path.exists(d):
            return
        self.discard(f"{d}/{STAGING}")
        # A kill after the detach leaves pins of a program that no longer runs: the next plan
        # unloads them again (detaching twice is harmless), or reinstalls them if wanted.
        self.discard(d, detached=lambda: self.checkpoint("detached"))
        bpffs.prune_empty_parents(os.path.dirname(d), self.root)

    def discard(
        self, d: str | os.PathLike[str], detached: Callable[[], None] | None = None
    ) -> None:
        """Detach what the pins in ``d`` attached (only ours), then unpin everything in it."""
        d = os.fspath(d)
        try:
            present = os.listdir(d)
        except FileNotFoundError:
            return
        except NotADirectoryError:
            present = []  # a stray file where a pin dir belongs: removed below
        if LINK in present:
            try:
                with bpf.opened(bpf.obj_get(f"{d}/{LINK}")) as fd:
                    ifaces.link_detach(fd)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
        elif PROG in present:
            # XDP attached over netlink: the pins do not say where, so look for our program
            # id on every interface of our namespace and of every named (`ip netns`) one.
            # Limitation: a namespace that is neither is not searched; the program then stays
            # attached there (until the interface or namespace goes) although it is unpinned.
            with bpf.opened(bpf.obj_get(f"{d}/{PROG}")) as fd:
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
        top = os.path.normpath(self.root)
        if not os.path.isdir(top):
            return found
        for dirpath, dirnames, files in os.walk(top):
            at_root = dirpath == top
            for name in dirnames:
                if name == STAGING or (at_root and name.startswith(f"{STAGING}-verify-")):
                    found.append(os.path.join(dirpath, name)[len(top) + 1 :])
            if PROG in files or LINK in files:
                # An attachment's own dir: below it only its maps (a staging is its child,
                # found above), as managed_dirs and map_dirs also assume. With thousands of
                # attachments this halves the walk.
                dirnames[:] = []
            else:
                # Dispatcher hooks (%xdp, %tc) are looked at by their own modules.
                dirnames[:] = [n for n in dirnames if not bpffs.skipped(n)]
        return sorted(found)
