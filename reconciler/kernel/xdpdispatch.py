"""Multi-program XDP through a dispatcher speaking libxdp's protocol (version 2)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler.kernel.types import DispatchSlot, HookState, Installed, XdpHook

if TYPE_CHECKING:
    from reconciler.kernel.real import RealKernel


def dispatch(kernel: RealKernel, hook: XdpHook, slots: list[DispatchSlot]) -> list[Installed]:
    raise NotImplementedError("XDP dispatcher: issue 4")


def hook_state(kernel: RealKernel, hook: XdpHook) -> HookState:
    raise NotImplementedError("XDP dispatcher: issue 4")
