"""``bpfman watch`` follows interfaces through netlink link events: a program whose interface
does not exist waits (the rest is applied), gets attached when the interface appears, is cleaned
up when it goes (no error loop), and comes back when it is made again. The interface is a veth in
a network namespace this test creates; the kernel is read with ``ip``."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support
from tests.cli.conftest import EXAMPLES
from tests.watch.test_watch_dir import Watch, eventually, watch  # noqa: F401  (fixture)

pytestmark = pytest.mark.kernel

XDP_O = EXAMPLES / "bytecode" / "xdp_counter.o"


@pytest.fixture
def netns() -> Iterator[str]:
    name = support.unique("bpfw-")
    support.sh("ip", "netns", "add", name)
    try:
        yield name
    finally:
        support.sh("ip", "netns", "del", name, check=False)


def xdp_prog(ns: str, ifname: str) -> int | None:
    """The XDP program id on ``ifname`` in ``ns``, as ip sees it (None: none, or no such link)."""
    p = support.sh("ip", "-n", ns, "-d", "-j", "link", "show", ifname, check=False)
    if p.returncode != 0:
        return None
    (link,) = json.loads(p.stdout)
    return link.get("xdp", {}).get("prog", {}).get("id")


def add_veth(ns: str, name: str) -> None:
    support.sh("ip", "-n", ns, "link", "add", name, "type", "veth", "peer", "name", name + "p")
    support.sh("ip", "-n", ns, "link", "set", name, "up")


def test_an_interface_that_comes_goes_and_comes_back(
    watch: Watch,  # noqa: F811
    tmp_path: Path,
    netns: str,
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(XDP_O, src / XDP_O.name)
    (src / "xdp.yaml").write_text(
        f"""apiVersion: bpfman.io/v1alpha1
kind: XdpProgram
metadata: {{name: edge}}
spec:
  bpffunctionname: xdp_stats
  bytecode: {{path: {XDP_O.name}}}
  interfaceselector: {{interfaces: [wa0]}}
  netns: /run/netns/{netns}
  priority: 50
"""
    )
    watch.start("--interval", "3600", str(src))
    eventually(lambda: "waiting what=" in watch.text(), "the missing interface waited for")
    assert "result=applied" in watch.text() or "result=no-changes" in watch.text()
    assert "result=failed" not in watch.text()

    add_veth(netns, "wa0")
    eventually(lambda: xdp_prog(netns, "wa0") is not None, "attached when wa0 appeared")

    support.sh("ip", "-n", netns, "link", "del", "wa0")
    n = len(watch.reconciles())
    eventually(lambda: len(watch.reconciles()) > n, "a reconcile after wa0 went")
    status = json.loads(
        subprocess.run(watch.cli("status", "--json"), capture_output=True, text=True).stdout
    )
    assert status["last_result"] in ("applied", "no-changes")
    assert status["programs_by_kind"] == {}  # its record was cleaned up
    assert "result=failed" not in watch.text()

    add_veth(netns, "wa0")
    eventually(lambda: xdp_prog(netns, "wa0") is not None, "attached again when wa0 came back")
    assert watch.stop() == 0
