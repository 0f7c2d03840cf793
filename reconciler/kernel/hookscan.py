"""Every XDP, TC and TCX hook of the namespaces we can see, with what runs there in run order,
and the bpf links of events (tracepoints, probes, fentry/fexit): ``bpfman list --by-hook``.

Read-only: netlink dumps, BPF_PROG_QUERY, link and program info, and a walk of bpffs to find
who pinned what (the pins are how a program's owner is told: ours, another bpfman root,
libxdp). It knows nothing of addresses or records: ``reconciler.hooksview`` interprets it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from reconciler.kernel.sys import bpf, bpffs, btfinfo, netlink, netns
from reconciler.kernel.tc import hooks as tchooks
from reconciler.kernel.tc import netlink as tcnetlink
from reconciler.kernel.types import KernelError
from reconciler.kernel.xdp import proto as xdpproto

log = logging.getLogger("bpfman.kernel")

DIRECTIONS = ("ingress", "egress")
_SLOT = re.compile(r"^prog(\d+)$")


@dataclass(frozen=True)
class Entry:
    """One program in a hook's run order."""

    prog_id: int
    prog_name: str
    prog_type: str
    via: str  # xdp | xdp_dispatcher | tc_filter | tc_dispatcher | tcx
    priority: int | None = None  # a dispatcher slot's run priority
    chain: tuple[str, ...] | None = None  # a dispatcher slot's chain-call (proceed-on) actions
    link_id: int | None = None  # tcx link, or the freplace link of a dispatcher slot
    dispatcher_id: int | None = None
    slot: int | None = None
    tc_pref: int | None = None  # the cls_bpf filter's pref (and handle, name, direct-action)
    tc_handle: int | None = None
    tc_name: str | None = None
    direct_action: bool | None = None
    pins: tuple[str, ...] = ()  # bpffs paths holding this program or its link

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "prog_id": self.prog_id,
            "prog_name": self.prog_name,
            "prog_type": self.prog_type,
            "via": self.via,
        }
        for key in ("priority", "link_id", "dispatcher_id", "slot", "tc_pref", "tc_handle"):
            if getattr(self, key) is not None:
                doc[key] = getattr(self, key)
        if self.chain is not None:
            doc["chain"] = list(self.chain)
        if self.tc_name is not None:
            doc["tc_name"] = self.tc_name
        if self.direct_action is not None:
            doc["direct_action"] = self.direct_action
        doc["pins"] = list(self.pins)
        return doc


@dataclass(frozen=True)
class Dispatcher:
    prog_id: int
    prog_name: str
    protocol: str  # "libxdp v2" | "bpfman tc"
    pins: tuple[str, ...] = ()  # bpffs paths naming it (ours and libxdp's)


@dataclass(frozen=True)
class Hook:
    kind: str  # xdp | tc | tcx
    netns: str | None  # None: our namespace
    ifindex: int
    ifname: str
    direction: str | None = None  # tc, tcx
    mode: str | None = None  # xdp: native | generic | offload
    dispatchers: tuple[Dispatcher, ...] = ()
    entries: tuple[Entry, ...] = ()


@dataclass(frozen=True)
class EventLink:
    """A bpf link on an event: tracepoint, uprobe, kprobe, fentry/fexit."""

    link_id: int
    link_type: str
    prog_id: int
    prog_name: str
    event: str  # e.g. "tracepoint sys_enter_openat", "uprobe /bin/x+0x1139", "fentry btf 17:1234"
    pins: tuple[str, ...] = ()


@dataclass
class Scan:
    hooks: list[Hook] = field(default_factory=list)
    events: list[EventLink] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what could not be read, and why


# --- who pinned what ---------------------------------------------------------------------------


