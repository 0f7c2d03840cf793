"""A name or an index that is valid but becomes a bpffs file name over NAME_MAX (255 bytes) once
encoded is a validation error naming FILE:LINE and the field, never an ENAMETOOLONG mid-apply.
The boundary is exact: 255 encoded bytes load, 256 are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.address import Address
from reconciler.hostpaths import pin_path_errors
from reconciler.kernel.sys import bpffs
from reconciler.spec import load_desired, load_manifests
from reconciler.spec.elf import parse_bpf_object
from reconciler.spec.indexes import stored_length
from tests.unit import factories
from tests.unit.spec_support import (
    SHF_ALLOC_EXEC,
    SHT_PROGBITS,
    STT_FUNC,
    STT_OBJECT,
    StubHost,
    build_elf,
    problems_of,
    write_tree,
)

BPF_CODE = bytes.fromhex("b7000000020000009500000000000000")  # r0 = XDP_PASS; exit


def kprobe(function: str, name: str = "kp") -> str:
    return f"""
apiVersion: bpfman.io/v1alpha1
kind: KprobeProgram
metadata:
  name: {name}
spec:
  bpffunctionname: kprobe_open
  bytecode:
    path: ../bytecode/spec_progs.o
  func_name: {function}
"""


def tracepoint(*names: str) -> str:
    listed = "".join(f"\n    - {n}" for n in names)
    return f"""
apiVersion: bpfman.io/v1alpha1
kind: TracepointProgram
metadata:
  name: tp
spec:
  bpffunctionname: tp_openat
  bytecode:
    path: ../bytecode/spec_progs.o
  names:{listed}
"""


def test_stored_length_counts_the_encoding_in_bytes() -> None:
    assert stored_length("eth0") == 4
    assert stored_length("syscalls/sys_enter_openat") == len("syscalls%2Fsys_enter_openat")
    assert stored_length("a.b%c") == len("a%2Eb%25c")
    assert stored_length("é") == 2  # bytes, not characters


@pytest.mark.parametrize("length, ok", [(255, True), (256, False)])
def test_kprobe_function_at_the_limit(tmp_path: Path, length: int, ok: bool) -> None:
    files = {"k.yaml": kprobe("f" * length)}
    if ok:
        load_manifests(write_tree(tmp_path, files))
        return
    [problem] = problems_of(tmp_path, files)
    assert problem.startswith("k.yaml:9: spec.func_name: becomes the address index 'fff")
    assert "a pin directory name of 256 bytes in bpffs" in problem
    assert "over the limit of 255 bytes (NAME_MAX); shorten the function" in problem


@pytest.mark.parametrize("length, ok", [(255, True), (256, False)])
def test_tracepoint_name_at_the_limit_counts_the_encoded_slash(
    tmp_path: Path, length: int, ok: bool
) -> None:
    name = "syscalls/" + "x" * (length - len("syscalls%2F"))
    assert stored_length(name) == length
    files = {"t.yaml": tracepoint("syscalls/sys_enter_openat", name)}
    if ok:
        load_manifests(write_tree(tmp_path, files))
        return
    [problem] = problems_of(tmp_path, files)
    assert problem.startswith("t.yaml:11: spec.names[1]: becomes the address index 'syscalls/x")
    assert f"{length} bytes in bpffs" in problem and "shorten the tracepoint name" in problem


@pytest.mark.parametrize("length, ok", [(255, True), (256, False)])
def test_name_with_dots_at_the_limit(tmp_path: Path, length: int, ok: bool) -> None:
    name = "a" * (length - 2 * 2 - 4) + ".b.c"  # two dots: 3 bytes each once stored
    assert len(name) <= 253 and bpffs.stored_length(name) == length
    files = {"k.yaml": kprobe("do_sys_openat2", name=name)}
    if ok:
        load_manifests(write_tree(tmp_path, files))
        return
    [problem] = problems_of(tmp_path, files)
    assert problem.startswith("k.yaml:4: metadata.name: is 256 bytes as a bpffs file name")
    assert "use a shorter name or fewer dots" in problem


def test_uprobe_index_of_a_long_target_path(tmp_path: Path) -> None:
    target = "/opt" + "/very.long.directory" * 10 + "/bin"
    index = f"{target}:malloc@4242"
    assert stored_length(index) > 255 >= len(index)  # only the encoding makes it too long
    text = f"""
