"""Reading our XDP dispatchers' pins (never writes): a hook's current dispatcher and its
components, where each component runs (for observe), and the revisions a killed apply left.

Pins (see docs/dispatchers.md)::

    <root>/%xdp/<netns inode>-<ifindex>/dispatch-<id>/dispatcher, prog<N>-link
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from reconciler.kernel.components import Component
from reconciler.kernel.pins import prog_id_at
from reconciler.kernel.sys import bpf, netlink, netns
from reconciler.kernel.types import DispatcherSlot, KernelError, XdpDispatcherView
from reconciler.kernel.xdp import proto as xdpproto
from reconciler.kernel.xdp.attach import XdpAttachment
from reconciler.kernel.xdp.proto import Config

HOOKS = "%xdp"
DISPATCHER = "dispatcher"


@dataclass
class Current:
    iface: netlink.Interface
    dispatcher_id: int | None = None
    components: tuple[Component, ...] = ()
    direct: int | None = None  # a program that is not a dispatcher


def hook_dir(root: Path, ns: str | None, ifindex: int) -> Path:
    return root / HOOKS / f"{netns.identity(ns)[1]}-{ifindex}"


def slot_prog_ids(
    root: Path, ns: str | None, ifindex: int, dispatcher_id: int, config: Config
) -> list[int]:
    """Program ids of a dispatcher's slots, from libxdp's pins (or, if those are gone, ours)."""
    libxdp = xdpproto.libxdp_pins(ifindex, dispatcher_id)
    ours = hook_dir(root, ns, ifindex) / f"dispatch-{dispatcher_id}"
    out = []
    for i in range(config.num_progs_enabled):
        pid = prog_id_at(libxdp / f"prog{i}-prog")
        if pid is None:
            link = str(ours / f"prog{i}-link")
            with contextlib.suppress(OSError), bpf.opened(bpf.obj_get(link)) as fd:
                pid = bpf.link_info(fd).prog_id
        if pid is None:
            raise KernelError(
                f"slot {i} of the XDP dispatcher id {dispatcher_id} (ifindex {ifindex}) has no "
                f"pins in {libxdp} nor {ours}: its programs cannot be found"
            )
        out.append(pid)
    return out


def where(root: Path, xdp: dict[int, list[XdpAttachment]]) -> dict[int, XdpDispatcherView]:
    """For observe: component prog id -> its place on a dispatcher, for every dispatcher that
    runs on an interface (``xdp``: prog id -> where it is attached, as observe's Scan has it)."""
    out: dict[int, XdpDispatcherView] = {}
    for prog_id, places in xdp.items():
        try:
            with bpf.opened(bpf.prog_fd_by_id(prog_id)) as fd:
                config = xdpproto.read_config(fd)
        except (OSError, KernelError):
            continue
        if config is None:
            continue
        for place in places:
            try:
                ids = slot_prog_ids(root, place.ns, place.iface.ifindex, prog_id, config)
            except (KernelError, OSError):
                continue
            for i, pid in enumerate(ids):
                proceed_on = xdpproto.action_names(config.chain_call_actions[i])
                slot = DispatcherSlot(prog_id, i, config.run_prios[i], proceed_on)
                iface = place.iface
                view = XdpDispatcherView(
                    slot, iface.ifindex, iface.ifname, iface.xdp_mode, place.ns
                )
                out.setdefault(pid, view)
    return out


# --- what a killed apply leaves ------------------------------------------------------------


def hook_dirs(root: Path) -> list[tuple[Path, str | None, int, int | None]]:
    """(hook dir, namespace, ifindex, XDP program id running there) of every hook dir whose
    namespace we can enter; a hook in a namespace we cannot see is left alone."""
    hooks = root / HOOKS
    if not hooks.is_dir():
        return []
    namespaces = netns.by_inode()
    dumps: dict[int, dict[int, int | None]] = {}  # one netlink dump per namespace
    out = []
    for hdir in sorted(hooks.iterdir()):
        try:
            ino, ifindex = (int(x) for x in hdir.name.split("-"))
            ns = namespaces[ino]
            if ino not in dumps:
                dumps[ino] = {i.ifindex: i.xdp_prog_id for i in netlink.interfaces(ns)}
        except (ValueError, KeyError, OSError, KernelError):
            continue
        out.append((hdir, ns, ifindex, dumps[ino].get(ifindex) or None))
    return out


def revisions(hdir: Path) -> list[tuple[Path, int]]:
    out = []
    for d in sorted(hdir.iterdir()):
        with contextlib.suppress(ValueError):
            out.append((d, int(d.name.removeprefix("dispatch-"))))
    return out


def leftovers(root: Path) -> list[str]:
    """Our dispatcher revisions that their interface does not run: pinned by an apply killed
    before its swap, or not yet removed by one killed after it."""
    return [
        str(d.relative_to(root))
        for hdir, _ns, _ifindex, running in hook_dirs(root)
        for d, disp_id in revisions(hdir)
        if disp_id != running
    ]
