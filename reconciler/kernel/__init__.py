"""The kernel layer: bpf(2), libbpf, bpffs pins, netlink, feature probes, observing.

``RealKernel`` and ``FakeKernel`` are imported lazily: importing the types (which every layer
does) must not load libbpf.so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reconciler.kernel.types import (
    AttachConflict,
    AttachPoint,
    FentryPoint,
    FexitPoint,
    Installed,
    Kernel,
    KernelError,
    KprobePoint,
    LoadNotPermitted,
    MapInfo,
    Placement,
    Probe,
    ProgramSpec,
    ProgType,
    TcxPoint,
    TracepointPoint,
    UprobePoint,
    VerifierError,
    XdpPoint,
)

if TYPE_CHECKING:
    from reconciler.kernel.fake import FakeKernel
    from reconciler.kernel.real import RealKernel

__all__ = [
    "AttachConflict",
    "AttachPoint",
    "FakeKernel",
    "FentryPoint",
    "FexitPoint",
    "Installed",
    "Kernel",
    "KernelError",
    "KprobePoint",
    "LoadNotPermitted",
    "MapInfo",
    "Placement",
    "Probe",
    "ProgType",
    "ProgramSpec",
    "RealKernel",
    "TcxPoint",
    "TracepointPoint",
    "UprobePoint",
    "VerifierError",
    "XdpPoint",
]


def __getattr__(name: str) -> Any:
    if name == "RealKernel":
        from reconciler.kernel.real import RealKernel

        return RealKernel
    if name == "FakeKernel":
        from reconciler.kernel.fake import FakeKernel

        return FakeKernel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
