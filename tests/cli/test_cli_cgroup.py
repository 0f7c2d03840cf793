"""CgroupSkbProgram and CgroupSockAddrProgram end to end: validate, plan, apply, get/list, a
second apply that changes nothing, a replacement and destroy, on a child cgroup of this test's
own. Observed independently with `bpftool cgroup show` and by what the programs do: a process
inside the cgroup cannot reach the guarded loopback port (the cgroup_skb guard makes sendto()
fail with EPERM, the connect4 guard connect()), one outside can."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import cgroups, support
from tests.cli.conftest import TEST_BPF

pytestmark = pytest.mark.kernel


def cgroup_manifest(
    name: str, bytecode: str, cgroup: Path, port: int, function: str = "guard_egress"
) -> str:
    low, high = port & 0xFF, port >> 8
    return f"""apiVersion: bpfman.io/v1alpha1
kind: CgroupSkbProgram
metadata:
  name: {name}
spec:
  bpffunctionname: {function}
  bytecode:
    path: {bytecode}
  cgroup: {cgroup}
  direction: egress
  globaldata:
    blocked_port: [{low:#04x}, {high:#04x}]
"""


def attached(cgroup: Path) -> list[tuple[int, str]]:
    """(program id, attach type) of every program `bpftool cgroup show` lists on the cgroup."""
    out = support.sh("bpftool", "-j", "cgroup", "show", str(cgroup)).stdout
    return [(p["id"], p["attach_type"]) for p in json.loads(out.strip() or "[]")]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cgroup() -> Iterator[Path]:
    with cgroups.child_cgroup() as path:
        yield path


def test_cgroup_skb_validate_plan_apply_get_destroy(no_leaks, bpfman, mdir, cgroup):
    port = _free_port()
    address = f"CgroupSkbProgram/guard[{cgroup}:egress]"
    bytecode = mdir.bytecode(TEST_BPF / "cgroup_skb.o")
    mdir.write("guard.yaml", cgroup_manifest("guard", bytecode, cgroup, port))

    bpfman.run("validate", mdir.source)
    plan = bpfman.run("plan", mdir.source).stdout
    assert address in plan and "1 to add" in plan
    assert attached(cgroup) == []  # planning changed nothing

    assert "Resources: 1 added" in bpfman.run("apply", mdir.source, "--auto-approve").stdout
    got = json.loads(bpfman.run("get", address, "--json").stdout)
    kernel = got["kernel"]
    assert kernel["attached"] and kernel["prog_type"] == "cgroup_skb"
    assert kernel["attach_point"]["cgroup_id"] == cgroup.stat().st_ino
    assert attached(cgroup) == [(kernel["prog_id"], "cgroup_inet_egress")]
    listed = json.loads(bpfman.run("list", "--json").stdout)["attachments"]
    assert [e["address"] for e in listed] == [address]

    assert cgroups.send_from(cgroup, port)[0] == "EPERM"  # the guard runs in the cgroup
    assert cgroups.send_from(None, port) == ("sent", "sent")  # and only there
    (dropped,) = [m for m in kernel["maps"] if m["name"] == "dropped"]
    assert support.map_u64(f"id {dropped['id']}") >= 1

    assert "No changes." in bpfman.run("plan", mdir.source).stdout
    again = bpfman.run("apply", mdir.source, "--auto-approve").stdout
    assert "No changes. Kernel state matches the manifests." in again
    assert "Resources: 0 added, 0 changed, 0 destroyed." in again
    assert attached(cgroup) == [(kernel["prog_id"], "cgroup_inet_egress")]

    # Another function: replaced, a new link before the old one goes; the guard is gone.
    mdir.write("guard.yaml", cgroup_manifest("guard", bytecode, cgroup, port, "count_egress"))
    assert "must be replaced" in bpfman.run("plan", mdir.source).stdout
    bpfman.run("apply", mdir.source, "--auto-approve")
    new = json.loads(bpfman.run("get", address, "--json").stdout)["kernel"]
    assert new["prog_id"] != kernel["prog_id"] and new["attached"]
    assert attached(cgroup) == [(new["prog_id"], "cgroup_inet_egress")]
    assert cgroups.send_from(cgroup, port) == ("sent", "sent")

    bpfman.run("destroy", "--auto-approve")
    assert attached(cgroup) == []
    assert json.loads(bpfman.run("list", "--json").stdout)["attachments"] == []


def test_cgroup_skb_plan_refuses_a_directory_that_is_no_cgroup(bpfman, mdir, tmp_path):
    bytecode = mdir.bytecode(TEST_BPF / "cgroup_skb.o")
    mdir.write("guard.yaml", cgroup_manifest("guard", bytecode, tmp_path, 4242))
    bpfman.run("validate", mdir.source)  # validation does not ask the host
    p = bpfman.run("plan", mdir.source, expect=1)
    assert "not on a cgroup v2 file system" in p.stdout + p.stderr
    missing = tmp_path / "missing"
    mdir.write("guard.yaml", cgroup_manifest("guard", bytecode, missing, 4242))
    p = bpfman.run("plan", mdir.source, expect=1)
    assert f"cgroup directory {missing} does not exist" in p.stdout + p.stderr


def sock_addr_manifest(name: str, bytecode: str, cgroup: Path, port: int) -> str:
    low, high = port & 0xFF, port >> 8
    return f"""apiVersion: bpfman.io/v1alpha1
kind: CgroupSockAddrProgram
metadata:
  name: {name}
spec:
  bpffunctionname: guard_connect4
  bytecode:
    path: {bytecode}
  cgroup: {cgroup}
  attachtype: connect4
  globaldata:
    blocked_port: [{low:#04x}, {high:#04x}]
"""


def test_cgroup_sock_addr_apply_get_destroy(no_leaks, bpfman, mdir, cgroup):
    port = _free_port()
    address = f"CgroupSockAddrProgram/connect-guard[{cgroup}:connect4]"
    bytecode = mdir.bytecode(TEST_BPF / "cgroup_sock_addr.o")
    mdir.write("guard.yaml", sock_addr_manifest("connect-guard", bytecode, cgroup, port))

    bpfman.run("validate", mdir.source)
    assert "Resources: 1 added" in bpfman.run("apply", mdir.source, "--auto-approve").stdout
    kernel = json.loads(bpfman.run("get", address, "--json").stdout)["kernel"]
    assert kernel["attached"] and kernel["prog_type"] == "cgroup_sock_addr"
    assert attached(cgroup) == [(kernel["prog_id"], "cgroup_inet4_connect")]
    assert cgroups.send_from(cgroup, port) == ("sent", "EPERM")  # connect() refused
    assert cgroups.send_from(None, port) == ("sent", "sent")
    assert "No changes." in bpfman.run("plan", mdir.source).stdout

    bpfman.run("destroy", "--auto-approve")
    assert attached(cgroup) == []
    assert cgroups.send_from(cgroup, port) == ("sent", "sent")
