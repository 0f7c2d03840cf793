"""pytest plugin of the VM tier: tests marked ``vm`` run inside one qemu VM per session.

On the host (``BPFMAN_IN_VM`` unset) a ``vm`` test is never run in-process. The first time one is
reached, the plugin prepares the VM (scripts/vm/vm.py: Debian's kernel, cached), boots it once and
runs every selected ``vm`` test in a single guest ``pytest`` (same checkout and .venv: the guest's
root is the host's, shared read-only under a tmpfs overlay). The guest writes each test report,
serialized the way pytest-xdist does it, to a writable 9p share; each outer ``vm`` item then
replays its guest reports, so it passes, fails with the guest's traceback, or is skipped with the
guest's reason exactly as if it had run here.

Inside the guest (``BPFMAN_IN_VM=1``) ``vm`` tests run normally and all other tests are skipped.

Environment: ``BPFMAN_SKIP_VM=1`` skips the tier; ``BPFMAN_VM_TIMEOUT`` bounds the guest run
(seconds, default 600); ``BPFMAN_VM_KEEP=1`` keeps the results directory with the console log.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pytest import TestReport

VM_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "vm" / "vm.py"
GUEST_RESULTS = "/run/bpfman-vm"  # where the guest sees the results share (scripts/vm/init.sh)
REPORTS = "reports.jsonl"


def in_vm() -> bool:
    return os.environ.get("BPFMAN_IN_VM") == "1"


def is_vm_test(item: pytest.Item) -> bool:
    return item.get_closest_marker("vm") is not None


def load_vm_module() -> ModuleType:
    """scripts/vm/vm.py, imported by path (scripts/ is not a package)."""
    name = "bpfman_vm"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, VM_SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def pytest_configure(config: pytest.Config) -> None:
    if in_vm():
        config.pluginmanager.register(GuestSide(config), "bpfman-vm-guest")
    else:
        config.pluginmanager.register(HostSide(config), "bpfman-vm-host")


def _describe(e: Exception, vm: ModuleType) -> str:
    return str(e) if isinstance(e, vm.VMError) else f"{type(e).__name__}: {e}"


class GuestSide:
    """Runs ``vm`` tests, skips the rest, and writes every report where the host reads it."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        path = os.environ.get("BPFMAN_VM_REPORT")
        self.out = open(path, "a") if path else None  # noqa: SIM115 (closed at unconfigure)

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        skip = pytest.mark.skip(reason="host test: inside the VM only tests marked vm run")
        for item in items:
            if not is_vm_test(item):
                item.add_marker(skip)

    def _write(self, report: pytest.CollectReport | TestReport) -> None:
        if self.out is None:
            return
        data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
        self.out.write(json.dumps(data) + "\n")
        self.out.flush()

    def pytest_runtest_logreport(self, report: TestReport) -> None:
        self._write(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self._write(report)

    def pytest_unconfigure(self) -> None:
        if self.out is not None:
            self.out.close()


class HostSide:
    """Boots the VM once for all selected ``vm`` tests and replays their guest reports."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.skip_reason: str | None = None
        if os.environ.get("BPFMAN_SKIP_VM"):
            self.skip_reason = "BPFMAN_SKIP_VM=1: the VM tier is skipped"
        elif os.geteuid() != 0:
            # Like the kernel tier: installing qemu, caching the kernel under /var/cache and
            # sharing the whole root file system with a guest that runs as root all need root.
            self.skip_reason = "the VM tier needs root"
        self.ran = False
        self.count = 0
        self.reports: dict[str, list[TestReport]] = {}
        self.collect_errors: list[str] = []
        self.error: str | None = None  # why the guest produced no (complete) results
        self.console_tail = ""
        self.release: str | None = None
        self.package: str | None = None
        self.seconds = 0.0
        self.boot_seconds: float | None = None
        self.status: int | None = None  # the guest pytest's exit status
        self.results: Path | None = None

    # -- collection ---------------------------------------------------------------------------

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        if self.skip_reason:
            skip = pytest.mark.skip(reason=self.skip_reason)
            for item in items:
                if is_vm_test(item):
                    item.add_marker(skip)

    # -- running ------------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Any:
        if not is_vm_test(item) or self.skip_reason:
            return None
        if not self.ran:
            self.ran = True
            self._run_guest([i for i in item.session.items if is_vm_test(i)])
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        reports = self.reports.get(item.nodeid) or self._missing(item)
        for report in reports:
            item.ihook.pytest_runtest_logreport(report=report)
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def _say(self, msg: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"vm tier: {msg}")

    def _run_guest(self, items: list[pytest.Item]) -> None:
        vm = load_vm_module()
        self.count = len(items)
        started = time.monotonic()
        try:
            assets = vm.prepare(log=self._say)
        except Exception as e:  # any failure here fails the tier's tests, never pytest itself
            self.error = f"could not prepare the VM: {_describe(e, vm)}"
            return
        self.package = assets.package
        self.results = Path(tempfile.mkdtemp(prefix="bpfman-vm-"))
        rootdir = self.config.rootpath
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--color=no"]
        argv += ["--durations=5"]
        argv += [f"--rootdir={rootdir}", f"--tb={self.config.option.tbstyle}"]
        if self.config.inipath is not None:
            argv += ["-c", str(self.config.inipath)]
        argv += [i.nodeid for i in items]
        env = {
            "BPFMAN_IN_VM": "1",
            "BPFMAN_HOST_RELEASE": os.uname().release,
            "BPFMAN_VM_REPORT": f"{GUEST_RESULTS}/{REPORTS}",
            "COLUMNS": "120",
        }
        timeout = float(os.environ.get("BPFMAN_VM_TIMEOUT", vm.DEFAULT_TIMEOUT))
        self._say(f"booting {assets.release} (qemu, TCG) for {len(items)} tests")
        try:
            result = vm.boot(assets, argv, self.results, cwd=rootdir, env=env, timeout=timeout)
        except Exception as e:  # qemu is already killed: boot() never leaves it behind
            self.error = f"could not boot the VM: {_describe(e, vm)}"
            return
        self.seconds = time.monotonic() - started
        self.release = result.release
        self.boot_seconds = result.boot_seconds
        self.status = result.status
        self._read_reports(self.results / REPORTS)
        if result.status is None:
            why = (
                f"timed out after {timeout:.0f} s (BPFMAN_VM_TIMEOUT)"
                if result.timed_out
                else "reported no exit status (it did not boot, or crashed)"
            )
            self.error = f"the VM {why} (console tail in the vm tier summary)"
            self.console_tail = result.console_tail()
        elif any(i.nodeid not in self.reports for i in items):
            self.error = (
                f"the guest pytest exited {result.status} without results for every test "
                "(console tail in the vm tier summary)"
            )
            self.console_tail = result.console_tail()

    def _read_reports(self, path: Path) -> None:
        if not path.exists():
            return
        for line in path.read_text().splitlines():
            report = self.config.hook.pytest_report_from_serializable(
                config=self.config, data=json.loads(line)
            )
            if isinstance(report.longrepr, list):
                # A skip's (path, line, reason): JSON made the tuple a list; pytest wants a tuple.
                report.longrepr = tuple(report.longrepr)
            if isinstance(report, TestReport):
                self.reports.setdefault(report.nodeid, []).append(report)
            else:
                self.collect_errors.append(f"{report.nodeid}: {report.longreprtext}")

    def _missing(self, item: pytest.Item) -> list[TestReport]:
        """setup/call/teardown reports of a test the guest gave no result for: a failure."""
        why = self.error or "the guest run gave no result for this test"
        if self.collect_errors:
            why += "\nguest collection errors:\n" + "\n".join(self.collect_errors)
        keywords = {k: 1 for k in item.keywords}

        def report(when: str, outcome: str, longrepr: str | None) -> TestReport:
            return TestReport(
                nodeid=item.nodeid,
                location=item.location,
                keywords=keywords,  # type: ignore[arg-type]
                outcome=outcome,  # type: ignore[arg-type]
                longrepr=longrepr,
                when=when,  # type: ignore[arg-type]
            )

        return [
            report("setup", "passed", None),
            report("call", "failed", f"VM tier: {why}"),
            report("teardown", "passed", None),
        ]

    # -- reporting ----------------------------------------------------------------------------

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.ran:
            return
        terminalreporter.write_sep("-", "vm tier")
        if self.release:
            boot = f"boot {self.boot_seconds:.1f} s, " if self.boot_seconds else ""
            terminalreporter.write_line(
                f"ran {self.count} tests in one VM on kernel {self.release} "
                f"({self.package}, qemu TCG), host kernel {os.uname().release}: "
                f"{boot}{self.seconds:.1f} s in all, guest pytest exit {self.status}"
            )
        if self.error:
            terminalreporter.write_line(f"VM tier failed: {self.error}", red=True)
        if self.console_tail:
            terminalreporter.write_line("guest console, last lines:")
            terminalreporter.write_line(self.console_tail)
        if self.results is not None and os.environ.get("BPFMAN_VM_KEEP"):
            terminalreporter.write_line(f"console log and reports kept in {self.results}")

    def pytest_unconfigure(self) -> None:
        if self.results is not None and not os.environ.get("BPFMAN_VM_KEEP"):
            shutil.rmtree(self.results, ignore_errors=True)
