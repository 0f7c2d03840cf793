#!/usr/bin/env python3
"""The VM of bpfman's VM test tier: Debian's distribution kernel booted under qemu.

The host kernel of the project's machines refuses freplace and fentry/fexit and has no kprobes, so
the tests of those run in a VM booted with Debian's ``linux-image-amd64``. This module prepares
that VM (cached) and boots it to run one command; it needs only the standard library, so the
pytest plugin (tests/vmtier.py) imports it by path and ``make vm`` runs it as a script::

    scripts/vm/vm.py prepare            # download, unpack, cache the kernel; build the initramfs
    scripts/vm/vm.py run -- uname -a    # boot, run as root in this checkout, exit with its status

Cache, one directory per kernel release, ``$BPFMAN_VM_CACHE`` or ``/var/cache/bpfman-vm``:

    <release>/vmlinux                  uncompressed kernel (from the bzImage's xz payload)
    <release>/root/lib/modules/<release>/   module tree after ``depmod -b``
    <release>/initramfs-<hash>.cpio    busybox, init.sh and the 9p/overlay modules, per init version
    <release>/ready                    written last: the directory is complete

Booting: qemu-system-x86_64 with TCG (the machines' /dev/kvm cannot boot a stock kernel), the
vmlinux entered through PVH (no decompression under emulation), the host's root shared read-only
over 9p and a second, writable 9p share of a host temp dir that carries the command in and the
results and exit status out. The guest's console is written to a log file.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import hashlib
import lzma
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CACHE = Path(os.environ.get("BPFMAN_VM_CACHE", "/var/cache/bpfman-vm"))
META_PACKAGE = "linux-image-amd64"
# What the initramfs needs to reach the 9p root and build the overlay; each is skipped when the
# kernel has it built in (modules.builtin).
INITRAMFS_MODULES = ["virtio_pci", "9pnet_virtio", "9p", "overlay"]
# Debian packages of the tools used here, installed when missing (as scripts/install-deps.sh does).
TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "busybox": "busybox-static",
    "depmod": "kmod",
    "dpkg": "dpkg",
}
XZ_MAGIC = b"\xfd7zXZ\x00"
# The checkout's Python code, byte-compiled on the host before every boot (see byte_compile).
COMPILED_TREES = ["reconciler", "tests", "bench", "scripts"]
DEFAULT_TIMEOUT = 600.0
PRUNE_AFTER = 7 * 24 * 3600.0  # seconds unused after which a cached kernel or initramfs goes

Log = Callable[[str], None]


class VMError(Exception):
    """The VM could not be prepared or booted; the message says why and what to do."""


def _stderr(msg: str) -> None:
    print(f"vm: {msg}", file=sys.stderr, flush=True)


def _run(*argv: str, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise VMError(f"{argv[0]} is not installed (run scripts/install-deps.sh)") from e
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise VMError(f"{shlex.join(argv)} failed (exit {proc.returncode}): {detail}")
    return proc.stdout


# ---------------------------------------------------------------------------------------------
# Preparing


def ensure_tools(log: Log = _stderr) -> None:
    """Install the Debian packages of missing tools (root only; otherwise say what is missing)."""
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if not missing:
        return
    if os.geteuid() != 0:
        raise VMError(f"missing Debian packages {' '.join(missing)}: run scripts/install-deps.sh")
    log(f"installing {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True)
    proc = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise VMError(f"apt-get install {' '.join(missing)} failed: {proc.stderr.strip()}")


def _depends_of_meta() -> str | None:
    try:
        out = subprocess.run(
            ["apt-cache", "depends", META_PACKAGE], capture_output=True, text=True
        ).stdout
    except FileNotFoundError:
        return None
    for line in out.splitlines():
        dep = line.strip().removeprefix("Depends:").strip()
        if line.strip().startswith("Depends:") and dep.startswith("linux-image-"):
            return dep
    return None


def kernel_package(log: Log = _stderr) -> str:
    """The versioned package behind linux-image-amd64, e.g. linux-image-6.1.0-56-amd64.

    ``BPFMAN_VM_KERNEL_PACKAGE`` pins one. Without package lists, runs ``apt-get update`` once; with
    no registry at all, falls back to the newest release already in the cache.
    """
    pinned = os.environ.get("BPFMAN_VM_KERNEL_PACKAGE")
    if pinned:
        return pinned
    pkg = _depends_of_meta()
    if pkg is None and os.geteuid() == 0:
        log("apt-get update (no package list names linux-image-amd64)")
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        pkg = _depends_of_meta()
    if pkg is None:
        cached = sorted(CACHE.glob("*/ready"), key=lambda p: p.stat().st_mtime)
        if cached:
            return "linux-image-" + cached[-1].parent.name
        raise VMError(f"apt-cache depends {META_PACKAGE} names no kernel package")
    return pkg


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The uncompressed kernel ELF inside a bzImage built with xz compression.

    The setup code is followed by the compressed payload; find the xz stream's magic and
    decompress until the stream ends (what follows it is not part of the stream).
    """
    start = bzimage.find(XZ_MAGIC)
    while start >= 0:
        try:
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(bzimage[start:])
        except lzma.LZMAError:
            elf = b""
        if elf.startswith(b"\x7fELF"):
            return elf
        start = bzimage.find(XZ_MAGIC, start + 1)
    raise VMError("no xz-compressed ELF kernel found in the bzImage")


