"""bpfman's own rtnetlink (kernel.sys.rtnl, kernel.sys.netlink) against what `ip` sees: the
interfaces of a namespace, XDP attached, swapped only if the expected program is there, and the
kernel's extended-ack message when it refuses."""

from __future__ import annotations

import errno
import json
import os
import struct
from collections.abc import Iterator

import pytest

from reconciler.kernel.sys import netlink, rtnl
from reconciler.kernel.sys.bpf import PROG_TYPE_XDP
from reconciler.kernel.sys.bpfobject import LibbpfObject
from tests import support
from tests.kernel.harness import obj


def test_attributes_round_trip_and_nested_flag_is_cleared() -> None:
    raw = rtnl.nla(3, b"eth0\0") + rtnl.nla(43 | rtnl.NLA_F_NESTED, rtnl.nla(4, b"\7\0\0\0"))
    assert len(raw) % 4 == 0
    found = rtnl.attrs(raw)
    assert found[3] == b"eth0\0"
    assert rtnl.attrs(found[43]) == {4: b"\7\0\0\0"}
    assert rtnl.attrs(b"\0\0\0\0garbage") == {}  # a zero length ends the walk, never loops


def test_an_error_answer_carries_the_extack_message_or_the_code_name() -> None:
    header = struct.pack("=IHHII", 16, 19, 5, 1, 0)  # the echoed request header (CAP_ACK)
    payload = struct.pack("=i", -errno.EBUSY) + header
    plain = rtnl._error(payload, 0)
    assert plain is not None and plain.code == errno.EBUSY
    assert plain.message == os.strerror(errno.EBUSY)
    told = rtnl._error(payload + rtnl.nla(rtnl.NLMSGERR_ATTR_MSG, b"in use\0"), rtnl.NLM_F_ACK_TLVS)
    assert told is not None and told.message == "in use" and told.errno == errno.EBUSY
    assert rtnl._error(struct.pack("=i", 0) + header, 0) is None  # an ack


@pytest.fixture
def pair() -> Iterator[support.VethPair]:
    p = support.create_veth_pair()
    try:
        yield p
    finally:
        support.delete_veth_pair(p)


def _ip_links(ns: str) -> dict[str, dict]:
    out = support.sh("ip", "-j", "-d", "-n", ns, "link", "show").stdout
    return {link["ifname"]: link for link in json.loads(out)}


def _ip_xdp_prog(ns: str, ifname: str) -> int | None:
    xdp = _ip_links(ns)[ifname].get("xdp")
    return xdp["prog"]["id"] if xdp else None


@pytest.mark.kernel
def test_interfaces_and_xdp_attach_agree_with_ip(pair: support.VethPair) -> None:
    ns = pair.netns_a
    listed = {i.ifname: i for i in netlink.interfaces(ns)}
    by_ip = _ip_links(pair.ns_a)
    assert set(listed) == set(by_ip)
    assert {n: i.ifindex for n, i in listed.items()} == {n: by_ip[n]["ifindex"] for n in by_ip}
    assert netlink.interface("nosuch0", ns) is None
    with pytest.raises(netlink.NetlinkFailure, match="cannot look up interface"):
        netlink.interface("x" * 40, ns)  # the kernel's policy refuses the name, told as such

    with LibbpfObject(obj("xdp_pass")) as first, LibbpfObject(obj("xdp_pass")) as second:
        first.select("xdp_foreign", PROG_TYPE_XDP)
        second.select("xdp_foreign", PROG_TYPE_XDP)
        fd1, fd2 = first.load(), second.load()
        try:
            assert netlink.xdp_attach(pair.if_a, fd1, "generic", ns) == "generic"
            prog1 = _ip_xdp_prog(pair.ns_a, pair.if_a)
            assert prog1 is not None
            seen = netlink.interface(pair.if_a, ns)
            assert seen is not None and (seen.xdp_prog_id, seen.xdp_mode) == (prog1, "generic")

            # Without a replace the kernel refuses to clobber, and says why.
            with pytest.raises(netlink.NetlinkFailure) as refused:
                netlink.xdp_attach(pair.if_a, fd2, "generic", ns)
            assert refused.value.errno in (errno.EBUSY, errno.EEXIST)
            assert str(refused.value) and _ip_xdp_prog(pair.ns_a, pair.if_a) == prog1

            # A swap that expects the wrong program changes nothing.
            with pytest.raises(netlink.NetlinkFailure) as wrong:
                netlink.xdp_attach(pair.if_a, fd1, "generic", ns, replace_fd=fd2)
            assert wrong.value.errno == errno.EEXIST
            assert _ip_xdp_prog(pair.ns_a, pair.if_a) == prog1

            netlink.xdp_attach(pair.if_a, fd2, "generic", ns, replace_fd=fd1)
            prog2 = _ip_xdp_prog(pair.ns_a, pair.if_a)
            assert prog2 not in (None, prog1)

            assert netlink.xdp_detach(pair.if_a, fd1, "generic", ns) is False  # not fd1's
            assert _ip_xdp_prog(pair.ns_a, pair.if_a) == prog2
            assert netlink.xdp_detach(pair.if_a, fd2, "generic", ns) is True
            assert _ip_xdp_prog(pair.ns_a, pair.if_a) is None
        finally:
            support.sh("ip", "-n", pair.ns_a, "link", "set", pair.if_a, "xdpgeneric", "off")
