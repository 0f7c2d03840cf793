"""Errors a user can fix, as people read them and as ``--json`` gives them.

A :class:`UserError` is printed as one ``Error:`` message (exit status 1). It also carries
:class:`Diagnostic` values, one per problem, so that ``--json`` keeps stdout a JSON document
when the input is bad, with the file, line, field and message of each problem.

Long lists are capped: people see the first ``MAX_SHOWN`` problems and how many more there
are; JSON carries up to ``MAX_JSON`` and the count of the rest.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from reconciler.values import frozen

MAX_SHOWN = 20
MAX_JSON = 1000
FORMAT_VERSION = "1.0"

# "FILE:LINE: message" as every problem line is written, the message perhaps "FIELD: ...".
_LOCATED = re.compile(r"(?P<file>[^:\n]+):(?P<line>\d+): (?P<rest>.*)", re.S)
_FIELD = re.compile(
    r"(?P<field>[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*|\[[^\]]*\])*): (?P<rest>.*)", re.S
)
# "ADDRESS (FILE:LINE): message", as plan errors about one attachment are written.
_ADDRESSED = re.compile(
    r"(?P<address>[A-Za-z]+/[^\s\[]+\[[^\]]*\]) \((?P<file>[^()\n]+):(?P<line>\d+)\): (?P<rest>.*)",
    re.S,
)


@frozen
class Diagnostic:
    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None
    address: str | None = None
    severity: str = "error"

    @classmethod
    def parse(cls, text: str) -> Diagnostic:
        """A diagnostic from a problem line as bpfman writes them (``FILE:LINE: FIELD: ...`` or
        ``ADDRESS (FILE:LINE): ...``); anything else is a message without a location."""
        m = _ADDRESSED.fullmatch(text)
        if m:
            return cls(m["rest"], m["file"], int(m["line"]), address=m["address"])
        m = _LOCATED.fullmatch(text)
        if not m:
            return cls(text)
        f = _FIELD.fullmatch(m["rest"])
        if f:
            return cls(f["rest"], m["file"], int(m["line"]), f["field"])
        return cls(m["rest"], m["file"], int(m["line"]))

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "field": self.field,
            "address": self.address,
        }


class UserError(Exception):
    """Something the user can fix; printed as one ``Error:`` message, exit 1."""

    def __init__(
        self,
        message: str,
        diagnostics: Sequence[Diagnostic] | None = None,
        *,
        problems: Sequence[str] | None = None,
        json_printed: bool = False,
    ) -> None:
        super().__init__(message)
        self.diagnostics = list(diagnostics) if diagnostics else [Diagnostic(message)]
        # Each problem as one line of text (FILE:LINE: FIELD: message), for people and tools.
        self.problems = list(problems) if problems else [message]
        # The command already wrote its own --json document (e.g. a plan with errors).
        self.json_printed = json_printed


def problem_list(head: str, problems: Sequence[str], tail: str = "nothing was changed") -> str:
    """``HEAD (N problems); TAIL:`` then the problems, one per line, capped at MAX_SHOWN."""
    n = len(problems)
    lines = [f"{head} ({n} problem{'s' if n != 1 else ''}); {tail}:"]
    lines += [f"  {p}" for p in problems[:MAX_SHOWN]]
    if n > MAX_SHOWN:
        lines.append(
            f"  ... and {n - MAX_SHOWN} more problems, not shown (`--json` lists up to {MAX_JSON})"
        )
    return "\n".join(lines)


def problems_error(head: str, problems: Sequence[str]) -> UserError:
    diagnostics = [Diagnostic.parse(p) for p in problems]
    return UserError(problem_list(head, problems), diagnostics, problems=problems)


def error_document(error: UserError, **extra: Any) -> dict[str, Any]:
    """The ``--json`` document of a command that failed before it could produce its own."""
    shown = error.diagnostics[:MAX_JSON]
    if "problems" in extra:
        extra["problems"] = extra["problems"][:MAX_JSON]
    return {
        "format_version": FORMAT_VERSION,
        **extra,
        "error": str(error).split("\n", 1)[0],
        "diagnostics": [d.to_json() for d in shown],
        "diagnostics_not_shown": len(error.diagnostics) - len(shown),
    }
