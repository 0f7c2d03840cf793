"""A private podman for tests: its own storage (vfs, under a temp directory), its own API
service on a private socket, one image imported from a tarball (no registry), and containers
labelled as the kubelet labels them. Everything it made is removed by ``close``.

Why these flags: ``--runtime runc`` because crun refuses hosts with hybrid cgroups (v1
controllers plus a v2 mount), ``--cgroup-manager cgroupfs`` and ``--events-backend file`` so no
systemd is needed, ``--network none`` so no CNI/netavark setup is, and a small nofile/nproc
ulimit because podman's default (1048576) is above what an unprivileged hard limit may allow.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMAGE = "localhost/bpfman-test-probe:1"
TARGET = "/probe_target"  # the binary's path inside the image


class Unavailable(Exception):
    """podman cannot run containers here; the message says why."""


class Podman:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bpfman-podman-"))
        self.socket = str(self.dir / "api.sock")
        self.service: subprocess.Popen[bytes] | None = None
        runtime = ["--runtime", "runc"] if shutil.which("runc") else []
        self.flags = [
            "--root",
            str(self.dir / "storage"),
            "--runroot",
            str(self.dir / "run"),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            *runtime,
        ]
        self.names: list[str] = []

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(["podman", *self.flags, *args], capture_output=True, text=True)
        if check and p.returncode != 0:
            raise Unavailable(f"podman {' '.join(args)} failed: {p.stderr.strip()}")
        return p

    # --- setup

    def build_image(self) -> None:
        """Compile the target statically and import it as a one-file image."""
        rootfs = self.dir / "rootfs"
        rootfs.mkdir()
        cc = shutil.which("gcc") or shutil.which("cc")
        if cc is None:
            raise Unavailable("no C compiler to build the container's target")
        p = subprocess.run(
            [
                cc,
                "-static",
                "-O1",
                "-g",
                "-o",
                str(rootfs / TARGET.lstrip("/")),
                str(HERE / "probe_target.c"),
            ],
            capture_output=True,
            text=True,
        )
        if p.returncode != 0:
            raise Unavailable(f"cannot link the target statically: {p.stderr.strip()}")
        tar = self.dir / "rootfs.tar"
        with tarfile.open(tar, "w") as t:
            t.add(rootfs / TARGET.lstrip("/"), arcname=TARGET.lstrip("/"))
        self.podman("import", str(tar), IMAGE)

    def start_service(self) -> None:
        self.service = subprocess.Popen(
            ["podman", *self.flags, "system", "service", "--time=0", f"unix://{self.socket}"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "service.log", "wb"),  # noqa: SIM115 - closed with the process
        )
        for _ in range(200):  # until it accepts connections (it creates the socket first)
            if self.service.poll() is not None:
                raise Unavailable(f"podman system service exited: {self.log()}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(self.socket)
                return
            except OSError:
                time.sleep(0.05)
        raise Unavailable(f"podman system service never listened on {self.socket}: {self.log()}")

    def stop_service(self) -> None:
        if self.service is not None and self.service.poll() is None:
            self.service.send_signal(signal.SIGTERM)
            try:
                self.service.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.service.kill()
                self.service.wait()
        self.service = None

    def log(self) -> str:
        try:
            return (self.dir / "service.log").read_text()[-2000:]
        except OSError:
            return ""

    # --- containers

    def run(
        self,
        name: str,
        namespace: str,
        pod: str,
        container: str,
        netns: str = "none",
        **labels: str,
    ) -> int:
        """Start a container of the image labelled as the kubelet labels a pod's container
        (plus ``labels``, standing for the pod's); its pid on the host."""
        every = {
            "io.kubernetes.pod.namespace": namespace,
            "io.kubernetes.pod.name": pod,
            "io.kubernetes.container.name": container,
            **labels,
        }
        args = ["run", "-d", "--name", name, "--network", netns]
        args += ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
        for key, value in every.items():
            args += ["--label", f"{key}={value}"]
        self.names.append(name)
        self.podman(*args, IMAGE, TARGET)
        return self.pid(name)

    def pid(self, name: str) -> int:
        out = self.podman("inspect", name).stdout
        return int(json.loads(out)[0]["State"]["Pid"])

    def stop(self, name: str) -> None:
        self.podman("rm", "-f", "-t", "0", name)

    def close(self) -> None:
        """Remove every container, the image and the service; whatever failed before."""
        for name in self.names:
            self.podman("rm", "-f", "-t", "0", name, check=False)
        self.podman("rmi", "-f", IMAGE, check=False)
        self.stop_service()
        # vfs layers are plain directories; podman's own cleanup of its storage root
        self.podman("system", "reset", "--force", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def start() -> Podman:
    """A ready podman (image imported, one container run and removed, service listening), or
    Unavailable saying why; nothing is left behind on failure."""
    if shutil.which("podman") is None:
        raise Unavailable("podman is not installed (scripts/install-deps.sh installs it)")
    if os.geteuid() != 0:
        raise Unavailable("needs root")
    p = Podman()
    try:
        p.build_image()
        p.run("bpfman-podman-check", "check", "check", "check")  # can it run one at all?
        p.stop("bpfman-podman-check")
        p.start_service()
    except BaseException:
        p.close()
        raise
    return p