def _module_index(moddir: Path) -> tuple[set[str], dict[str, tuple[str, list[str]]]]:
    """(built-in module names, name -> (path, dependency paths)) from a depmod'ed tree."""

    def name(path: str) -> str:
        return Path(path).name.split(".ko")[0].replace("-", "_")

    builtin = {name(p) for p in (moddir / "modules.builtin").read_text().split()}
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[name(path)] = (path, rest.split())
    return builtin, deps


def initramfs_modules(moddir: Path, wanted: list[str]) -> list[str]:
    """Relative paths of the modules to load for ``wanted``, each after its dependencies."""
    builtin, deps = _module_index(moddir)
    order: list[str] = []

    def visit(mod: str) -> None:
        if mod in builtin:
            return
        if mod not in deps:
            raise VMError(f"module {mod} is neither built in nor in {moddir}/modules.dep")
        path, requires = deps[mod]
        for dep in requires:
            visit(Path(dep).name.split(".ko")[0].replace("-", "_"))
        if path not in order:
            order.append(path)

    for mod in wanted:
        visit(mod)
    return order


def _module_bytes(path: Path) -> bytes:
    """busybox insmod takes plain .ko files: decompress what Debian may ship compressed."""
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        import gzip

        return gzip.decompress(data)
    if path.name.endswith(".ko"):
        return data
    raise VMError(f"cannot decompress module {path} (only .ko, .ko.xz, .ko.gz)")


def cpio_newc(entries: list[tuple[str, int, bytes, int]]) -> bytes:
    """An uncompressed newc cpio archive (the initramfs format) of (name, mode, data, rdev)."""
    out = bytearray()

    def add(name: str, mode: int, data: bytes, rdev: int, ino: int) -> None:
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev >> 8, rdev & 0xFF, len(encoded), 0]
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data, rdev) in enumerate(entries, start=1):
        add(name, mode, data, rdev, ino)
    add("TRAILER!!!", 0, b"", 0, 0)
    return bytes(out)


def _is_static_elf(data: bytes) -> bool:
    """A 64-bit little-endian ELF without a PT_INTERP program header (no dynamic loader)."""
    if data[:6] != b"\x7fELF\x02\x01":
        return False
    phoff = int.from_bytes(data[32:40], "little")
    phentsize = int.from_bytes(data[54:56], "little")
    phnum = int.from_bytes(data[56:58], "little")
    types = [int.from_bytes(data[phoff + i * phentsize :][:4], "little") for i in range(phnum)]
    return 3 not in types  # PT_INTERP


