"""The VM tier works: the guest runs a distribution kernel that can do what the host kernel cannot.

These run inside the VM (tests/vmtier.py boots it). Programs are loaded with bpftool and attached
with libbpf through a few ctypes calls of its own (independent of bpfman's kernel layer), and the
counters are read back with bpftool.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests import support

pytestmark = pytest.mark.vm

CALLS = 5


def test_guest_runs_another_kernel_than_the_host() -> None:
    host = os.environ.get("BPFMAN_HOST_RELEASE")
    assert host, "the VM tier passes the host's kernel release in BPFMAN_HOST_RELEASE"
    assert os.environ.get("BPFMAN_IN_VM") == "1"
    assert os.uname().release != host


def test_guest_runs_as_root() -> None:
    assert os.geteuid() == 0


def test_guest_has_the_kernel_file_systems_mounted() -> None:
    mounts = {}
    for line in Path("/proc/mounts").read_text().splitlines():
        _dev, where, fstype, *_ = line.split()
        mounts[where] = fstype
    assert mounts["/sys/fs/bpf"] == "bpf"
    assert mounts["/sys/kernel/tracing"] == "tracefs"
    assert mounts["/sys/kernel/debug"] == "debugfs"
    assert mounts["/"] == "overlay"


def test_guest_can_write_anywhere_without_touching_the_host(tmp_path: Path) -> None:
    marker = support.REPO / f".vm-write-test-{os.getpid()}"
    marker.write_text("guest only\n")  # lands in the overlay's tmpfs, never on the host
    try:
        assert marker.read_text() == "guest only\n"
    finally:
        marker.unlink()


def test_bpfman_runs_in_the_guest() -> None:
    out = support.sh(support.BPFMAN, "--version")
    assert "bpfman" in out.stdout + out.stderr


@pytest.mark.parametrize(
    ("obj", "prog_type"),
    [("kprobe_counter.o", "kprobe"), ("fentry_counter.o", "tracing")],
)
def test_bpftool_loads_kprobe_and_fentry_programs(
    no_leaks: None, vm_bytecode: Path, pin_dir: Path, obj: str, prog_type: str
) -> None:
    support.sh("bpftool", "prog", "loadall", str(vm_bytecode / obj), str(pin_dir / "progs"))
    pinned = sorted((pin_dir / "progs").iterdir())
    assert len(pinned) == 2
    for path in pinned:
        assert _json("prog", "show", "pinned", str(path))["type"] == prog_type
    support.remove_tree(pin_dir / "progs")


def _json(*args: str) -> Any:
    return support.bpftool_json(*args)


# -- libbpf, minimal --------------------------------------------------------------------------


def _libbpf() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
    p, c, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    for name, res, args in [
        ("bpf_object__open_file", p, [c, p]),
        ("bpf_object__load", i, [p]),
        ("bpf_object__close", None, [p]),
        ("bpf_object__find_program_by_name", p, [p, c]),
        ("bpf_object__find_map_by_name", p, [p, c]),
        ("bpf_program__attach", p, [p]),
        ("bpf_program__attach_freplace", p, [p, i, c]),
        ("bpf_program__set_attach_target", i, [p, i, c]),
        ("bpf_program__fd", i, [p]),
        ("bpf_program__pin", i, [p, c]),
        ("bpf_map__pin", i, [p, c]),
        ("bpf_link__destroy", i, [p]),
    ]:
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def _check(ok: object, what: str) -> None:
    if not ok:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


@contextmanager
def _object(path: Path) -> Iterator[tuple[ctypes.CDLL, int]]:
    lib = _libbpf()
    obj = lib.bpf_object__open_file(str(path).encode(), None)
    _check(obj, f"open {path.name}")
    try:
        yield lib, obj
    finally:
        lib.bpf_object__close(obj)


def _prog(lib: ctypes.CDLL, obj: int, name: str) -> int:
    prog = lib.bpf_object__find_program_by_name(obj, name.encode())
    _check(prog, f"find program {name}")
    return prog


def _hits(map_pin: Path, tgid: int) -> tuple[int, int]:
    """(entered, left) counted for ``tgid``, read with bpftool."""
    for entry in _json("map", "dump", "pinned", str(map_pin)):
        if support._u64(entry["key"] + ["00"] * 4, 0) == tgid:
            return support._u64(entry["value"], 0), support._u64(entry["value"], 8)
    return 0, 0


@pytest.mark.parametrize(
    ("obj", "progs"),
    [
        ("kprobe_counter.o", ["kprobe_getpgid", "kretprobe_getpgid"]),
        ("fentry_counter.o", ["fentry_getpgid", "fexit_getpgid"]),
    ],
    ids=["kprobe", "fentry"],
)
def test_probes_attach_and_fire(
    no_leaks: None, vm_bytecode: Path, pin_dir: Path, obj: str, progs: list[str]
) -> None:
    with _object(vm_bytecode / obj) as (lib, o):
        _check(lib.bpf_object__load(o) == 0, f"load {obj}")
        hits = lib.bpf_object__find_map_by_name(o, b"hits")
        _check(hits, "find map hits")
        _check(lib.bpf_map__pin(hits, str(pin_dir / "hits").encode()) == 0, "pin hits")
        links = []
        try:
            for name in progs:
                link = lib.bpf_program__attach(_prog(lib, o, name))
                _check(link, f"attach {name}")
                links.append(link)
            for _ in range(CALLS):
                os.getpgid(0)
            entered, left = _hits(pin_dir / "hits", os.getpid())
        finally:
            for link in links:
                lib.bpf_link__destroy(link)
    assert entered >= CALLS and left >= CALLS


def _xdp_verdict(pinned: Path, packet: Path) -> int:
    out = support.sh("bpftool", "prog", "run", "pinned", str(pinned), "data_in", str(packet))
    for line in out.stdout.splitlines():
        if line.startswith("Return value:"):
            return int(line.split(":")[1].split(",")[0])  # "Return value: 2, duration ..."
    raise AssertionError(f"no return value from bpftool prog run: {out.stdout}")


def test_freplace_replaces_a_global_function(
    no_leaks: None, vm_bytecode: Path, pin_dir: Path, tmp_path: Path
) -> None:
    xdp_pass, xdp_drop = 2, 1
    packet = tmp_path / "packet"
    packet.write_bytes(b"\xff" * 6 + b"\x02" + b"\0" * 5 + b"\x88\xb5" + b"\0" * 50)
    with _object(vm_bytecode / "freplace_target.o") as (lib, target):
        _check(lib.bpf_object__load(target) == 0, "load freplace_target.o")
        target_prog = _prog(lib, target, "freplace_target")
        _check(lib.bpf_program__pin(target_prog, str(pin_dir / "target").encode()) == 0, "pin")
        assert _xdp_verdict(pin_dir / "target", packet) == xdp_pass
        target_fd = lib.bpf_program__fd(target_prog)
        with _object(vm_bytecode / "freplace_ext.o") as (_, ext):
            ext_prog = _prog(lib, ext, "drop_verdict")
            _check(
                lib.bpf_program__set_attach_target(ext_prog, target_fd, b"bpfman_verdict") == 0,
                "set attach target",
            )
            _check(lib.bpf_object__load(ext) == 0, "load freplace_ext.o")
            assert _json("prog", "show", "id", _prog_id(ext_prog, lib))["type"] == "ext"
            link = lib.bpf_program__attach_freplace(ext_prog, target_fd, b"bpfman_verdict")
            _check(link, "attach freplace")
            try:
                assert _xdp_verdict(pin_dir / "target", packet) == xdp_drop
            finally:
                lib.bpf_link__destroy(link)
        assert _xdp_verdict(pin_dir / "target", packet) == xdp_pass


def _prog_id(prog: int, lib: ctypes.CDLL) -> str:
    """The kernel id of a loaded program, via /proc/self/fdinfo of its fd."""
    fd = lib.bpf_program__fd(prog)
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("prog_id:"):
            return line.split()[1]
    raise AssertionError(f"fd {fd} is not a BPF program")


def test_guest_loads_kernel_modules_with_kmod() -> None:
    """The depmod'ed module tree is where kmod looks: modprobe works in the guest."""
    subprocess.run(["modprobe", "veth"], check=True)
    assert Path("/sys/module/veth").exists()
