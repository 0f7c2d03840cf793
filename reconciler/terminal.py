"""Nothing bpfman prints can rewrite the terminal it is printed on.

A plan is reviewed on a terminal before it is approved, and much of what it shows comes from
elsewhere: manifests (validated: control characters are refused), but also ELF symbol names,
kernel object and interface names (an interface name may hold an ESC byte), git's messages and
file names on disk. A control sequence among them could move the cursor, erase lines, or reorder
text with Unicode bidi controls, and so change the plan a reviewer approves.

So the CLI writes through :class:`SafeStream`, one place for everything printed (stdout, stderr,
logs): every control character but newline (C0 including tab and carriage return, DEL, C1),
Unicode bidi controls, zero-width and line/paragraph separators, and lone surrogates (a file name
that is not UTF-8) is shown escaped, ``\\x1b`` or ``\\u202e``. The only escape sequences that
pass are bpfman's own colours, made by :func:`paint`: each carries a secret marker (random per
process, never printed), so a colour code that comes from data, however well formed, is
escaped like any other. On a stream without colour, bpfman's own codes are dropped. The one
other control that reaches a terminal is the progress line's ``\\r`` and erase-line
(``reconciler.progress``), written by :meth:`SafeStream.write_control`, never from data. JSON
output is already safe: ``json.dump`` escapes control characters.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, TextIO

# Marks bpfman's own colour codes: data cannot contain it, for it is never shown.
_MARK = "\x00" + os.urandom(8).hex()
_OURS = re.compile(re.escape(_MARK) + "(\x1b\\[[0-9;]*m)")


def paint(text: str, code: str) -> str:
    """``text`` in the SGR colour ``code`` (e.g. ``"31;1"``: bold red), for a SafeStream."""
    return f"{_MARK}\x1b[{code}m{text}{_MARK}\x1b[0m"


UNSAFE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ud800-\udfff]"
)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a file name that is not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with every character that could control a terminal written as an escape."""
    return UNSAFE.sub(_escaped, text)


class Overlay(Protocol):
    """A line drawn over the terminal's last line (``reconciler.progress``): a SafeStream
    writes everything else inside ``around``, which clears the line first and may draw it again
    once the cursor is back at the start of a line, so no text is ever glued to it."""

    def around(self, stream: SafeStream, text: str) -> AbstractContextManager[None]: ...


class SafeStream:
    """A text stream that escapes what it is given (see the module's docstring); bpfman's own
    colour codes pass when ``colors`` is set."""

    def __init__(self, stream: TextIO, colors: bool = False) -> None:
        self._stream = stream
        self.colors = colors
        self.overlay: Overlay | None = None

    def write(self, text: str) -> int:
        if _MARK in text:
            parts = _OURS.split(text)  # odd indexes are bpfman's own colour codes
            safe = "".join(
                (p if self.colors else "") if i % 2 else escape(p) for i, p in enumerate(parts)
            )
        else:
            safe = escape(text)
        overlay = self.overlay
        with self._unless_gone():
            if overlay is None:
                self._stream.write(safe)
            else:
                with overlay.around(self, safe):
                    self._stream.write(safe)
        return len(text)

    def write_control(self, codes: str) -> None:
        """bpfman's own cursor control (the progress line: ``\\r``, erase-line), written as
        is and flushed. Only for ``reconciler.progress``, which escapes the text it carries."""
        with self._unless_gone():
            self._stream.write(codes)
            self._stream.flush()

    def flush(self) -> None:
        with self._unless_gone():
            self._stream.flush()

    @contextmanager
    def _unless_gone(self) -> Iterator[None]:
        """A reader that went away (``bpfman apply | head``) must not stop the work half-way:
        what it would have read is dropped, and the command carries on to its end."""
        try:
            yield
        except BrokenPipeError:
            self._stream = open(os.devnull, "w")  # noqa: SIM115 - for the rest of the process

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding, ...
        return getattr(self._stream, name)


def install(stdout: TextIO, stderr: TextIO) -> tuple[SafeStream, SafeStream]:
    """Wrap the process's stdout and stderr (colour off until the caller decides)."""
    out = stdout if isinstance(stdout, SafeStream) else SafeStream(stdout)
    err = stderr if isinstance(stderr, SafeStream) else SafeStream(stderr)
    return out, err


def print_json(doc: Any) -> None:
    """A JSON document on stdout (``--json``), indented, in the order built."""
    json.dump(doc, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
