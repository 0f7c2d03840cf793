"""What a SOURCE argument is: decided here, once, before anything is created or run.

    classify("manifests/")               # a directory of manifests
    classify("fw.yaml")                  # one manifest file
    classify("plan.out")                 # a plan saved by `bpfman plan --out` (apply only)
    classify("https://host/repo.git")    # a git repository
    classify("ext::sh -c reboot")        # SourceError: a transport that runs commands

The rules, in order (the first that matches decides):

1. a control character anywhere, or a leading ``-`` (git would read it as an option): refused;
2. ``SCHEME://…``: a git URL if SCHEME is file, https, http, ssh or git; any other scheme
   (``ext://``, ``ftp://``, ``git+ssh://``…) is refused, and so is a host starting with ``-``;
3. ``TRANSPORT::ADDRESS`` (``ext::``, ``fd::``, any remote helper): refused, since ``ext::`` runs
   a command and the others reach past the allowed protocols;
4. ``USER@HOST:PATH`` (scp-like, no ``/`` before the ``:``): a git URL over ssh;
5. anything else is a local path, looked at with ``stat`` (never opened unless it is a regular
   file): a directory; a regular file holding a saved plan (a JSON object whose ``format`` is
   ``bpfman-plan/…``, as ``plan --out`` writes it); a ``.yaml``/``.yml`` file, one manifest
   file; anything else (another file, a FIFO, a device, a socket) is refused at once.

A local path that happens to look like rule 2-4 is written ``./like::this``.
"""

from __future__ import annotations

import enum
import os
import re
import stat
from pathlib import Path

from reconciler.files import NotReadable, kind_of, open_regular
from reconciler.sources.redact import shown
from reconciler.values import frozen


class SourceError(Exception):
    """The source cannot be read: a missing directory, an unreachable repository, a bad ref, a
    refused transport. The message is safe to show (credentials redacted)."""


GIT_SCHEMES = ("file", "https", "http", "ssh", "git")
ALLOWED_FORMS = "file://, https://, http://, ssh://, git:// or user@host:path"
MANIFEST_SUFFIXES = (".yaml", ".yml")

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$", re.DOTALL)
_TRANSPORT = re.compile(r"^(?P<transport>[A-Za-z0-9][A-Za-z0-9+.-]*)::")
# user@host:path, where neither user nor host holds '/', ':' or '@' (host may be [v6]).
_SCP = re.compile(
    r"^(?P<user>[^/:@\s]+)@(?P<host>\[[0-9A-Fa-f:.]+\]|[^/:@\s\[\]]+):(?P<path>.+)$", re.DOTALL
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_PLAN_HEAD = re.compile(rb'^\s*\{\s*"format"\s*:\s*"bpfman-plan/')


class Kind(enum.Enum):
    DIRECTORY = "directory"
    MANIFEST = "manifest file"
    PLAN = "saved plan"
    GIT = "git repository"


@frozen
class SourceRef:
    """A classified SOURCE. ``given`` is exactly what the user wrote: for a git URL it is used
    only to talk to git. ``shown`` is what every message and record uses instead."""

    kind: Kind
    given: str
    shown: str
    path: Path | None = None  # the local path (DIRECTORY, MANIFEST, PLAN)


def _refuse(source: str, why: str) -> SourceError:
    return SourceError(
        f"source {shown(source)!r} {why}; a source is a directory, a manifest file (.yaml or "
        f".yml) or a git repository URL: {ALLOWED_FORMS}"
    )


def classify(source: str | None) -> SourceRef:
    """What ``source`` names (default: the current directory), or SourceError saying why it is
    refused. Nothing is created, run or opened, except the head of a regular file."""
    source = source or "."
    if _CONTROL.search(source):
        raise _refuse(source, "contains a control character")
    if source.startswith("-"):
        raise _refuse(
            source,
            f"starts with '-', which git would take as an option (a local path: ./{shown(source)})",
        )
    m = _SCHEME.match(source)
    if m:
        return _url(source, m.group("scheme"), m.group("rest"))
    m = _TRANSPORT.match(source)
    if m:
        raise _refused_transport(source, m.group("transport"))
    m = _SCP.match(source)
    if m:
        if m.group("host").startswith("-") or m.group("user").startswith("-"):
            raise _refuse(source, "names a host or user starting with '-'")
        return SourceRef(Kind.GIT, source, shown(source))
    return _local(source)


def _refused_transport(source: str, transport: str) -> SourceError:
    return _refuse(
        source,
        f"uses git's {transport}:: transport form (transport::address), which bpfman refuses "
        "(ext:: runs a command, fd:: reads a file descriptor)",
    )


def _url(source: str, scheme: str, rest: str) -> SourceRef:
    if scheme.lower() not in GIT_SCHEMES:
        raise _refuse(source, f"has the URL scheme {shown(scheme)}://, which bpfman does not read")
    authority = rest.split("/", 1)[0]
    host = authority.rpartition("@")[2]
    if host.startswith("-"):
        raise _refuse(source, "names a host starting with '-'")
    if scheme.lower() != "file" and not host:
        raise _refuse(source, "names no host")
    given = scheme.lower() + "://" + rest  # git matches schemes in lower case
    return SourceRef(Kind.GIT, given, shown(source))


def _local(source: str) -> SourceRef:
    path = Path(source)
    try:
        st = os.stat(path)  # follows symlinks; never opens (a FIFO would block, a device act)
    except FileNotFoundError:
        raise SourceError(
            f"source {shown(source)!r} is not a directory or a file: no such file or directory "
            f"(a git repository is named by a URL: {ALLOWED_FORMS})"
        ) from None
    except OSError as e:
        raise SourceError(f"source {shown(source)!r} cannot be read: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        return SourceRef(Kind.DIRECTORY, source, shown(source), path)
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(
            f"source {shown(source)!r} is {kind_of(st.st_mode)}, not a directory or a manifest "
            "file; bpfman reads only directories and regular files"
        )
    if _is_saved_plan(path, source):
        return SourceRef(Kind.PLAN, source, shown(source), path)
    if path.name.endswith(MANIFEST_SUFFIXES):
        return SourceRef(Kind.MANIFEST, source, shown(source), path)
    raise SourceError(
        f"source {shown(source)!r} is a file but neither a manifest (a .yaml or .yml file) nor a "
        "plan saved by `bpfman plan --out`; rename a manifest to .yaml, or give its directory"
    )


def _is_saved_plan(path: Path, source: str) -> bool:
    """Whether the regular file starts as ``plan --out`` writes a plan: ``{"format":
    "bpfman-plan/…``. Only the head is read, through the non-blocking reader."""
    try:
        with open_regular(path) as f:
            head = f.read(256)
    except (OSError, NotReadable) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SourceError(f"source {shown(source)!r} cannot be read: {reason}") from None
    return bool(_PLAN_HEAD.match(head.removeprefix(b"\xef\xbb\xbf")))
