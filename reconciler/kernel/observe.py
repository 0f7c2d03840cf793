"""Reading what the kernel holds for our pin directories (never writes anything)."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import cast

from reconciler.kernel import maps
from reconciler.kernel.sys import bpf, bpffs, netlink, netns
from reconciler.kernel.sys.bpffs import LINK, MAPS, PROG
from reconciler.kernel.tc import direct as tcdirect
from reconciler.kernel.tc import hooks as tchooks
from reconciler.kernel.tc import tcx
from reconciler.kernel.types import (
    AttachView,
    CgroupLinkView,
    Installed,
    KernelError,
    KprobeLinkView,
    MapInfo,
    OtherLinkView,
    PerfEventLinkView,
    TcDispatcherView,
    TcxLinkView,
    TracepointLinkView,
    TracingLinkView,
    UprobeLinkView,
    XdpDispatcherView,
    XdpView,
)
from reconciler.kernel.xdp import attach as xdpattach
from reconciler.kernel.xdp import hooks as xdphooks

log = logging.getLogger("bpfman.kernel")


class Scan:
    """One observation pass: reads each kernel object once. What several programs share is
    asked once per pass: the (netlink) XDP view of every known namespace, our TC filters, the
    tcx hooks."""

    def __init__(self, root: Path, placed: Mapping[int, AttachView] | None = None) -> None:
        self.root = root
        self.tcx_hooks = tcx.TcxHooks()
        # prog id -> where the attach that just ran put it (its netlink or tc request
        # succeeded), for programs without a link: believed over a fresh read, which an
        # interface deleted meanwhile would make say "not attached" for an attach that worked.
        self.placed: Mapping[int, AttachView] = placed or {}

    @cached_property
    def xdp(self) -> dict[int, list[xdpattach.XdpAttachment]]:
        """prog id -> where it is attached as XDP (our namespace and every named one)."""
        index: dict[int, list[xdpattach.XdpAttachment]] = {}
        for ns in netns.all_known():
            try:
                ifaces = netlink.interfaces(ns)
            except (KernelError, OSError):
                continue
            for i in ifaces:
                if i.xdp_prog_id:
                    index.setdefault(i.xdp_prog_id, []).append(xdpattach.XdpAttachment(ns, i))
        return index

    @cached_property
    def dispatched(self) -> dict[int, XdpDispatcherView | TcDispatcherView]:
        """prog id -> its slot on an XDP or TC dispatcher (extension programs run as slots)."""
        return tchooks.where(self.root) | xdphooks.where(self.root, self.xdp)

    @cached_property
    def tc_direct(self) -> dict[int, tcdirect.Found]:
        """prog id -> the hook where our own TC filter runs it (no dispatcher)."""
        return tcdirect.index()

    def all(self) -> list[Installed]:
        out = []
        for rel in bpffs.managed_dirs(self.root):
            found = self.one(rel)
            if found is not None:
                out.append(found)
        return out

    def one(self, rel: str) -> Installed | None:
        d = bpffs.dir_of(self.root, rel)
        try:
            with bpf.opened(bpf.obj_get(f"{d}/{PROG}")) as fd:
                prog = bpf.prog_info(fd)
        except OSError as e:
            log.warning("skipping %s: its prog pin cannot be read (%s)", d, e.strerror)
            return None
        return self.describe(rel, prog, _link_at(f"{d}/{LINK}"), maps_of(f"{d}/{MAPS}"))

    def describe(
        self,
        rel: str,
        prog: bpf.ProgInfo,
        link: tuple[str, bpf.LinkInfo | None] | None,
        maps: tuple[MapInfo, ...],
    ) -> Installed:
        """What pin dir ``rel`` holds, from what was read of it: its program, its link pin (and
        the link's info, None when it could not be read; None: no link pin) and its maps."""
        d = bpffs.dir_of(self.root, rel)
        link_id, link_pin, attached, where = self._link(link, prog.id)
        if link_pin is None and prog.id in self.placed:
            attached, where = True, self.placed[prog.id]
        elif link_pin is None and prog.type == bpf.PROG_TYPE_XDP:
            attached, where = self._xdp(prog.id)
        elif link_pin is None and prog.type == bpf.PROG_TYPE_SCHED_CLS:
            # A TC program alone on its hook.
            attached, where = tcdirect.where(prog.id, self.tc_direct)
        elif link_pin is None and prog.type == bpf.PROG_TYPE_EXT:
            where = self.dispatched.get(prog.id)  # a component of one of our dispatchers
            attached = where is not None
        return Installed(
            pin_dir=rel,
            prog_id=prog.id,
            prog_name=prog.name,
            prog_type=prog.type_name,
            tag=prog.tag,
            jited_size=prog.jited_size,
            prog_pin=f"{d}/{PROG}",
            maps=maps,
            link_id=link_id,
            link_pin=link_pin,
            attached=attached,
            attach=where,
        )

    def _link(
        self, link: tuple[str, bpf.LinkInfo | None] | None, prog_id: int
    ) -> tuple[int | None, str | None, bool, AttachView | None]:
        if link is None:
            return None, None, False, None
        path, info = link
        if info is None:
            return None, path, False, None
        where = link_view(info)
        ours = info.prog_id == prog_id
        if info.type == bpf.LINK_TYPE_CGROUP:
            # The kernel zeroes a cgroup link's cgroup_id once its cgroup is removed.
            return info.id, path, ours and bool(info.detail.get("cgroup_id")), where
        if not isinstance(where, TcxLinkView):
            # A perf-event or tracing link runs its program for as long as the link exists.
            return info.id, path, ours, where
        # The kernel zeroes a tcx link's ifindex when its device goes away (the link turns
        # defunct); otherwise the hook's query lists it, which also gives its position. A link
        # in a namespace we cannot see (not ours, not named) keeps its ifindex but goes
        # unconfirmed: it is reported attached without ifname/position.
        found = tcx.tcx_find(info, hooks=self.tcx_hooks)
        if found is not None:
            where = dataclasses.replace(
                where, ifname=found.ifname, position=found.position, netns=found.ns
            )
        return info.id, path, ours and bool(where.ifindex), where

    def _xdp(self, prog_id: int) -> tuple[bool, XdpView | None]:
        places = self.xdp.get(prog_id, [])
        if not places:
            return False, None
        first = places[0]
        return True, XdpView(
            first.iface.ifindex, first.iface.ifname, first.iface.xdp_mode, first.ns
        )


def _link_at(path: str) -> tuple[str, bpf.LinkInfo | None] | None:
    """The link pinned at ``path`` with its info (None: no link pin there; no info: it cannot
    be read)."""
    try:
        fd = bpf.obj_get(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("%s: link pin cannot be read (%s)", path, e.strerror)
        return path, None
    try:
        with bpf.opened(fd):
            return path, bpf.link_info(fd)
    except OSError as e:
        log.warning("%s: link pin cannot be read (%s)", path, e.strerror)
        return path, None


def link_view(info: bpf.LinkInfo) -> AttachView:
    """A link as its link info describes it (a tcx link without its hook: see ``Scan._link``)."""
    d = info.detail  # the types are bpf.link_info's
    if info.type == bpf.LINK_TYPE_TCX:
        return TcxLinkView(cast(int, d["ifindex"]), cast(str, d["attach_type"]))
    if info.type == bpf.LINK_TYPE_CGROUP:
        return CgroupLinkView(cast(int, d["cgroup_id"]), cast(str, d["attach_type"]))
    if info.type == bpf.LINK_TYPE_TRACING:
        obj_id, btf_id = cast(int, d["target_obj_id"]), cast(int, d["target_btf_id"])
        return TracingLinkView(cast(str, d["attach_type"]), obj_id, btf_id)
    if info.type != bpf.LINK_TYPE_PERF_EVENT:
        return OtherLinkView(info.type_name, tuple(d.items()))
    kind = cast(str, d["perf_event_type"])
    if kind == "tracepoint":
        return TracepointLinkView(cast(str, d["tracepoint"]))
    if kind in ("uprobe", "uretprobe"):
        return UprobeLinkView(cast(str, d["file"]), cast(int, d["offset"]), kind == "uretprobe")
    if kind in ("kprobe", "kretprobe"):
        func, offset, addr = cast(str, d["func"]), cast(int, d["offset"]), cast(int, d["addr"])
        return KprobeLinkView(func, offset, kind == "kretprobe", addr)
    return PerfEventLinkView(kind)  # Linux before 6.6 describes no perf event ("unspec")


def maps_of(maps_dir: str) -> tuple[MapInfo, ...]:
    """The maps in an attachment's maps directory; a shared map (a symlink) is reported with
    the path of its pin in the shared maps directory."""
    out = []
    try:
        entries = sorted((e.name, e.is_symlink()) for e in os.scandir(maps_dir))
    except OSError:
        return ()
    for name, symlink in entries:
        if name.startswith("."):
            continue
        path = f"{maps_dir}/{name}"
        try:
            with bpf.opened(bpf.obj_get(path)) as fd:
                info = bpf.map_info(fd)
        except OSError:
            continue
        pin = str(maps.pin_of(Path(path))) if symlink else path
        out.append(MapInfo(name=name, id=info.id, type=info.type_name, pin=pin))
    return tuple(out)


def installed(
    root: Path, pin_dir: str, placed: Mapping[int, AttachView] | None = None
) -> Installed:
    """What ``pin_dir`` holds right after it was installed (an error if it vanished);
    ``placed``: where the attach put programs without a link (see ``Scan``)."""
    found = Scan(root, placed).one(pin_dir)
    if found is None:
        raise KernelError(f"{pin_dir} vanished right after it was installed")
    return found
