"""JSON Schema patterns with ECMA-262's meaning, apart from jsonschema (which the host's label
checks do not need to import)."""

from __future__ import annotations

import functools
import re


@functools.cache
def ecma_regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` with ECMA-262's meaning of ``$`` (the end of the input, never before a final
    newline): each ``$`` outside a character class and not escaped becomes ``\\Z``."""
    out = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]":  # a literal ] first in a class
                out.append("[]")
                i += 2
                continue
        elif char == "$":
            char = r"\Z"
        out.append(char)
        i += 1
    return re.compile("".join(out))


def full_match(pattern: str, value: str) -> bool:
    """Whether ``value`` matches the JSON Schema ``pattern`` (as jsonschema's ``pattern``
    keyword would, with ECMA-262's ``$``)."""
    return ecma_regex(pattern).search(value) is not None


__all__ = ["ecma_regex", "full_match"]