def build_initramfs(kdir: Path, release: str) -> Path:
    """The initramfs for ``kdir`` (cached by the hash of everything that goes into it)."""
    moddir = kdir / "root" / "lib" / "modules" / release
    init = (HERE / "init.sh").read_bytes()
    busybox_path = shutil.which("busybox")
    if busybox_path is None:
        raise VMError("busybox is not installed (Debian busybox-static: scripts/install-deps.sh)")
    busybox = Path(busybox_path).read_bytes()
    if not _is_static_elf(busybox):
        raise VMError(f"{busybox_path} is not static: install Debian's busybox-static")
    modules = initramfs_modules(moddir, INITRAMFS_MODULES)
    digest = hashlib.sha256(init + hashlib.sha256(busybox).digest() + "\n".join(modules).encode())
    out = kdir / f"initramfs-{digest.hexdigest()[:16]}.cpio"
    if out.exists():
        os.utime(out)  # in use: see _prune()
        return out
    dirs = ["bin", "dev", "proc", "sys", "modules", "host", "rw", "newroot"]
    entries: list[tuple[str, int, bytes, int]] = [(d, stat.S_IFDIR | 0o755, b"", 0) for d in dirs]
    # The kernel opens /dev/console for init's stdio before anything mounts devtmpfs.
    entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", os.makedev(5, 1)))
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, busybox, 0))
    entries.append(("init", stat.S_IFREG | 0o755, init, 0))
    names = []
    for rel in modules:
        name = Path(rel).name.split(".ko")[0] + ".ko"
        names.append(name)
        entries.append((f"modules/{name}", stat.S_IFREG | 0o644, _module_bytes(moddir / rel), 0))
    listing = "".join(n + "\n" for n in names).encode()
    entries.append(("modules.list", stat.S_IFREG | 0o644, listing, 0))
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(cpio_newc(entries))
    tmp.rename(out)
    return out


def _prune(keep: list[Path]) -> None:
    """Remove kernels and initramfs images no run has used for a week. Not sooner: another
    checkout (another version of init.sh) or a pinned older kernel may share this cache."""
    horizon = time.time() - PRUNE_AFTER
    for path in [*CACHE.glob("*/ready"), *CACHE.glob("*/initramfs-*.cpio")]:
        if path not in keep and path.stat().st_mtime < horizon:
            if path.name == "ready":
                shutil.rmtree(path.parent, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Assets:
    package: str
    release: str
    vmlinux: Path
    moddir: Path
    initramfs: Path


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _download_kernel(package: str, release: str, dest: Path, log: Log) -> None:
    """Fill ``dest`` with vmlinux and the depmod'ed module tree of ``package``."""
    with tempfile.TemporaryDirectory(prefix="bpfman-vm-deb-") as tmp:
        log(f"downloading {package}")
        # The sandbox user cannot write a root-owned temp dir: download as root without warning.
        _run("apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", package, cwd=Path(tmp))
        debs = list(Path(tmp).glob("*.deb"))
        if len(debs) != 1:
            raise VMError(f"apt-get download {package} left {len(debs)} .deb files")
        log(f"unpacking {debs[0].name}")
        _run("dpkg", "-x", str(debs[0]), str(dest / "root"))
    vmlinuz = dest / "root" / "boot" / f"vmlinuz-{release}"
    if not vmlinuz.exists():
        raise VMError(f"{package} has no /boot/vmlinuz-{release}")
    (dest / "vmlinux").write_bytes(extract_vmlinux(vmlinuz.read_bytes()))
    shutil.copy(dest / "root" / "boot" / f"config-{release}", dest / "config")
    # Debian's modules.dep and friends are generated at install time, not shipped.
    _run("depmod", "-b", str(dest / "root"), release)


def prepare(log: Log = _stderr) -> Assets:
    """Everything needed to boot, from the cache or built now (idempotent, safe to run in
    parallel: a lock serializes builders and a directory appears complete or not at all)."""
    ensure_tools(log)
    package = kernel_package(log)
    release = package.removeprefix("linux-image-")
    kdir = CACHE / release
    with _locked(CACHE / ".lock"):
        if not (kdir / "ready").exists():
            started = time.monotonic()
            tmp = CACHE / f".{release}.tmp{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            try:
                _download_kernel(package, release, tmp, log)
                (tmp / "ready").write_text(package + "\n")
                shutil.rmtree(kdir, ignore_errors=True)
                tmp.rename(kdir)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            log(f"kernel {release} ready in {kdir} ({time.monotonic() - started:.1f} s)")
        os.utime(kdir / "ready")  # in use: see _prune()
        initramfs = build_initramfs(kdir, release)
        _prune(keep=[kdir / "ready", initramfs])
    return Assets(
        package=package,
        release=release,
        vmlinux=kdir / "vmlinux",
        moddir=kdir / "root" / "lib" / "modules" / release,
        initramfs=initramfs,
    )


# ---------------------------------------------------------------------------------------------
# Booting


@dataclass
class Result:
    status: int | None  # the command's exit status; None when the guest never reported one
    release: str | None  # guest `uname -r`, once the guest got that far
    seconds: float
    timed_out: bool
    console: Path
    boot_seconds: float | None = None  # guest uptime when the command started (boot time)

    def console_tail(self, lines: int = 40) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "\n".join(text.replace("\r", "").splitlines()[-lines:])


def _die_with_parent() -> None:
    """In the qemu child: be killed when the process that started it dies (even by SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def qemu_argv(assets: Assets, results: Path, cpus: int, memory_mb: int) -> list[str]:
    cmdline = " ".join(
        [
            "console=ttyS0",
            "quiet" if not os.environ.get("BPFMAN_VM_VERBOSE") else "loglevel=7",
            "panic=-1",  # a panic reboots, which -no-reboot turns into qemu exiting
            "random.trust_cpu=on",
            f"bpfman.moddir={assets.moddir}",
            os.environ.get("BPFMAN_VM_CMDLINE", ""),
        ]
    ).strip()
    return [
        "qemu-system-x86_64",
        "-accel", "tcg",
        "-M", "pc",
        "-cpu", os.environ.get("BPFMAN_VM_CPU", "max"),
        "-smp", str(cpus),
        "-m", str(memory_mb),
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-no-reboot",
        "-kernel", str(assets.vmlinux),
        "-initrd", str(assets.initramfs),
        "-append", cmdline,
        # stdio, not a file chardev: a file chardev reopens its path and writes from offset 0.
        "-chardev", "stdio,id=console,signal=off",
        "-serial", "chardev:console",
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-fsdev", f"local,id=results,path={results},security_model=none",
        "-device", "virtio-9p-pci,fsdev=results,mount_tag=results",
    ]  # fmt: skip


def run_script(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    """The shell script the guest runs (as root, chrooted in the overlay of the host's root)."""
    base = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "USER": "root",
    }
    lines = ["#!/bin/sh", "# Written by scripts/vm/vm.py; run by the guest's init."]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in {**base, **env}.items()]
    lines += [f"cd {shlex.quote(str(cwd))} || exit 125", f"exec {shlex.join(command)}", ""]
    return "\n".join(lines)


