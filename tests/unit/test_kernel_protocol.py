"""Both kernels implement the whole ``Kernel`` protocol: nothing above the kernel layer has to
ask whether a method exists (mypy checks the signatures; this checks the names in every run)."""

from __future__ import annotations

from reconciler.kernel import FakeKernel, Kernel, RealKernel


def test_both_kernels_implement_every_method_of_the_protocol() -> None:
    methods = {name for name in vars(Kernel) if not name.startswith("_")} - {"root"}
    assert {"staging_leftovers", "discard_staging", "reporting_steps"} <= methods
    for kernel in (RealKernel, FakeKernel):
        assert methods <= {n for n in dir(kernel) if callable(getattr(kernel, n))}, kernel


def test_the_fake_stages_nothing_and_reaches_no_pause_point() -> None:
    kernel = FakeKernel()
    reached: list[str] = []
    with kernel.reporting_steps(reached.append):
        kernel.uninstall("XdpProgram/x/eth0")
    assert (kernel.staging_leftovers(), kernel.discard_staging(), reached) == ([], [], [])