apiVersion: bpfman.io/v1alpha1
kind: UprobeProgram
metadata:
  name: up
spec:
  bpffunctionname: uprobe_malloc
  bytecode:
    path: ../bytecode/spec_progs.o
  target: {target}
  func_name: malloc
  containers: {{pid: 4242}}
"""
    [problem] = problems_of(tmp_path, {"u.yaml": text})
    assert problem.startswith("u.yaml:9: spec.target: becomes the address index '/opt/very")
    assert "shorten the target path" in problem


def test_network_namespace_path_in_the_index(tmp_path: Path) -> None:
    netns = "/var/lib/namespaces/" + "n" * 230
    text = f"""
apiVersion: bpfman.io/v1alpha1
kind: XdpProgram
metadata:
  name: fw
spec:
  bpffunctionname: xdp_stats
  bytecode:
    path: ../bytecode/spec_progs.o
  interfaceselector:
    interfaces: [eth0]
  priority: 5
  netns: {netns}
"""
    [problem] = problems_of(tmp_path, {"x.yaml": text})
    assert problem.startswith("x.yaml:12: spec.netns: becomes the address index '/var/lib/")
    assert "shorten the network namespace path" in problem
    # A namespace `ip netns` named is indexed by its name alone: no problem.
    named = text.replace(netns, "/run/netns/" + "n" * 230)
    (tmp_path / "named").mkdir()
    load_manifests(write_tree(tmp_path / "named", {"x.yaml": named}))


def test_interfaces_found_on_the_host_are_assumed_as_long_as_linux_allows(tmp_path: Path) -> None:
    """With discovery the interface names are unknown until plan: validation assumes 15 bytes,
    so a namespace path that leaves room for eth0 but not for 15 bytes is refused."""
    prefix = "xdp_stats:%2Fvar%2Flib%2Fnamespaces%2F"  # the program's name, then the path
    netns = "/var/lib/namespaces/" + "n" * (255 - len(prefix) - len(":eth0"))

    def manifest(selector: str) -> str:
        return f"""
apiVersion: bpfman.io/v1alpha1
kind: ClusterBpfApplication
metadata:
  name: app
spec:
  byteCode:
    path: ../bytecode/spec_progs.o
  programs:
    - name: xdp_stats
      type: XDP
      xdp:
        links:
          - interfaceSelector: {selector}
            netnsPath: {netns}
"""

    (tmp_path / "a").mkdir()
    load_manifests(write_tree(tmp_path / "a", {"a.yaml": manifest("{interfaces: [eth0]}")}))
    (tmp_path / "b").mkdir()
    discovered = manifest("{interfacesDiscoveryConfig: {interfaceAutoDiscovery: true}}")
    [problem] = problems_of(tmp_path / "b", {"a.yaml": discovered})
    assert "spec.programs[0].xdp.links[0].netnsPath: becomes the address index" in problem


def test_the_map_names_of_the_bytecode_must_fit(tmp_path: Path) -> None:
    long_map = "m" * 256
    data = build_elf(
        [("xdp", SHT_PROGBITS, SHF_ALLOC_EXEC, BPF_CODE), (".maps", SHT_PROGBITS, 0x3, bytes(32))],
        [("prog", STT_FUNC, "xdp"), (long_map, STT_OBJECT, ".maps"), ("ok", STT_OBJECT, ".maps")],
    )
    assert parse_bpf_object(data).maps == (long_map, "ok")
    write_tree(tmp_path, {})
    (tmp_path / "bytecode" / "long.o").write_bytes(data)
    text = """
apiVersion: bpfman.io/v1alpha1
kind: XdpProgram
metadata:
  name: fw
