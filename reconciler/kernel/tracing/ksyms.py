"""Kernel functions a kprobe, fentry or fexit program names: do they exist on this kernel?

A kprobe needs a text symbol in /proc/kallsyms (the kernel resolves the name there). fentry and
fexit need the function's BTF (libbpf looks for a FUNC of that name in /sys/kernel/btf/vmlinux,
then in the modules' BTF): a function the kernel has but whose BTF it lacks (static, inlined,
or a kernel built without CONFIG_DEBUG_INFO_BTF) cannot be traced that way.
"""

from __future__ import annotations

import re
from functools import cache

from reconciler.kernel.sys import btfinfo
from reconciler.kernel.tracing.elfsyms import near_names

KALLSYMS = "/proc/kallsyms"
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"


@cache
def kallsyms() -> dict[str, str] | None:
    """Text symbols of the running kernel: name -> module ("" for vmlinux); None when
    /proc/kallsyms cannot be read or lists none."""
    found: dict[str, str] = {}
    try:
        with open(KALLSYMS) as f:
            for line in f:
                # "<addr> <type> <name>[\t[module]]"; functions are text symbols (t/T), weak w/W.
                parts = line.split()
                if len(parts) >= 3 and parts[1] in ("t", "T", "w", "W"):
                    module = parts[3].strip("[]") if len(parts) > 3 else ""
                    found.setdefault(parts[2], module)
    except OSError:
        return None
    return found or None


def _near(name: str) -> str:
    syms = kallsyms()
    near = near_names(name, list(syms)) if syms else []
    return f"; did you mean {', '.join(near)}?" if near else ""


def missing(name: str, need_btf: bool) -> str | None:
    """None when a program can attach to kernel function ``name`` as far as can be told without
    loading; otherwise why not (with near names), to follow "kernel function NAME"."""
    syms = kallsyms()
    if need_btf and btfinfo.has_kernel_btf():
        if btfinfo.kernel_function_id(name) is not None:
            return None
        module = syms.get(name) if syms else None
        if module:
            return None  # a module's function: libbpf looks in the module's BTF at load
        if module == "":
            return (
                f"has no BTF on this kernel: it is in {KALLSYMS} but not a FUNC in {VMLINUX_BTF} "
                "(static or inlined functions have none), so fentry/fexit cannot attach to it; "
                "choose a function that has BTF (`bpftool btf dump file "
                f"{VMLINUX_BTF} | grep \"FUNC 'NAME'\"`)"
            )
        return f"does not exist on this kernel (no FUNC in {VMLINUX_BTF}){_near(name)}"
    if syms is None:
        return None  # nothing to tell from: the load or attach will say
    if name in syms:
        return None
    return f"does not exist on this kernel (not in {KALLSYMS}){_near(name)}"


def kallsyms_has(name: str) -> bool | None:
    """Whether /proc/kallsyms lists a text symbol ``name`` (None: kallsyms unreadable)."""
    try:
        with open("/proc/kallsyms") as f:
            text = f.read()
    except OSError:
        return None
    # "<addr> <type> <name>[\t[module]]"; functions are text symbols (t/T), weak ones w/W.
    return re.search(rf"^\S+ [tTwW] {re.escape(name)}(\t|$)", text, re.M) is not None