def _fd_kind(fd: int) -> tuple[str, int] | None:
    """("prog" | "link" | "map", id) of a bpf fd, from its fdinfo (no struct layouts needed)."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
        text = Path(f"/proc/self/fdinfo/{fd}").read_text()
    except OSError:
        return None
    kind = {"anon_inode:bpf-prog": "prog", "anon_inode:bpf_link": "link"}.get(target)
    if kind is None:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == f"{kind}_id":
            return kind, int(value)
    return None


def pinned(tops: Iterable[Path]) -> dict[tuple[str, int], tuple[str, ...]]:
    """("prog" | "link", id) -> the bpffs paths holding it, under ``tops`` (bpffs mounts or
    directories). Map pins and the ``maps`` directories of bpfman's layout are not opened."""
    found: dict[tuple[str, int], list[str]] = {}
    seen: set[str] = set()
    for top in tops:
        for dirpath, dirnames, filenames in os.walk(top):
            if dirpath in seen:
                dirnames[:] = []
                continue
            seen.add(dirpath)
            dirnames[:] = sorted(d for d in dirnames if d != bpffs.MAPS)
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                if os.path.islink(path):
                    continue
                try:
                    fd = bpf.obj_get(path)
                except OSError:
                    continue
                with bpf.opened(fd):
                    what = _fd_kind(fd)
                if what is not None:
                    found.setdefault(what, []).append(path)
    return {k: tuple(v) for k, v in found.items()}


# --- the scan ----------------------------------------------------------------------------------


