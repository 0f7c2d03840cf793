"""BTF lookups through libbpf: the global variables of an object's data sections (to set their
initial values before load) and the functions of the running kernel (for fentry/fexit).

A global variable lives in a data section (.rodata, .data, .bss, or a custom .data.NAME /
.rodata.NAME); libbpf turns each section into an internal array map of one element whose value
is the section, and BTF's DATASEC type lists the section's variables with their offsets.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterable
from functools import cache

from reconciler.kernel.sys import libbpf
from reconciler.kernel.sys.bpfobject import LibbpfObject, MapDecl
from reconciler.kernel.types import KernelError
from reconciler.values import frozen

_lib = libbpf.lib
# A loaded program's or module's BTF, by BTF object id (libbpf returns a pointer).
_lib.btf__load_from_kernel_by_id.restype = ctypes.c_void_p
_lib.btf__load_from_kernel_by_id.argtypes = [ctypes.c_uint32]

KIND_FUNC = 12
KIND_DATASEC = 15
_TYPE_SIZE = 12  # struct btf_type: name_off, info, size/type
_SECINFO_SIZE = 12  # struct btf_var_secinfo: type, offset, size


@frozen
class GlobalVar:
    name: str
    section: str  # ".rodata", ".data", ".bss", ".data.custom", ...
    offset: int
    size: int
    map: MapDecl


def _section_of(map_name: str) -> str:
    # libbpf names the map of a standard section "<object name>.rodata" (the object name has
    # no dot) and the map of a custom section by the section's own name (".data.custom").
    return map_name if map_name.startswith(".") else map_name[map_name.index(".") :]


def _type(btf: int, type_id: int) -> tuple[str, int, int, int]:
    """(name, kind, vlen, address) of a BTF type."""
    ptr = _lib.btf__type_by_id(btf, type_id)
    name_off, info = struct.unpack("=II", ctypes.string_at(ptr, 8))
    name = (_lib.btf__name_by_offset(btf, name_off) or b"").decode()
    return name, (info >> 24) & 0x1F, info & 0xFFFF, int(ptr)


def global_variables(obj: LibbpfObject) -> dict[str, GlobalVar]:
    """Every variable of the object's data sections (.kconfig excluded: the kernel fills it)."""
    btf = obj.btf()
    found: dict[str, GlobalVar] = {}
    if btf is None:
        return found
    for decl in obj.declared_maps():
        if not decl.internal or "." not in decl.name:
            continue
        section = _section_of(decl.name)
        if section == ".kconfig":
            continue
        sec_id = _lib.btf__find_by_name_kind(btf, section.encode(), KIND_DATASEC)
        if sec_id < 0:
            continue
        _, _, vlen, addr = _type(btf, sec_id)
        # libbpf has already fixed up the DATASEC's offsets at open (clang leaves them 0).
        raw = ctypes.string_at(addr + _TYPE_SIZE, vlen * _SECINFO_SIZE)
        for i in range(vlen):
            var_id, offset, size = struct.unpack_from("=III", raw, i * _SECINFO_SIZE)
            name = _type(btf, var_id)[0]
            found.setdefault(name, GlobalVar(name, section, offset, size, decl))
    return found


def set_global_data(obj: LibbpfObject, values: Iterable[tuple[str, bytes]]) -> None:
    """Write each (variable, bytes) into its section's initial value, before load."""
    values = list(values)
    if not values:
        return
    variables = global_variables(obj)
    pending: dict[str, tuple[MapDecl, bytearray]] = {}
    for name, data in values:
        var = variables.get(name)
        if var is None:
            known = ", ".join(sorted(variables)) or "none"
            raise KernelError(
                f"global variable {name} not found in {obj.path} (its global variables: "
                f"{known}); fix the variable name or rebuild the object"
            )
        if len(data) != var.size:
            raise KernelError(
                f"global variable {name} in {obj.path} is {var.size} bytes, got {len(data)}; "
                f"give it a value of exactly {var.size} bytes"
            )
        if var.section not in pending:
            pending[var.section] = (var.map, bytearray(obj.initial_value(var.map)))
        image = pending[var.section][1]
        image[var.offset : var.offset + var.size] = data
    for decl, image in pending.values():
        obj.set_initial_value(decl, bytes(image))


@cache
def _vmlinux() -> int | None:
    """The running kernel's BTF (parsed once per process, never freed), None without it."""
    btf = _lib.btf__load_vmlinux_btf()
    return int(btf) if btf else None


def kernel_function_id(name: str) -> int | None:
    """BTF type id of kernel function ``name`` in vmlinux BTF (None: no BTF or no function)."""
    btf = _vmlinux()
    if btf is None:
        return None
    type_id = _lib.btf__find_by_name_kind(btf, name.encode(), KIND_FUNC)
    return type_id if type_id > 0 else None


def has_kernel_btf() -> bool:
    return _vmlinux() is not None


def func_names(btf_obj_id: int) -> dict[int, str]:
    """BTF type id -> name of every FUNC in the kernel BTF object ``btf_obj_id``."""
    handle = _lib.btf__load_from_kernel_by_id(btf_obj_id)
    if not handle:
        return {}
    try:
        out = {}
        for type_id in range(1, _lib.btf__type_cnt(handle)):
            name, kind, _vlen, _ptr = _type(handle, type_id)
            if kind == KIND_FUNC:
                out[type_id] = name
        return out
    finally:
        _lib.btf__free(handle)
