"""Node selection, shared maps, global data, library targets, namespaces and feature errors,
end to end through the ``bpfman`` executable on the running kernel."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests import support
from tests.cli.conftest import EXAMPLES, TEST_BPF, tracepoint_manifest

pytestmark = pytest.mark.kernel

SHARED = TEST_BPF / "shared_counter.o"
BIG = 1000003  # a prime increment: any count it produced is a multiple of it


def u64(n: int) -> str:
    return "[" + ", ".join(str(b) for b in n.to_bytes(8, "little")) + "]"


def get(b, address: str) -> dict:
    return json.loads(b.run("get", address, "--json").stdout)


def call(syscall: str, times: int = 3) -> None:
    code = f"import os\nfor _ in range({times}): os.{syscall}()"
    subprocess.run([sys.executable, "-c", code], check=True)


def map_ids_of(prog_id: int) -> set[int]:
    return set(support.bpftool_json("prog", "show", "id", str(prog_id)).get("map_ids", []))


def counter(prog_id: int) -> tuple[int, int]:
    """(map id, value) of the program's shared_hits map, read with bpftool by id."""
    for mid in map_ids_of(prog_id):
        if support.bpftool_json("map", "show", "id", str(mid))["name"] == "shared_hits":
            return mid, support.map_u64(f"id {mid}")
    raise AssertionError(f"program {prog_id} has no shared_hits map")


def test_application_programs_share_maps_and_global_data(no_leaks, bpfman, veth, mdir):
    bc = mdir.bytecode(SHARED)
    mdir.write(
        "app.yaml",
        f"""apiVersion: bpfman.io/v1alpha1
kind: ClusterBpfApplication
metadata: {{name: counters}}
spec:
  byteCode: {{path: {bc}}}
  globalData:
    increment: {u64(BIG)}
  programs:
    - name: count_getpid
      type: TracePoint
      tracepoint:
        links: [{{name: syscalls/sys_enter_getpid}}]
    - name: count_getppid
      type: TracePoint
      tracepoint:
        links: [{{name: syscalls/sys_enter_getppid}}]
    - name: xdp_count
      type: XDP
      xdp:
        links:
          - interfaceSelector:
              interfacesDiscoveryConfig:
                interfaceAutoDiscovery: true
                allowedInterfaces: ["/^eth/"]
            netnsPath: {veth.netns_a}
            priority: 10
""",
    )
    out = bpfman.run("apply", mdir.source, "--auto-approve").stdout
    assert "Resources: 3 added" in out
    a = get(bpfman, "ClusterBpfApplication/counters[count_getpid:syscalls/sys_enter_getpid]")
    b = get(bpfman, "ClusterBpfApplication/counters[count_getppid:syscalls/sys_enter_getppid]")
    map_a, _ = counter(a["kernel"]["prog_id"])
    map_b, before = counter(b["kernel"]["prog_id"])
    assert map_a == map_b  # one map, seen by the kernel in both programs
    call("getppid")  # written through the second program ...
    map_a, after = counter(a["kernel"]["prog_id"])  # ... read through the first program's map
    assert after - before >= 3 * BIG
    assert after % BIG == 0  # global data reached the program: every event added BIG
    # The XDP program, found by interface discovery inside the test's namespace (lo excluded),
    # adds frames to the same map.
    x = get(bpfman, f"ClusterBpfApplication/counters[xdp_count:{veth.ns_a}:eth0]")
    assert counter(x["kernel"]["prog_id"])[0] == map_a
    (link,) = json.loads(
        support.sh("ip", "-n", veth.ns_a, "-d", "-j", "link", "show", "eth0").stdout
    )
    assert link["xdp"]["prog"]["id"] == x["kernel"]["prog_id"]
    support.send_frames(veth.netns_b, veth.if_b, 5)
    assert counter(a["kernel"]["prog_id"])[1] - after >= 5 * BIG
    # Unloading the application releases its shared maps too (no_leaks counts them).
    bpfman.run("destroy", "--auto-approve")
    assert not any(bpfman.root.rglob("shared_hits"))