class _Scanner:
    def __init__(self, tops: Iterable[Path]) -> None:
        self.pins = pinned(tops)
        self.progs: dict[int, bpf.ProgInfo | None] = {}
        self.links: list[bpf.LinkInfo] = []
        for lid in bpf.link_ids():
            try:
                with bpf.opened(bpf.link_fd_by_id(lid)) as fd:
                    self.links.append(bpf.link_info(fd))
            except OSError:
                continue  # went away meanwhile
        self.problems: list[str] = []

    def prog(self, prog_id: int) -> bpf.ProgInfo | None:
        if prog_id not in self.progs:
            try:
                with bpf.opened(bpf.prog_fd_by_id(prog_id)) as fd:
                    self.progs[prog_id] = bpf.prog_info(fd)
            except OSError:
                self.progs[prog_id] = None
        return self.progs[prog_id]

    def pins_of(self, prog_id: int, link_id: int | None = None) -> tuple[str, ...]:
        out = self.pins.get(("prog", prog_id), ())
        if link_id:
            out += self.pins.get(("link", link_id), ())
        return out

    def entry(self, prog_id: int, via: str, **kw: object) -> Entry:
        info = self.prog(prog_id)
        link_id = kw.get("link_id")
        return Entry(
            prog_id=prog_id,
            prog_name=info.name if info else "?",
            prog_type=info.type_name if info else "?",
            via=via,
            pins=self.pins_of(prog_id, link_id if isinstance(link_id, int) else None),
            **kw,  # type: ignore[arg-type]
        )

    def slots(self, dispatcher_id: int) -> dict[int, tuple[int, int]]:
        """slot index -> (prog id, freplace link id) of the programs linked to a dispatcher."""
        linked = [
            li
            for li in self.links
            if li.type == bpf.LINK_TYPE_TRACING and li.detail.get("target_obj_id") == dispatcher_id
        ]
        if not linked:
            return {}
        try:
            with bpf.opened(bpf.prog_fd_by_id(dispatcher_id)) as fd:
                names = btfinfo.func_names(bpf.prog_btf_id(fd))
        except OSError:
            return {}
        out: dict[int, tuple[int, int]] = {}
        for li in linked:
            m = _SLOT.match(names.get(int(li.detail.get("target_btf_id", 0) or 0), ""))  # type: ignore[call-overload]
            if m:
                out.setdefault(int(m[1]), (li.prog_id, li.id))
        return out

    # -- XDP --

    def xdp(self, ns: str | None, iface: netlink.Interface) -> Hook:
        assert iface.xdp_prog_id
        pid = iface.xdp_prog_id
        config = None
        try:
            with bpf.opened(bpf.prog_fd_by_id(pid)) as fd:
                config = xdpproto.read_config(fd)
        except (OSError, KernelError) as e:
            self.problems.append(f"XDP program {pid} on {iface.ifname}: {e}")
        base = dict(netns=ns, ifindex=iface.ifindex, ifname=iface.ifname, mode=iface.xdp_mode)
        if config is None:
            return Hook("xdp", entries=(self.entry(pid, "xdp"),), **base)  # type: ignore[arg-type]
        libxdp = xdpproto.libxdp_pins(iface.ifindex, pid)
        dpins = self.pins_of(pid) + ((str(libxdp),) if libxdp.is_dir() else ())
        disp = Dispatcher(pid, xdpproto.DISPATCHER_NAME, "libxdp v2", dpins)
        slots = self.slots(pid)
        entries = []
        for i in range(config.num_progs_enabled):
            prog_id, link_id = slots.get(i, (0, 0))
            if not prog_id:  # no freplace link found: libxdp's pins say which program
                with (
                    contextlib.suppress(OSError),
                    bpf.opened(bpf.obj_get(str(libxdp / f"prog{i}-prog"))) as fd,
                ):
                    prog_id = bpf.prog_info(fd).id
            if not prog_id:
                self.problems.append(f"slot {i} of XDP dispatcher {pid}: program not found")
                continue
            entries.append(
                self.entry(
                    prog_id,
                    "xdp_dispatcher",
                    priority=config.run_prios[i],
                    chain=_xdp_chain(config.chain_call_actions[i]),
                    link_id=link_id or None,
                    dispatcher_id=pid,
                    slot=i,
                )
            )
        return Hook("xdp", dispatchers=(disp,), entries=tuple(entries), **base)  # type: ignore[arg-type]

    # -- TC (clsact cls_bpf filters), inside the hook's namespace --

    def tc(self, ns: str | None, ifindex: int, ifname: str, direction: str) -> Hook | None:
        found = tcnetlink.filters(ifindex, direction)
        if not found:
            return None
        entries: list[Entry] = []
        dispatchers: list[Dispatcher] = []
        for f in sorted(found, key=lambda f: (f.pref, f.handle)):
            tc = dict(tc_pref=f.pref, tc_handle=f.handle, tc_name=f.name)
            if f.kind != "bpf" or not f.prog_id:
                continue  # not a BPF filter (u32, flower...): not a program
            slots: list[tuple[int, int, int, int]] = []
            if self.slots(f.prog_id):
                try:
                    slots = tchooks.slots_of(f.prog_id)
                except (OSError, KernelError) as e:
                    self.problems.append(f"TC dispatcher {f.prog_id} on {ifname}: {e}")
            if not slots:
                # cls_bpf dumps TCA_BPF_FLAGS only when a flag is set.
                direct = bool((f.flags or 0) & tcnetlink.TCA_BPF_FLAG_ACT_DIRECT)
                entries.append(self.entry(f.prog_id, "tc_filter", direct_action=direct, **tc))
                continue
            info = self.prog(f.prog_id)
            name = info.name if info else "?"
            dispatchers.append(Dispatcher(f.prog_id, name, "bpfman tc", self.pins_of(f.prog_id)))
            links = self.slots(f.prog_id)
            for slot, prog_id, prio, mask in slots:
                entries.append(
                    self.entry(
                        prog_id,
                        "tc_dispatcher",
                        priority=prio,
                        chain=tchooks.proceed_on_of(mask),
                        link_id=links.get(slot, (0, 0))[1] or None,
                        dispatcher_id=f.prog_id,
                        slot=slot,
                        **tc,
                    )
                )
        if not entries:
            return None
        return Hook("tc", ns, ifindex, ifname, direction, None, tuple(dispatchers), tuple(entries))

    def tcx(self, ns: str | None, ifindex: int, ifname: str, direction: str) -> Hook | None:
        try:
            q = bpf.prog_query_tcx(
                ifindex, bpf.TCX_INGRESS if direction == "ingress" else bpf.TCX_EGRESS
            )
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENODEV, errno.EOPNOTSUPP):
                self.problems.append(f"tcx {direction} of {ifname}: {e.strerror}")
            return None
        if not q.prog_ids:
            return None
        entries = tuple(
            self.entry(pid, "tcx", link_id=lid or None)
            for pid, lid in zip(q.prog_ids, q.link_ids, strict=True)
        )
        return Hook("tcx", ns, ifindex, ifname, direction, entries=entries)

    # -- events --

    def events(self) -> list[EventLink]:
        out = []
        for li in self.links:
            event = _event(li)
            if event is None:
                continue
            info = self.prog(li.prog_id)
            out.append(
                EventLink(
                    li.id,
                    li.type_name,
                    li.prog_id,
                    info.name if info else "?",
                    event,
                    self.pins.get(("link", li.id), ()) + self.pins.get(("prog", li.prog_id), ()),
                )
            )
        return out