def byte_compile(repo: Path = REPO) -> None:
    """Bring the checkout's .pyc files up to date on the host before a boot. The guest sees the
    checkout read-only (what it writes lands in a tmpfs that dies with it), so a module changed
    since it was last compiled would be compiled again, under emulation, by the first process
    of every boot that imports it; and hosts that set PYTHONDONTWRITEBYTECODE never refresh
    them. Compiled with the interpreter the guest runs (the checkout's .venv), so the files
    match its version; a file that does not compile is left to fail where it is imported."""
    venv = repo / ".venv" / "bin" / "python"
    python = str(venv) if venv.exists() else sys.executable
    trees = [str(repo / d) for d in COMPILED_TREES if (repo / d).is_dir()]
    if trees:
        subprocess.run([python, "-m", "compileall", "-q", *trees], capture_output=True)
    # And the compiled methods of bpfman's dataclasses (reconciler/codecache.py), which the
    # guest could not write either.
    subprocess.run([python, "-m", "reconciler.precompile"], cwd=repo, capture_output=True)


def boot(
    assets: Assets,
    command: list[str],
    results: Path,
    *,
    cwd: Path = REPO,
    env: dict[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    console: Path | None = None,
    cpus: int | None = None,
    memory_mb: int | None = None,
    echo: BinaryIO | None = None,
) -> Result:
    """Boot the VM, run ``command`` in ``cwd`` and power off. ``results`` is a host directory the
    guest sees, writable, at /run/bpfman-vm (the command's own results go there too). The console
    goes to ``console`` (default results/console.log) and, live, to ``echo`` if given. qemu is
    killed on timeout, on any exception (KeyboardInterrupt included) and if this process dies."""
    byte_compile()
    results.mkdir(parents=True, exist_ok=True)
    for stale in ("status", "release", "boot-seconds"):
        (results / stale).unlink(missing_ok=True)
    (results / "run.sh").write_text(run_script(command, cwd, env or {}))
    console = console or results / "console.log"
    cpus = cpus or int(os.environ.get("BPFMAN_VM_CPUS", str(min(os.cpu_count() or 1, 2))))
    memory_mb = memory_mb or int(os.environ.get("BPFMAN_VM_MEMORY_MB", "2048"))
    argv = qemu_argv(assets, results, cpus, memory_mb)
    started = time.monotonic()
    timed_out = False
    with open(console, "wb") as out:
        out.write(f"$ {shlex.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if echo else out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        except FileNotFoundError as e:
            raise VMError("qemu-system-x86_64 is not installed (Debian qemu-system-x86)") from e
        tee = None
        if echo is not None:
            tee = threading.Thread(target=_tee, args=(proc.stdout, out, echo), daemon=True)
            tee.start()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if tee is not None:
                tee.join(timeout=5)
    status, release, boot_seconds = (
        _read(results / name) for name in ("status", "release", "boot-seconds")
    )
    return Result(
        status=int(status) if status else None,
        release=release,
        seconds=time.monotonic() - started,
        timed_out=timed_out,
        console=console,
        boot_seconds=float(boot_seconds) if boot_seconds else None,
    )


def _tee(source: IO[bytes], *sinks: BinaryIO) -> None:
    while chunk := source.read1(65536):  # type: ignore[attr-defined]
        for sink in sinks:
            sink.write(chunk)
            sink.flush()


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------
# Inside the guest


def files_opened_by(argv: list[str]) -> set[str]:
    """The regular files ``argv`` (and its children) open or execute, traced with strace
    (an empty set when strace is missing or the command fails)."""
    if shutil.which("strace") is None:
        return set()
    with tempfile.NamedTemporaryFile("r", prefix="bpfman-vm-trace-") as log:
        trace = ["strace", "-f", "-qq", "-e", "trace=openat,execve", "-o", log.name, *argv]
        if subprocess.run(trace, capture_output=True).returncode != 0:
            return set()
        # e.g. 123 openat(AT_FDCWD, "/usr/lib/x.so", O_RDONLY|O_CLOEXEC) = 3; a failed open
        # of a file that exists is kept too (harmless), a name that is no file is dropped.
        names = {line.split('"')[1] for line in log if line.count('"') >= 2}
    return {os.path.realpath(n) for n in names if os.path.isfile(n)}


def keep_in_guest(paths: set[str]) -> int:
    """Copy files of the host's root into the guest's memory: the guest's root is an overlay
    whose lower layer is the host's root over 9p (init.sh), so every open of a host file is a
    round trip to qemu. Setting a file's mode (to what it is) copies it up into the overlay's
    tmpfs, contents and times kept (so .pyc files stay valid); later opens stay in the guest,
    as they would on a machine with a local disk. Returns how many files were copied."""
    done = 0
    for path in sorted(paths):
        if path.startswith(("/proc/", "/sys/", "/dev/", "/run/")):
            continue
        try:
            st = os.stat(path)
            if stat.S_ISREG(st.st_mode):
                os.chmod(path, stat.S_IMODE(st.st_mode))
                done += 1
        except OSError:
            continue
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("prepare", help="download and cache the kernel, build the initramfs")
    run = sub.add_parser("run", help="boot the VM and run a command in this checkout")
    run.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    run.add_argument(
        "--results",
        type=Path,
        help="host directory the guest sees, writable, at /run/bpfman-vm (kept afterwards: "
        "what the command writes there, e.g. profiles, and the console log); default a temp dir",
    )
    run.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    try:
        assets = prepare()
        if args.cmd == "prepare":
            print(f"{assets.package}: {assets.vmlinux}, {assets.initramfs}")
            return 0
        with contextlib.ExitStack() as stack:
            results = args.results or Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="bpfman-vm-"))
            )
            res = boot(
                assets,
                args.command,
                results.resolve(),
                cwd=Path.cwd(),
                timeout=args.timeout,
                echo=sys.stdout.buffer,
            )
            _stderr(
                f"guest {res.release}: exit {res.status} after {res.seconds:.1f} s "
                f"(booted in {res.boot_seconds} s)"
            )
            if res.status is None:
                _stderr("timed out" if res.timed_out else "the guest reported no exit status")
                return 125
            return res.status
    except VMError as e:
        _stderr(str(e))
        return 125


if __name__ == "__main__":
    sys.exit(main())