spec:
  bpffunctionname: prog
  bytecode:
    path: ../bytecode/long.o
  interfaceselector:
    interfaces: [eth0]
  priority: 5
"""
    [problem] = problems_of(tmp_path, {"x.yaml": text})
    assert problem.startswith("x.yaml:8: spec.bytecode.path: map 'mmm")
    assert "has a name of 256 bytes; it is pinned under that name" in problem


# --- at plan time: what only the host knows ------------------------------------------------------


def test_plan_checks_discovered_interface_names(tmp_path: Path) -> None:
    """A discovered name the validation could not know: as long as Linux allows (15 bytes) and
    every '.' stored as 3 bytes, it can still overflow; the plan refuses it by address."""
    prefix = "xdp_stats:%2Fvar%2Flib%2Fnamespaces%2F"
    netns = "/var/lib/namespaces/" + "n" * (255 - len(prefix) - len(":") - 15)
    text = f"""
apiVersion: bpfman.io/v1alpha1
kind: ClusterBpfApplication
metadata:
  name: app
spec:
  byteCode:
    path: ../bytecode/spec_progs.o
  programs:
    - name: xdp_stats
      type: XDP
      xdp:
        links:
          - interfaceSelector: {{interfacesDiscoveryConfig: {{interfaceAutoDiscovery: true}}}}
            netnsPath: {netns}
"""
    host = StubHost(interfaces_={netns: ["a" * 15, "a.b.c.d.e.f.g.h"]})
    state = load_desired(write_tree(tmp_path, {"a.yaml": text}), host)
    errors = pin_path_errors(state.attachments, Path("/sys/fs/bpf/bpfman"))
    assert len(state.attachments) == 2 and len(errors) == 1
    assert errors[0].startswith("ClusterBpfApplication/app[xdp_stats:/var/lib/")
    assert "a.b.c.d.e.f.g.h] (a.yaml:13): its pin directory name" in errors[0]
    assert "is 269 bytes in bpffs" in errors[0] and "(NAME_MAX)" in errors[0]


def test_plan_checks_the_whole_pin_path_against_path_max() -> None:
    d = factories.xdp("fw")
    assert pin_path_errors([d], Path("/sys/fs/bpf/bpfman")) == []
    pin_dir = d.address.pin_dir()
    room = bpffs.PATH_MAX - 1 - bpffs.DEEPEST_BELOW_PIN_DIR - len(pin_dir) - 1
    fits = Path("/" + "r" * (room - 1))  # the longest root whose deepest path is PATH_MAX - 1
    assert bpffs.deepest_path_length(fits, pin_dir) == bpffs.PATH_MAX - 1
    assert pin_path_errors([d], fits) == []
    [error] = pin_path_errors([d], Path(f"{fits}r"))
    assert error.startswith("XdpProgram/fw[eth0] (xdp.yaml:1): its pin directory under the bpffs")
    assert "paths of up to 4096 bytes, over the limit of 4095 (PATH_MAX)" in error
    assert "choose a shorter --bpffs-root" in error


def test_a_255_byte_name_is_a_real_file_name_and_256_is_not(tmp_path: Path) -> None:
    """The limit checked is the kernel's (ext4, tmpfs and bpffs all have NAME_MAX 255)."""
    (tmp_path / ("x" * 255)).mkdir()
    with pytest.raises(OSError) as e:
        (tmp_path / ("x" * 256)).mkdir()
    assert e.value.errno == 36  # ENAMETOOLONG
    assert os.pathconf(tmp_path, "PC_NAME_MAX") == bpffs.NAME_MAX


def test_every_derived_pin_name_is_short() -> None:
    """Beside the address parts, bpfman names pins and directories itself: all are short."""
    assert len(bpffs.STAGING) < 16 and len(f"{bpffs.STAGING}-verify-{2**22}") < 32
    address = Address("XdpProgram", "fw", "eth0")
    assert address.pin_dir().count("/") == 2  # KIND/NAME/INDEX: nothing else is derived
