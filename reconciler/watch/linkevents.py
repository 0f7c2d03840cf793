"""Netlink link events: tell the watcher when interfaces appear, vanish, are renamed or set up/down.

A socket subscribed to RTMGRP_LINK is opened in every watched network namespace (a netlink socket
belongs for its lifetime to the namespace it was created in, so each one is opened inside
``netns.enter``). One background thread polls them all, keeps the interfaces of each namespace
(ifindex -> name, administratively up) and reports only what changes that picture. The kernel
sends RTM_NEWLINK for much more (statistics, carrier, MTU, XDP attach, bridge ports...); those
are dropped here, so that attaching our own programs never triggers another reconcile.

Why a raw socket and a 40-line parser rather than a netlink library (bpfman uses none; its
requests go through ``kernel.sys.rtnl``): only the ifinfomsg header and IFLA_IFNAME matter here,
and plain sockets let one thread poll() every namespace plus a wake-up pipe, and see ENOBUFS (a
socket overrun) as the plain errno it is.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from reconciler.kernel.sys import netns
from reconciler.kernel.types import KernelError
from reconciler.watch.burst import Burst

log = logging.getLogger("bpfman.watch.links")

NETLINK_ROUTE = 0
RTMGRP_LINK = 1
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
NLM_F_REQUEST, NLM_F_DUMP_INTR, NLM_F_DUMP = 0x1, 0x10, 0x300
IFLA_IFNAME = 3
IFF_UP = 0x1
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, (pad), type, index, flags, change
_RTATTR = struct.Struct("=HH")  # len, type
_NLMSGERR = struct.Struct("=i")

OVERRUN = "netlink overrun: re-reading all interfaces"

# A burst (a CNI plugin creating a veth, renaming it and setting it up; `ip -batch`) settles
# within milliseconds; 100 ms of quiet makes it one reconcile. The cap keeps a steady trickle of
# changes from postponing the reconcile forever: the issue allows 1 s from event to programs.
SETTLE = 0.1
MAX_DELAY = 0.5
# How often watched namespace paths are checked (a stat each). Our socket holds a reference to
# its namespace, so a deleted namespace (and its veths) lives on until we notice and close it.
NS_CHECK = 0.5
# Room for a burst of a few hundred link messages between two reads; root may exceed rmem_max.
RCVBUF = 1 << 20
_READ_SIZE = 1 << 16  # dumps come in <= 32 KiB datagrams; a larger message is seen as truncated
_DUMP_TIMEOUT = 5.0


@dataclass(frozen=True)
class _Link:
    name: str
    up: bool


@dataclass(frozen=True)
class _LinkMsg:
    type: int
    flags: int
    seq: int
    pid: int
    family: int = 0
    index: int = 0
    ifflags: int = 0
    name: str | None = None
    error: int = 0


def _parse(data: memoryview) -> Iterator[_LinkMsg]:
    """The messages of one datagram; link messages with their header and name, others bare."""
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, mtype, flags, seq, pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size or off + length > len(data):
            return  # malformed: the kernel never sends this, do not loop on it
        body = data[off + _NLMSGHDR.size : off + length]
        off += (length + 3) & ~3
        if mtype in (RTM_NEWLINK, RTM_DELLINK) and len(body) >= _IFINFOMSG.size:
            family, _, index, ifflags, _ = _IFINFOMSG.unpack_from(body)
            yield _LinkMsg(mtype, flags, seq, pid, family, index, ifflags, _ifname(body))
        elif mtype == NLMSG_ERROR and len(body) >= _NLMSGERR.size:
            yield _LinkMsg(mtype, flags, seq, pid, error=-_NLMSGERR.unpack_from(body)[0])
        else:
            yield _LinkMsg(mtype, flags, seq, pid)


def _ifname(body: memoryview) -> str | None:
    off = _IFINFOMSG.size
    while off + _RTATTR.size <= len(body):
        alen, atype = _RTATTR.unpack_from(body, off)
        if alen < _RTATTR.size:
            return None
        if atype == IFLA_IFNAME:
            raw = bytes(body[off + _RTATTR.size : off + alen])
            return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
        off += (alen + 3) & ~3
    return None


def _where(ns: str | None) -> str:
    return f" in network namespace {ns}" if ns else ""


class _Feed:
    """One subscribed socket in one namespace and the interfaces it knows there."""

    def __init__(self, ns: str | None, sock: socket.socket, ident: tuple[int, int]) -> None:
        self.ns = ns
        self.sock = sock
        self.ident = ident  # the namespace the socket lives in, to notice it being replaced
        self.port: int = sock.getsockname()[0]
        self.links: dict[int, _Link] = {}
        self._seq = 0
        self.dump_seq: int | None = None  # a dump of every link is under way
        self._fresh: dict[int, _Link] = {}
        self._redo = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def request_dump(self) -> None:
        """Re-read every interface; until it is done, changes are applied but not reported."""
        if self.dump_seq is not None:
            self._redo = True  # one dump at a time per socket (the kernel answers EBUSY)
            return
        self._seq += 1
        req = _NLMSGHDR.pack(
            _NLMSGHDR.size + _IFINFOMSG.size, RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, self._seq, 0
        ) + _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        self.sock.send(req)
        self.dump_seq, self._fresh, self._redo = self._seq, {}, False

    def read(self, buf: bytearray) -> list[str]:
        """Read one datagram; return the changes it brings (empty while a dump is running)."""
        try:
            n, _, flags, _ = self.sock.recvmsg_into([buf])
        except BlockingIOError:
            return []
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            # Events were dropped: what we know is stale. Re-read everything, and tell the
            # watcher to reconcile fully since we cannot say what changed.
            self.request_dump()
            return [OVERRUN]
        if flags & socket.MSG_TRUNC:
            self.request_dump()  # a message larger than our buffer: its name is lost
            return [OVERRUN]
        changes: list[str] = []
        for msg in _parse(memoryview(buf)[:n]):
            changes += self._handle(msg)
        return changes if self.dump_seq is None else []

    def _handle(self, msg: _LinkMsg) -> list[str]:
        ours = self.dump_seq is not None and msg.pid == self.port and msg.seq == self.dump_seq
        if ours and msg.type in (NLMSG_DONE, NLMSG_ERROR):
            if msg.type == NLMSG_ERROR and msg.error:
                log.warning(
                    "listing interfaces%s failed: %s", _where(self.ns), os.strerror(msg.error)
                )
            else:
                self.links = self._fresh
            self.dump_seq = None
            if self._redo or msg.flags & NLM_F_DUMP_INTR:
                self.request_dump()  # interfaces changed while being listed, or events dropped
            return []
        if msg.type not in (RTM_NEWLINK, RTM_DELLINK) or msg.family != socket.AF_UNSPEC:
            # AF_BRIDGE RTM_NEWLINK/DELLINK are about bridge ports (enslave, release), not about
            # the interface existing: a DELLINK of that family must not read as a removal.
            return []
        if ours and msg.flags & NLM_F_DUMP_INTR:
            self._redo = True
        if self.dump_seq is not None:
            # While listing, replies and events both update the fresh picture in the order the
            # kernel queued them; nothing is reported (the dump's requester already did).
            _apply(self._fresh, msg, self.links)
            return []
        return _apply(self.links, msg, self.links, self.ns)


def _apply(
    links: dict[int, _Link], msg: _LinkMsg, known: dict[int, _Link], ns: str | None = None
) -> list[str]:
    """Update ``links`` with one link message; say what changed (only what a reconcile cares
    about: an ifindex appearing or going, its name, its administrative up state)."""
    old = links.get(msg.index)
    if msg.type == RTM_DELLINK:
        links.pop(msg.index, None)
        name = old.name if old else msg.name
        return [f"interface {name} removed{_where(ns)}"] if name else []
    prior = old or known.get(msg.index)
    name = msg.name or (prior.name if prior else None)
    if name is None:
        return []  # an update without a name for an interface we never saw: nothing to say
    # IFF_UP only, not carrier (IFF_LOWER_UP/IFF_RUNNING): programs attach whatever the carrier,
    # and a flapping link (or a veth whose peer goes down) must not cause a reconcile storm.
    new = _Link(name, bool(msg.ifflags & IFF_UP))
    links[msg.index] = new
    if old is None:
        return [f"interface {name} added{_where(ns)}"]
    if old.name != new.name:
        return [f"interface {old.name} renamed to {new.name}{_where(ns)}"]
    if old.up != new.up:
        return [f"interface {name} set {'up' if new.up else 'down'}{_where(ns)}"]
    return []  # statistics, carrier, MTU, XDP, ...: the flood this watch exists to ignore


def summary(changes: list[str]) -> str:
    """One reason for a coalesced batch: the overrun notice if any (a full re-read), else the
    first and last change and how many there were."""
    unique = list(dict.fromkeys(changes))
    if OVERRUN in unique:
        return OVERRUN if len(unique) == 1 else f"{OVERRUN} ({len(unique) - 1} more changes)"
    if len(unique) == 1:
        return unique[0]
    if len(unique) == 2:
        return f"{unique[0]}; {unique[1]}"
    return f"{unique[0]}; ... {unique[-1]} ({len(unique)} changes)"


class LinkWatch:
    """Watch interfaces in the network namespaces ``namespaces()`` returns (None: the host's;
    others are namespace file paths such as /run/netns/NAME) and call ``on_change(reason)``
    once per settled burst of changes, from a background thread.

    ``start()`` returns once every namespace that exists is watched: an interface change after
    it is never missed, so a watcher should start this before its first reconcile. Namespaces
    that do not exist (yet) are retried every ``NS_CHECK`` seconds; one appearing, or a watched
    one disappearing or being replaced, is a change too (its interfaces came or went with it).
    """

    def __init__(
        self,
        on_change: Callable[[str], None],
        namespaces: Callable[[], Iterable[str | None]] = lambda: [None],
        *,
        settle: float = SETTLE,
        max_delay: float = MAX_DELAY,
        rcvbuf: int = RCVBUF,
    ) -> None:
        self._on_change = on_change
        self._namespaces = namespaces
        self._burst, self._rcvbuf = Burst(settle, max_delay), rcvbuf
        self._feeds: dict[str | None, _Feed] = {}  # owned by the thread once it runs
        self._missing: set[str | None] = set()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards the requests below, made by other threads
        self._wanted: list[str | None] | None = None
        self._applied = threading.Event()
        self._stopping = False
        self._wake_r, self._wake_w = -1, -1

    # -- public API -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def watched(self) -> list[str | None]:
        """Namespaces with an open socket (a snapshot; for status and tests)."""
        return list(self._feeds)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("LinkWatch already started")
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        try:
            self._set_namespaces(self._read_namespaces(), announce=False)
        except BaseException:
            for feed in self._feeds.values():
                feed.close()
            self._feeds.clear()
            os.close(self._wake_r)
            os.close(self._wake_w)
            raise
        self._thread = threading.Thread(target=self._run, name="bpfman-linkwatch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread and close every socket (pending changes are dropped: the watcher is
        stopping too)."""
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        self._wake()
        if thread is not threading.current_thread():  # stop() from inside on_change
            thread.join(timeout)
            if thread.is_alive():
                log.warning("link watch thread did not stop within %.1f s", timeout)
                return  # it closes the sockets itself when it ends; the pipe is leaked
        self._thread = None
        os.close(self._wake_r)
        os.close(self._wake_w)

    def refresh_namespaces(self, timeout: float = 5.0) -> None:
        """Re-read ``namespaces()`` (manifests may name new ones) and watch exactly those; on
        return, new namespaces are watched. A namespace newly watched is reported as a change:
        interfaces may have come between the reconcile that named it and this call."""
        wanted = self._read_namespaces()
        if not self.running:
            return  # start() reads them
        with self._lock:
            self._wanted = wanted
            self._applied.clear()
        self._wake()
        if threading.current_thread() is not self._thread:
            self._applied.wait(timeout)

    # -- the thread -------------------------------------------------------------------------

    def _read_namespaces(self) -> list[str | None]:
        # Normalised as the planner normalises netns paths; duplicates dropped, order kept.
        found = [os.path.normpath(ns) if ns else None for ns in self._namespaces()]
        return list(dict.fromkeys(found))

    def _wake(self) -> None:
        # BlockingIOError: the pipe is full, so a wake-up is pending anyway.
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        buf = bytearray(_READ_SIZE)
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        registered: dict[int, _Feed] = {}
        next_check = time.monotonic() + NS_CHECK
        try:
            while not self._stopping:
                live = {f.fileno(): f for f in self._feeds.values()}
                for fd in registered.keys() - live.keys():
                    poller.unregister(fd)
                for fd in live.keys() - registered.keys():
                    poller.register(fd, select.POLLIN)
                registered = live
                now = time.monotonic()
                deadline = min(next_check, self._burst.due() or next_check)
                for fd, _ in poller.poll(max(0.0, deadline - now) * 1000):
                    if fd == self._wake_r:
                        self._drain_wake()
                    elif fd in registered:
                        self._read(registered[fd], buf)
                self._take_requests()
                now = time.monotonic()
                if now >= next_check:
                    self._check_namespaces()
                    next_check = now + NS_CHECK
                self._flush_if_settled(now)
        except Exception:
            log.exception("link watch stopped by a bug; interface changes are seen by interval")
        finally:
            for feed in self._feeds.values():
                feed.close()
            self._feeds.clear()
            self._applied.set()
            # The wake-up pipe is closed by stop(), after the join: closing it here could let
            # another thread's _wake() write into an unrelated file reusing the descriptor.

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _read(self, feed: _Feed, buf: bytearray) -> None:
        try:
            self._note(feed.read(buf))
        except OSError as e:
            # Not expected from a netlink socket we own; drop it and let the namespace check
            # reopen it rather than spin on the error.
            log.warning("netlink socket%s failed (%s); reopening", _where(feed.ns), e)
            self._drop(feed.ns)
            self._missing.add(feed.ns)
            self._note([f"link events{_where(feed.ns)} lost: re-reading interfaces"])

    def _note(self, changes: list[str]) -> None:
        self._burst.note(changes, time.monotonic())

    def _flush_if_settled(self, now: float) -> None:
        changes = self._burst.take(now)
        if changes is None:
            return
        reason = summary(changes)
        try:
            self._on_change(reason)
        except Exception:
            log.exception("link change callback failed (%s)", reason)

    def _take_requests(self) -> None:
        with self._lock:
            wanted, self._wanted = self._wanted, None
        if wanted is not None:
            self._set_namespaces(wanted, announce=True)
            self._applied.set()

    def _set_namespaces(self, wanted: list[str | None], announce: bool) -> None:
        for ns in [*self._feeds, *self._missing]:
            if ns not in wanted:
                self._drop(ns)
                self._missing.discard(ns)
        for ns in wanted:
            if ns in self._feeds or ns in self._missing:
                continue
            if self._open(ns) and announce:
                self._note([f"network namespace {ns or 'of the host'} is now watched"])

    def _check_namespaces(self) -> None:
        """Close sockets whose namespace is gone or replaced (ours keeps it alive otherwise);
        open those that appeared."""
        for ns, feed in list(self._feeds.items()):
            if ns is None:
                continue
            try:
                same = netns.identity(ns) == feed.ident
            except OSError:
                same = False
            if not same:
                self._drop(ns)
                self._missing.add(ns)
                self._note([f"network namespace {ns} disappeared"])
        for ns in list(self._missing):
            if self._open(ns):
                self._note([f"network namespace {ns or 'of the host'} appeared"])

    def _drop(self, ns: str | None) -> None:
        feed = self._feeds.pop(ns, None)
        if feed is not None:
            feed.close()

    def _open(self, ns: str | None) -> bool:
        """Subscribe in ``ns`` and list its interfaces (the baseline changes are measured
        against). False (and ``ns`` retried later) if it cannot be entered now."""
        try:
            feed = _subscribe(ns, self._rcvbuf)
        except (KernelError, OSError) as e:
            if ns is None and self._thread is None:
                raise  # start() cannot watch the host's own namespace: say so to the caller
            if ns not in self._missing:
                log.info("not watching network namespace %s yet: %s", ns, e)
            self._missing.add(ns)
            return False
        self._missing.discard(ns)
        self._feeds[ns] = feed
        return True


def _subscribe(ns: str | None, rcvbuf: int) -> _Feed:
    with netns.enter(ns):
        sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE
        )
        ident = netns.identity()  # of this thread, now in ns: the socket's namespace
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        # Subscribe before listing, so nothing happens between the two unseen.
        sock.bind((0, RTMGRP_LINK))
        sock.setblocking(False)
        feed = _Feed(ns, sock, ident)
        feed.request_dump()
        buf = bytearray(_READ_SIZE)
        deadline = time.monotonic() + _DUMP_TIMEOUT
        while feed.dump_seq is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise OSError(errno.ETIMEDOUT, f"listing interfaces{_where(ns)} timed out")
            select.select([sock], [], [], left)
            feed.read(buf)  # changes during the baseline are not reported: it is the baseline
        return feed
    except BaseException:
        sock.close()
        raise
