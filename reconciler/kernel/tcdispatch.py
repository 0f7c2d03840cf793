"""Multi-program TC (clsact + cls_bpf) through a dispatcher swapped atomically in place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconciler.kernel.types import DispatchSlot, HookState, Installed, TcHook

if TYPE_CHECKING:
    from reconciler.kernel.real import RealKernel


def dispatch(kernel: RealKernel, hook: TcHook, slots: list[DispatchSlot]) -> list[Installed]:
    raise NotImplementedError("TC dispatcher: issue 4")


def hook_state(kernel: RealKernel, hook: TcHook) -> HookState:
    raise NotImplementedError("TC dispatcher: issue 4")
