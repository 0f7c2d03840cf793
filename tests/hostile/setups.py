"""Setups of the hostile cases about reading a source: files that are not files, walks that
fail, names that would rewrite a terminal, and inputs built to cost time and memory.

Each gets the case's directory (``src/`` is the source, with ``bytecode/`` in it; the rest is
"outside"). Large inputs are built here rather than committed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests import support

XDP_OBJECT = support.REPO / "manifests" / "examples" / "bytecode" / "xdp_counter.o"
HEAD = """apiVersion: bpfman.io/v1alpha1
kind: XdpProgram
metadata:
  name: {name}
spec:
  bpffunctionname: xdp_stats
  bytecode:
    path: {bytecode}
  interfaceselector:
    interfaces: [eth0]
  priority: {priority}
"""
MIB = 1024 * 1024


def _manifest(d: Path) -> Path:
    return next((d / "src").glob("*.yaml"))


def _head(name: str = "fw", priority: int = 55, bytecode: str = "bytecode/xdp_counter.o") -> str:
    return HEAD.format(name=name, priority=priority, bytecode=bytecode)


# --- files that are not files -------------------------------------------------------------


def fifo_manifest(d: Path) -> None:
    os.mkfifo(d / "src" / "zz-pipe.yaml")


def chardev_manifest(d: Path) -> None:
    # A node for /dev/zero (1, 5): never opened, only looked at.
    os.mknod(d / "src" / "zz-zero.yaml", 0o600 | stat.S_IFCHR, os.makedev(1, 5))


def socket_manifest(d: Path) -> None:
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(d / "src" / "zz-sock.yaml"))


def fifo_outside(d: Path) -> None:
    os.mkfifo(d / "fifo")


def fifo_bytecode(d: Path) -> None:
    os.mkfifo(d / "src" / "bytecode" / "pipe.o")


# --- walks that must not skip or overflow ------------------------------------------------------


def unreadable_dir(d: Path) -> None:
    team = d / "src" / "team"
    team.mkdir()
    (team / "fw.yaml").write_text(_head("team-fw", bytecode="../bytecode/xdp_counter.o"))
    os.chmod(team, 0)  # read by a bpfman without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH


def deep_tree(d: Path) -> None:
    """1200 nested directories (more than Python's recursion limit), a bad manifest at the
    bottom: found and reported."""
    top = d / "src" / "deep"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(1200):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        manifest = os.open("bottom.yaml", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(manifest, b"apiVersion: bpfman.io/v1alpha1\nkind: XdpProgram\nmetadata: []\n")
        os.close(manifest)
    finally:
        os.close(fd)


def long_path(d: Path) -> None:
    """Directories whose path is longer than PATH_MAX: the walk reports where it stopped."""
    top = d / "src" / "long"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(20):
            os.mkdir("x" * 250, dir_fd=fd)
            inner = os.open("x" * 250, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)


def remove_deep(path: Path) -> None:
    """Remove a tree of any depth or path length, without recursion."""
    if not path.exists():
        return
    os.chmod(path, 0o755)
    stack: list[tuple[int, str | None]] = [(os.open(path, os.O_RDONLY | os.O_DIRECTORY), None)]
    while stack:
        fd, _ = stack[-1]
        pushed = False
        for entry in os.scandir(fd):
            if entry.is_dir(follow_symlinks=False):
                os.chmod(entry.name, 0o755, dir_fd=fd)
                inner = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                stack.append((inner, entry.name))
                pushed = True
                break
            os.unlink(entry.name, dir_fd=fd)
        if pushed:
            continue
        fd, name = stack.pop()
        os.close(fd)
        if stack and name is not None:
            os.rmdir(name, dir_fd=stack[-1][0])
    os.rmdir(path)


# --- names that would rewrite a terminal ---------------------------------------------------


def escape_file_name(d: Path) -> None:
    m = _manifest(d)
    m.rename(m.with_name("evil\x1b[2J\r.yaml"))


def non_utf8_file_name(d: Path) -> None:
    m = _manifest(d)
    os.rename(bytes(m), bytes(m.parent) + b"/evil\xff\xfe.yaml")


def escape_in_elf_symbol(d: Path) -> None:
    """The function's name in the object's tables becomes ESC [ 2 J: the error that lists the
    object's functions must show it escaped."""
    data = (d / "src" / "bytecode" / "xdp_counter.o").read_bytes()
    (d / "src" / "bytecode" / "xdp_counter.o").write_bytes(
        data.replace(b"xdp_stats\0", b"xd\x1b[2Jsts\0")
    )


def escape_in_interface_name(d: Path) -> None:
    """The manifest names a missing interface in a namespace whose only other interface is
    called ESC [ 2 J: the plan's error lists it, escaped (teardown: ``cleanup_netns``)."""
    ns = f"bpfman-hostile-{os.getpid()}-{d.name[:8]}"
    support.sh("ip", "netns", "add", ns)
    support.sh("ip", "-n", ns, "link", "add", "e\x1b[2Jx", "type", "veth", "peer", "name", "p1")
    (d / "netns").write_text(ns)
    m = _manifest(d)
    m.write_text(m.read_text().replace("NETNS", f"/run/netns/{ns}"))


def cleanup_netns(d: Path) -> None:
    marker = d / "netns"
    if marker.exists():
        support.sh("ip", "netns", "del", marker.read_text(), check=False)


# --- inputs that cost: each is about 4 MiB -------------------------------------------------


def _append(d: Path, text: str) -> None:
    with _manifest(d).open("a") as f:
        f.write(text)


def _room(d: Path) -> int:
    """Bytes left before the manifest reaches 4 MiB (the largest a manifest may be)."""
    return 4 * MIB - _manifest(d).stat().st_size - 64


def cost_byte_list(d: Path) -> None:
    """Two million global-data bytes: refused when the value limit is reached."""
    _append(d, "  globaldata:\n    x: [" + ",".join(["0"] * (_room(d) // 2)) + "]\n")


def cost_unknown_keys(d: Path) -> None:
    """300,000 unknown fields: refused when the value limit is reached."""
    _append(d, "".join(f"  k{i:07}: 1\n" for i in range(_room(d) // 14)))


def cost_invalid_bytes(d: Path) -> None:
    """24,000 invalid byte values, under the limit: 20 reported, the rest counted."""
    _append(d, "  globaldata:\n    x: [" + ",".join(["-1"] * 24_000) + "]\n")


def cost_unknown_keys_under(d: Path) -> None:
    """20,000 unknown fields, under the limit: 20 reported, the rest counted."""
    _append(d, "".join(f"  k{i}: 1\n" for i in range(20_000)))


def cost_many_documents(d: Path) -> None:
    """2,000 manifests with one mistake each: the first are shown, the rest counted."""
    m = _manifest(d)
    m.write_text(
        m.read_text() + "".join("---\n" + _head(f"fw{i}", priority=5000) for i in range(2000))
    )


def cost_long_string(d: Path) -> None:
    """One name of 4 MiB less a little."""
    m = _manifest(d)
    m.write_text(m.read_text().replace("name: fw", "name: " + "a" * _room(d)))


def cost_deep_flow(d: Path) -> None:
    """A million nested flow lists."""
    half = _room(d) // 2
    _append(d, "  globaldata:\n    x: " + "[" * half + "]" * half + "\n")


def cost_many_labels(d: Path) -> None:
    """24,000 labels with an invalid value each."""
    m = _manifest(d)
    labels = "".join(f"    k{i}: -bad-\n" for i in range(24_000))
    m.write_text(m.read_text().replace("  name: fw\n", "  name: fw\n  labels:\n" + labels, 1))


# --- host files -------------------------------------------------------------------------------


def config_typo(d: Path) -> None:
    (d / "config.yaml").write_text("bytecode_dir: [/opt/bpf]\n")


def config_ambiguous(d: Path) -> None:
    (d / "config.yaml").write_text("interfaces:\n  eth0:\n    xdpmode: off\n")


def labels_bad(d: Path) -> None:
    (d / "labels.yaml").write_text("zone: a\nrack: -r1-\n")