def _xdp_chain(bits: int) -> tuple[str, ...]:
    """The proceed-on names of a slot, with ``dispatcher_return`` for the continue bit (as
    bpfman's manifests spell it)."""
    names = xdpproto.action_names(bits)
    return (*names, "dispatcher_return") if bits & (1 << xdpproto.CONTINUE_BIT) else names


def _event(li: bpf.LinkInfo) -> str | None:
    d = li.detail
    if li.type == bpf.LINK_TYPE_PERF_EVENT:
        kind = str(d.get("perf_event_type", "unspec"))
        if kind == "tracepoint":
            return f"tracepoint {d.get('tracepoint')}"
        if kind in ("uprobe", "uretprobe"):
            return f"{kind} {d.get('file')}+{int(d.get('offset', 0) or 0):#x}"  # type: ignore[call-overload]
        if kind in ("kprobe", "kretprobe"):
            off = int(d.get("offset", 0) or 0)  # type: ignore[call-overload]
            return f"{kind} {d.get('func')}" + (f"+{off:#x}" if off else "")
        return f"perf_event {kind}"
    if li.type == bpf.LINK_TYPE_TRACING:
        atype = str(d.get("attach_type", ""))
        fentry = (str(bpf.TRACE_FENTRY), bpf.ATTACH_TYPE_NAMES[bpf.TRACE_FENTRY], "fentry")
        fexit = (str(bpf.TRACE_FEXIT), bpf.ATTACH_TYPE_NAMES[bpf.TRACE_FEXIT], "fexit")
        if atype in fentry + fexit:
            kind = "fentry" if atype in fentry else "fexit"
            obj, type_id = d.get("target_obj_id"), d.get("target_btf_id")
            name = _btf_func_names(int(obj or 0)).get(int(type_id or 0))  # type: ignore[call-overload]
            return f"{kind} {name}" if name else f"{kind} btf {obj}:{type_id}"
        return None  # freplace on a dispatcher slot: shown on its hook
    return None


@cache
def _btf_func_names(btf_obj_id: int) -> dict[int, str]:
    """The kernel function names of a BTF object (vmlinux or a module), read once per scan's
    process: an fentry or fexit link names its function only by BTF id."""
    return btfinfo.func_names(btf_obj_id) if btf_obj_id else {}


def scan(extra_tops: Iterable[Path] = ()) -> Scan:
    """Every hook with a program, in every namespace ``netns.all_known`` lists (ours, the named
    ones, those the engine was told), and every event link. ``extra_tops``: directories to look
    for pins in besides the bpffs mount (a root elsewhere)."""
    tops = [bpffs.DEFAULT_MOUNT, *(t for t in extra_tops if bpffs.DEFAULT_MOUNT not in t.parents)]
    s = _Scanner(t for t in tops if t.is_dir())
    out = Scan(problems=s.problems)
    for ns in netns.all_known():
        try:
            ifaces = netlink.interfaces(ns)
        except (KernelError, OSError) as e:
            s.problems.append(f"network namespace {ns}: {e}")
            continue
        for iface in sorted(ifaces, key=lambda i: i.ifindex):
            if iface.xdp_prog_id:
                out.hooks.append(s.xdp(ns, iface))
        try:
            with netns.enter(ns):
                for iface in sorted(ifaces, key=lambda i: i.ifindex):
                    for direction in DIRECTIONS:
                        # tcx runs before the clsact filters of the same direction.
                        for found in (
                            s.tcx(ns, iface.ifindex, iface.ifname, direction),
                            s.tc(ns, iface.ifindex, iface.ifname, direction),
                        ):
                            if found is not None:
                                out.hooks.append(found)
        except (KernelError, OSError) as e:
            s.problems.append(f"network namespace {ns}: {e}")
    out.events = s.events()
    return out
