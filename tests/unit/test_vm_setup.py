"""scripts/vm/vm.py without booting anything: kernel extraction, module order, initramfs, script."""

from __future__ import annotations

import lzma
import os
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.vmtier import load_vm_module

vm = load_vm_module()


def test_vmlinux_is_the_xz_payload_of_the_bzimage() -> None:
    elf = b"\x7fELF" + bytes(range(256)) * 64
    # Setup code, a false magic, the payload, and whatever the bzImage carries after it.
    bzimage = b"MZ setup" * 100 + vm.XZ_MAGIC + b"junk" + lzma.compress(elf) + b"\0trailer" * 10
    assert vm.extract_vmlinux(bzimage) == elf


def test_a_bzimage_without_an_xz_elf_is_refused() -> None:
    with pytest.raises(vm.VMError, match="no xz-compressed ELF"):
        vm.extract_vmlinux(b"MZ" + lzma.compress(b"not an elf"))


def _tree(tmp_path: Path, dep: str, builtin: str = "") -> Path:
    moddir = tmp_path / "lib/modules/6.1.0-test"
    moddir.mkdir(parents=True)
    (moddir / "modules.dep").write_text(dep)
    (moddir / "modules.builtin").write_text(builtin)
    return moddir


def test_modules_come_after_their_dependencies_and_built_ins_are_skipped(tmp_path: Path) -> None:
    moddir = _tree(
        tmp_path,
        "kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko\n"
        "kernel/net/9p/9pnet.ko:\n"
        "kernel/fs/netfs/netfs.ko:\n"
        "kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko\n"
        "kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n"
        "kernel/drivers/virtio/virtio_ring.ko:\n",
        builtin="kernel/fs/overlayfs/overlay.ko\n",
    )
    order = vm.initramfs_modules(moddir, ["9pnet_virtio", "9p", "overlay"])
    assert order == [
        "kernel/net/9p/9pnet.ko",
        "kernel/drivers/virtio/virtio_ring.ko",
        "kernel/drivers/virtio/virtio.ko",
        "kernel/net/9p/9pnet_virtio.ko",
        "kernel/fs/netfs/netfs.ko",
        "kernel/fs/9p/9p.ko",
    ]


def test_a_missing_module_names_itself(tmp_path: Path) -> None:
    moddir = _tree(tmp_path, "kernel/net/9p/9pnet.ko:\n")
    with pytest.raises(vm.VMError, match="module overlay is neither built in nor in"):
        vm.initramfs_modules(moddir, ["overlay"])


def test_cpio_archive_reads_back_with_a_cpio_reader(tmp_path: Path) -> None:
    archive = vm.cpio_newc(
        [
            ("bin", stat.S_IFDIR | 0o755, b"", 0),
            ("bin/hello", stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n", 0),
            ("dev/console", stat.S_IFCHR | 0o600, b"", os.makedev(5, 1)),
        ]
    )
    assert archive.startswith(b"070701") and len(archive) % 4 == 0
    if shutil.which("cpio"):
        reader = ["cpio", "-t"]
    elif shutil.which("busybox"):
        reader = ["busybox", "cpio", "-t"]
    else:
        pytest.skip("no cpio reader (cpio or busybox)")
    listing = subprocess.run(reader, input=archive, capture_output=True, check=True).stdout
    assert listing.decode().split() == ["bin", "bin/hello", "dev/console"]


def test_static_busybox_is_told_from_a_dynamic_binary() -> None:
    assert not vm._is_static_elf(Path("/bin/sh").read_bytes())
    assert not vm._is_static_elf(b"#!/bin/sh\n")


def test_run_script_quotes_the_command_and_the_environment(tmp_path: Path) -> None:
    script = vm.run_script(["echo", "a b", "$HOME"], Path("/work/x y"), {"K": "v w"})
    assert "export K='v w'" in script
    assert f"cd {shlex.quote('/work/x y')} || exit 125" in script
    assert script.rstrip().endswith("exec echo 'a b' '$HOME'")
    (tmp_path / "run.sh").write_text(script.replace("/work/x y", str(tmp_path)))
    out = subprocess.run(["sh", str(tmp_path / "run.sh")], capture_output=True, text=True)
    assert out.stdout == "a b $HOME\n"


def test_qemu_uses_tcg_and_shares_the_root_read_only(tmp_path: Path) -> None:
    assets = vm.Assets(
        "linux-image-x", "x", tmp_path / "vmlinux", tmp_path / "mods", tmp_path / "initramfs"
    )
    argv = vm.qemu_argv(assets, tmp_path / "results", 2, 1024)
    joined = " ".join(argv)
    assert "-accel tcg" in joined and "-no-reboot" in joined
    assert "path=/,security_model=none,readonly=on" in joined
    assert f"path={tmp_path / 'results'},security_model=none " in joined + " "
    assert "stdio" in argv[argv.index("-chardev") + 1]
