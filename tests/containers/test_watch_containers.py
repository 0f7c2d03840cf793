"""``bpfman watch`` follows podman's container events when the manifests select containers: a
matching container that starts is probed at once (not at the next interval: the interval here is
an hour), one that stops is detached, the reconcile's log line names the container as its
reason, and a runtime that goes away is logged, retried and never stops the watcher. The
runtime is a private podman (tests/containers/podman.py); the kernel is read with bpftool."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import EXAMPLES
from tests.containers.podman import Podman
from tests.containers.test_podman_selectors import probe_counts, start, uprobe_program
from tests.watch.test_watch_dir import Watch, eventually, watch  # noqa: F401  (fixture)

pytestmark = pytest.mark.kernel

UPROBE_O = EXAMPLES / "bytecode" / "uprobe_counter.o"
FUNCTION = "/probe_target:bpfman_probe_me"


@pytest.fixture
def containers(podman: Podman) -> Iterator[list[str]]:
    """The containers a test starts, removed after it (after the watcher is stopped: this
    fixture is asked for before ``watch``), pass or fail; the service running again."""
    names: list[str] = []
    yield names
    for name in names:
        podman.podman("rm", "-f", "-t", "0", name, check=False)
    if podman.service is None:
        podman.start_service()


def setup_source(tmp_path: Path, socket: str) -> tuple[Path, Path]:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(UPROBE_O, src / UPROBE_O.name)
    (src / "up.yaml").write_text(uprobe_program(UPROBE_O.name))
    config = tmp_path / "config.yaml"
    config.write_text(f"containers:\n  runtime: podman\n  socket: {socket}\n")
    return src, config


def reasons(w: Watch) -> list[str]:
    """The reason of every reconcile so far, in order."""
    out = []
    for line in w.reconciles():
        _, _, rest = line.partition(" reason=")
        if rest.startswith('"'):
            out.append(json.loads(rest.split('" ', 1)[0] + '"'))
        else:
            out.append(rest.split(" ", 1)[0])
    return out


def attached_pid(w: Watch, pod: str) -> int | None:
    """The container process bpfman records for the probe in ``pod`` (None: not attached)."""
    address = f"UprobeProgram/probe[shop/{pod}/app:{FUNCTION}]"
    p = subprocess.run(w.cli("get", address, "--json"), capture_output=True, text=True)
    return json.loads(p.stdout)["attributes"]["container_pid"] if p.returncode == 0 else None


def test_a_container_that_starts_or_stops_is_attached_or_detached_without_the_interval(
    containers: list[str],
    watch: Watch,  # noqa: F811
    podman: Podman,
    tmp_path: Path,
) -> None:
    src, config = setup_source(tmp_path, podman.socket)
    start(podman, containers, "web-1", app="web")
    watch.start("--config", str(config), "--interval", "3600", str(src))
    eventually(lambda: len(probe_counts()) == 1, "the running container probed")
    (first,) = probe_counts()
    # Subscribed (after the first reconcile found the selector), and the reconcile the new
    # subscription asks for (what started meanwhile) done: the next one is the container's.
    eventually(lambda: "container events watched" in reasons(watch), "the subscription's reconcile")
    assert "container events: watching runtime=podman" in watch.text()

    web2 = start(podman, containers, "web-2", app="web")
    eventually(lambda: len(probe_counts()) == 2, "the new container probed")
    (second,) = set(probe_counts()) - {first}
    eventually(lambda: probe_counts()[second] > 0, "the probe counting in the new container")
    assert attached_pid(watch, "web-2") == web2
    assert "container shop/web-2/app started" in reasons(watch)

    # A container of the namespace that the selector does not name: looked at, nothing changes.
    start(podman, containers, "db-1", app="db")
    eventually(lambda: "container shop/db-1/app started" in reasons(watch), "db-1 looked at")
    (line,) = [line for line in watch.reconciles() if "db-1" in line]
    assert "result=no-changes" in line
    assert set(probe_counts()) == {first, second}

    podman.stop(containers[1])  # web-2
    eventually(lambda: set(probe_counts()) == {first}, "the stopped container's probe detached")
    assert attached_pid(watch, "web-2") is None
    assert any(r.startswith("container shop/web-2/app ") for r in reasons(watch)[-2:])
    assert "result=failed" not in watch.text()

    # The runtime goes away: said once, the watcher goes on (a reconcile on demand fails at the
    # selector and keeps the last good state), and it follows the runtime again when it is back.
    podman.stop_service()
    eventually(lambda: "container events: cannot watch them" in watch.text(), "the outage said")
    n = len(watch.reconciles())
    assert watch.proc is not None
    watch.proc.send_signal(signal.SIGHUP)
    eventually(lambda: len(watch.reconciles()) > n, "a reconcile on SIGHUP during the outage")
    assert watch.proc.poll() is None
    assert set(probe_counts()) == {first}
    assert watch.text().count("container events: cannot watch them") == 1
    podman.start_service()
    eventually(lambda: "container events: watching again" in watch.text(), "resubscribed")
    assert watch.stop() == 0
    assert set(probe_counts()) == {first}  # exiting unloads nothing


def test_a_runtime_that_is_not_there_never_stops_the_watcher(
    watch: Watch,  # noqa: F811
    tmp_path: Path,
) -> None:
    src, config = setup_source(tmp_path, str(tmp_path / "missing.sock"))
    watch.start("--config", str(config), "--interval", "3600", str(src))
    eventually(lambda: "container events: cannot watch them" in watch.text(), "the problem said")
    assert "missing.sock: the socket does not exist" in watch.text()
    eventually(lambda: "result=failed" in watch.text(), "the plan's error at the selector")
    n = len(watch.reconciles())
    assert watch.proc is not None
    watch.proc.send_signal(signal.SIGHUP)
    eventually(lambda: len(watch.reconciles()) > n, "reconciles on its other triggers")
    assert watch.proc.poll() is None
    assert watch.text().count("container events: cannot watch them") == 1
    assert watch.stop() == 0
    assert "bpfman watch stopped" in watch.text()