def test_map_owner_shares_maps_and_orders_loads_and_unloads(no_leaks, bpfman, mdir):
    bc = mdir.bytecode(SHARED)
    owner = f"""apiVersion: bpfman.io/v1alpha1
kind: TracepointProgram
metadata:
  name: zz-owner
  labels: {{maps: counters}}
spec:
  bpffunctionname: count_getpid
  bytecode: {{path: {bc}}}
  names: [syscalls/sys_enter_getpid]
"""
    user = f"""apiVersion: bpfman.io/v1alpha1
kind: TracepointProgram
metadata: {{name: aa-user}}
spec:
  bpffunctionname: count_getppid
  bytecode: {{path: {bc}}}
  names: [syscalls/sys_enter_getppid]
  mapownerselector:
    matchLabels: {{maps: counters}}
"""
    mdir.write("owner.yaml", owner)
    mdir.write("user.yaml", user)
    plan = bpfman.run("plan", mdir.source).stdout
    owner_addr = "TracepointProgram/zz-owner[syscalls/sys_enter_getpid]"
    assert f"# (uses the maps of {owner_addr}, so it is loaded after it)" in plan
    out = bpfman.run("apply", mdir.source, "--auto-approve").stdout
    # The owner loads first although its name sorts last.
    assert out.index("TracepointProgram/zz-owner[") < out.index("TracepointProgram/aa-user[")
    o = get(bpfman, "TracepointProgram/zz-owner[syscalls/sys_enter_getpid]")
    u = get(bpfman, "TracepointProgram/aa-user[syscalls/sys_enter_getppid]")
    assert u["attributes"]["map_owner"] == "TracepointProgram/zz-owner"
    map_o, _ = counter(o["kernel"]["prog_id"])
    map_u, before = counter(u["kernel"]["prog_id"])
    assert map_o == map_u
    call("getppid")
    assert counter(o["kernel"]["prog_id"])[1] - before >= 3

    # The owner cannot go while its user stays.
    mdir.remove("owner.yaml")
    p = bpfman.run("plan", mdir.source, expect=1)
    assert "mapownerselector" in p.stderr or "map owner" in (p.stdout + p.stderr)
    # Both going: the user is unloaded first.
    mdir.remove("user.yaml")
    assert "so it is unloaded before it" in bpfman.run("plan", mdir.source).stdout
    out = bpfman.run("apply", mdir.source, "--auto-approve").stdout
    assert out.index("TracepointProgram/aa-user[") < out.index("TracepointProgram/zz-owner[")


def test_node_selection_by_labels_file_and_flags(no_leaks, bpfman, mdir, tmp_path):
    bc = mdir.bytecode(EXAMPLES / "bytecode" / "tracepoint_counter.o")
    text = tracepoint_manifest("edge-only", bc, "syscalls/sys_enter_getpid")
    text = text.replace("spec:\n", "spec:\n  nodeselector:\n    matchLabels: {role: edge}\n", 1)
    mdir.write("tp.yaml", text)
    labels = tmp_path / "labels.yaml"
    labels.write_text("role: core\n")

    p = bpfman.run("--labels-file", str(labels), "plan", mdir.source, "--show-unselected")
    assert "Manifests not selected for this host:" in p.stdout
    assert "TracepointProgram/edge-only (manifests/tp.yaml:1)" in p.stdout
    assert "role" in p.stdout and "No changes." in p.stdout

    labels.write_text("role: edge\n")
    p = bpfman.run("--labels-file", str(labels), "apply", mdir.source, "--auto-approve")
    assert "Resources: 1 added" in p.stdout
    # A --label wins over the file: the host is no longer selected, so the program goes.
    p = bpfman.run(
        "--labels-file", str(labels), "--label", "role=core", "apply", mdir.source, "--auto-approve"
    )
    assert "Resources: 0 added, 0 changed, 1 destroyed." in p.stdout
    doc = json.loads(bpfman.run("--label", "role=core", "plan", mdir.source, "--json").stdout)
    assert [u["resource"] for u in doc["unselected"]] == ["TracepointProgram/edge-only"]


def test_uprobe_target_given_as_a_library_name(no_leaks, bpfman, mdir):
    bc = mdir.bytecode(EXAMPLES / "bytecode" / "uprobe_counter.o")
    mdir.write(
        "up.yaml",
        f"""apiVersion: bpfman.io/v1alpha1
kind: UprobeProgram
metadata: {{name: libc-getpid}}
spec:
  bpffunctionname: uprobe_hits
  bytecode: {{path: {bc}}}
  target: libc
  func_name: getpid
""",
    )
    bpfman.run("apply", mdir.source, "--auto-approve")
    e = get(bpfman, "UprobeProgram/libc-getpid[libc:getpid]")
    assert e["attributes"]["target_path"].endswith("/libc.so.6")
    call("getpid")
    (m,) = [m for m in e["kernel"]["maps"] if m["name"] == "uprobe_hits_map"]
    assert support.map_u64(f"id {m['id']}") >= 3


