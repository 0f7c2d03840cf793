from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support

pytest_plugins = ["tests.vmtier"]


def pytest_collection_modifyitems(config, items):
    if support.is_root():
        return
    skip = pytest.mark.skip(reason="needs root to load eBPF programs")
    for item in items:
        if item.get_closest_marker("kernel"):
            item.add_marker(skip)


@pytest.fixture
def bpffs_root() -> Iterator[Path]:
    """A private bpffs root so tests never see the host's (or each other's) pins."""
    if not os.path.ismount("/sys/fs/bpf"):
        subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=True)
    root = Path("/sys/fs/bpf") / support.unique("bpfman-test-")
    try:
        yield root
    finally:
        support.remove_tree(root)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    return d


@pytest.fixture
def veth() -> Iterator[support.VethPair]:
    pair = support.create_veth_pair()
    try:
        yield pair
    finally:
        support.delete_veth_pair(pair)


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fails the test if it leaves programs, links or maps behind (counted with bpftool)."""
    progs, links, maps = support.prog_ids(), support.link_ids(), support.map_ids()
    yield
    support.wait_gone(support.link_ids, links, "links")
    support.wait_gone(support.prog_ids, progs, "programs")
    support.wait_gone(support.map_ids, maps, "maps")


# iproute2 (`ip link set … obj`, `tc … bpf obj`) creates its own pinning dirs on first use:
# /sys/fs/bpf/tc/globals and the symlinks ip and xdp. Tests that use it must not leave them.
_IPROUTE2_ENTRIES = ("ip", "xdp", "tc")


@pytest.fixture(scope="session", autouse=True)
def _iproute2_bpffs_entries() -> Iterator[None]:
    bpffs = Path("/sys/fs/bpf")
    before = {name for name in _IPROUTE2_ENTRIES if os.path.lexists(bpffs / name)}
    yield
    if not support.is_root():
        return
    for name in _IPROUTE2_ENTRIES:
        path = bpffs / name
        if name in before or not os.path.lexists(path):
            continue
        if path.is_symlink():
            path.unlink()
        else:
            support.remove_tree(path)
