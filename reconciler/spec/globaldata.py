"""``globaldata`` / ``globalData``: initial values of global variables, checked against the
bytecode's BTF before anything is loaded.

bpfman-operator types the values as Go ``[]byte``. bpfman's own samples write them as YAML lists
of byte values (``[0x0D, 0x0C, 0x0B, 0x0A]``), while Kubernetes encodes ``[]byte`` as a base64
string (``DQwLCg==``); both are accepted.
"""

from __future__ import annotations

import base64
import binascii
import difflib
from typing import Any

from reconciler.spec.btf import BtfError, GlobalVariable, global_variables
from reconciler.spec.elf import ElfObject

_LIST_LIMIT = 12


def decode_value(value: list[int] | str) -> bytes | None:
    """A schema-valid value as bytes; None when a string is not valid base64."""
    if isinstance(value, list):
        return bytes(value)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def decode(data: dict[str, Any] | None) -> tuple[tuple[str, bytes], ...]:
    """``{name: value}`` of a checked manifest as ``ProgramSpec.global_data``: sorted by name."""
    out = []
    for name, value in sorted((data or {}).items()):
        decoded = decode_value(value)
        if decoded is None:  # load_manifests reports it; never reached for a checked manifest
            raise ValueError(f"global {name} is not valid base64")
        out.append((name, decoded))
    return tuple(out)


def problems(data: dict[str, Any], obj: ElfObject, written: str) -> list[tuple[str | None, str]]:
    """``(variable or None for the whole field, message)`` for every value that does not fit
    the object's variables."""
    if obj.btf is None:
        return [
            (
                None,
                f"{written} has no BTF, so its global variables cannot be found; compile it with "
                "clang -g (BTF is kept by llvm-strip -g too)",
            )
        ]
    try:
        variables = global_variables(obj.btf, obj.byte_order)
    except BtfError as e:
        return [(None, f"{written}: cannot read its BTF: {e}")]
    out: list[tuple[str | None, str]] = []
    for name, value in data.items():
        decoded = decode_value(value)
        if decoded is None:
            out.append(
                (
                    name,
                    "not valid base64 (a string is read as base64, as Kubernetes encodes []byte); "
                    "or write the bytes as a list, e.g. [0x01, 0x00]",
                )
            )
            continue
        variable = variables.get(name)
        if variable is None:
            out.append((name, _unknown(name, variables, written)))
        elif len(decoded) != variable.size:
            out.append(
                (
                    name,
                    f"{name} is {_bytes(variable.size)} (in {variable.section}) but "
                    f"{_bytes(len(decoded))} {'is' if len(decoded) == 1 else 'are'} given; give "
                    f"exactly {variable.size}, in the program's byte order "
                    f"({obj.byte_order}-endian)",
                )
            )
    return out


def _unknown(name: str, variables: dict[str, GlobalVariable], written: str) -> str:
    if not variables:
        return f"{written} has no global variables that can be set (in .rodata, .data or .bss)"
    close = difflib.get_close_matches(name, list(variables), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = [f"{v.name} ({_bytes(v.size)}, {v.section})" for v in variables.values()]
    shown = ", ".join(listed[:_LIST_LIMIT])
    if len(listed) > _LIST_LIMIT:
        shown += f" and {len(listed) - _LIST_LIMIT} more"
    return f"{name!r} is not a global variable of {written}{hint}; its global variables: {shown}"


def _bytes(n: int) -> str:
    return f"{n} byte" if n == 1 else f"{n} bytes"