def test_xdp_attaches_inside_a_namespace_named_by_path(no_leaks, bpfman, veth, mdir):
    bc = mdir.bytecode(SHARED)
    mdir.write(
        "xdp.yaml",
        f"""apiVersion: bpfman.io/v1alpha1
kind: XdpProgram
metadata: {{name: ns-counter}}
spec:
  bpffunctionname: xdp_count
  bytecode: {{path: {bc}}}
  interfaceselector: {{interfaces: [eth0]}}
  netns: {veth.netns_a}
  priority: 50
""",
    )
    # bpfman runs in the host's namespace; the program lands on eth0 inside the test's namespace.
    bpfman.run("apply", mdir.source, "--auto-approve")
    e = get(bpfman, f"XdpProgram/ns-counter[{veth.ns_a}:eth0]")
    (link,) = json.loads(
        support.sh("ip", "-n", veth.ns_a, "-d", "-j", "link", "show", "eth0").stdout
    )
    assert link["xdp"]["prog"]["id"] == e["kernel"]["prog_id"]
    support.send_frames(veth.netns_b, veth.if_b, 25)
    assert counter(e["kernel"]["prog_id"])[1] >= 25
    assert "No changes." in bpfman.run("plan", mdir.source).stdout
    bpfman.run("destroy", "--auto-approve")
    (link,) = json.loads(
        support.sh("ip", "-n", veth.ns_a, "-d", "-j", "link", "show", "eth0").stdout
    )
    assert "xdp" not in link


@pytest.mark.skipif(
    subprocess.run(["test", "-e", "/sys/bus/event_source/devices/kprobe"]).returncode == 0,
    reason="this kernel has kprobes: the VM tier covers them",
)
def test_missing_kernel_feature_is_a_plan_error(no_leaks, bpfman, mdir):
    bc = mdir.bytecode(TEST_BPF / "kprobe_counter.o")
    mdir.write(
        "kp.yaml",
        f"""apiVersion: bpfman.io/v1alpha1
kind: KprobeProgram
metadata: {{name: kp}}
spec:
  bpffunctionname: kprobe_hits
  bytecode: {{path: {bc}}}
  func_name: do_sys_openat2
""",
    )
    p = bpfman.run("plan", mdir.source, expect=1)
    release = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    assert "KprobeProgram/kp[do_sys_openat2]" in p.stdout + p.stderr
    assert f"needs kprobes, which kernel {release} does not support" in p.stdout + p.stderr
    bpfman.run("apply", mdir.source, "--auto-approve", expect=1)
    assert not bpfman.root.exists() or not any(bpfman.root.rglob("prog"))


def test_uprobe_pid_filter_counts_only_that_process(no_leaks, bpfman, mdir):
    bc = mdir.bytecode(EXAMPLES / "bytecode" / "uprobe_counter.o")
    # A process that calls libc's getpid() 7 times each time it reads a line.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import ctypes, sys\nlibc = ctypes.CDLL(None)\n"
            "for _ in sys.stdin:\n    [libc.getpid() for _ in range(7)]\n"
            "    print('done', flush=True)\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        mdir.write(
            "up.yaml",
            f"""apiVersion: bpfman.io/v1alpha1
kind: UprobeProgram
metadata: {{name: one-process}}
spec:
  bpffunctionname: uprobe_hits
  bytecode: {{path: {bc}}}
  target: libc
  func_name: getpid
  pid: {child.pid}
""",
        )
        bpfman.run("apply", mdir.source, "--auto-approve")
        e = get(bpfman, "UprobeProgram/one-process[libc:getpid]")
        assert e["attributes"]["pid"] == child.pid
        (m,) = [m for m in e["kernel"]["maps"] if m["name"] == "uprobe_hits_map"]
        libc = __import__("ctypes").CDLL(None)
        for _ in range(1000):  # calls from any other process are not counted
            libc.getpid()
        call("getpid", 100)
        assert child.stdin and child.stdout
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "done"
        assert 7 <= support.map_u64(f"id {m['id']}") < 500
    finally:
        child.kill()
        child.wait()
