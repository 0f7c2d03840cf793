"""cgroup v2 directories for tests: a child cgroup of the host's cgroup2 mount (or of one the
test mounts itself), processes of the test run inside it, and its removal even on failure.

Only the test's own child processes ever enter the cgroup; it is removed once they exit.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests import support


def cgroup2_mount() -> str | None:
    """The first cgroup2 mount point in /proc/self/mounts (None: none)."""
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return fields[1].replace("\\040", " ")
    return None


@contextlib.contextmanager
def _mount() -> Iterator[str]:
    found = cgroup2_mount()
    if found is not None:
        yield found
        return
    where = tempfile.mkdtemp(prefix="bpfman-cgroup2-")
    support.sh("mount", "-t", "cgroup2", "none", where)
    try:
        yield where
    finally:
        support.sh("umount", where, check=False)
        os.rmdir(where)


@contextlib.contextmanager
def child_cgroup(prefix: str = "bpfman-test-") -> Iterator[Path]:
    """A new, empty child cgroup of the cgroup2 mount; removed at exit (after any process of
    ours still in it is killed and has exited)."""
    with _mount() as mount:
        path = Path(mount) / support.unique(prefix)
        path.mkdir()
        try:
            yield path
        finally:
            _remove(path)


def _remove(path: Path) -> None:
    deadline = time.monotonic() + 5
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            # Our processes left in it (a failed test): end them, then try again.
            with contextlib.suppress(OSError):
                (path / "cgroup.kill").write_text("1")
            time.sleep(0.05)


# A child that joins the cgroup (if given), sends one UDP datagram and opens one TCP connection
# to 127.0.0.1:PORT (nothing listens there); prints what each did: "sent" (the datagram left,
# or the SYN did and lo answered with a reset), an errno name, or "timeout" (no answer: the SYN
# was dropped; TCP retransmits a dropped SYN instead of failing the connect).
_SEND = r"""
import errno, os, socket, sys
cgroup, port = sys.argv[1], int(sys.argv[2])
if cgroup:
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
results = []
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    u.sendto(b"x", ("127.0.0.1", port)); results.append("sent")
except OSError as e:
    results.append(errno.errorcode.get(e.errno or 0, str(e.errno)))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.settimeout(1)
try:
    t.connect(("127.0.0.1", port)); results.append("sent")
except ConnectionRefusedError:
    results.append("sent")
except TimeoutError:
    results.append("timeout")
except OSError as e:
    results.append(errno.errorcode.get(e.errno or 0, str(e.errno)))
print(*results)
"""


def send_from(cgroup: Path | None, port: int) -> tuple[str, str]:
    """What a child process sending to 127.0.0.1:``port`` from inside ``cgroup`` (None: from
    where the test runs) saw: (UDP sendto, TCP connect), each "sent", an errno name ("EPERM")
    or "timeout"."""
    out = subprocess.run(
        [sys.executable, "-c", _SEND, str(cgroup or ""), str(port)],
        check=True,
        capture_output=True,
        text=True,
        timeout=20,
    ).stdout.split()
    return out[0], out[1]
