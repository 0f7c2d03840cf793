"""Every git subprocess bpfman runs goes through :func:`run_git`.

git is run directly, not through GitPython: GitPython rewrites a clone URL before git sees it
(``polish_url`` expands ``$VARIABLES`` and a leading ``~``, so ``https://host/$TOKEN`` would send
the token), wraps git's stderr in its own quoting, and logs command lines. Here the URL reaches
git exactly as classified (``kinds.classify`` has refused unsafe forms already), after ``--``.

Defense in depth, for every run:

- ``GIT_ALLOW_PROTOCOL=file:git:http:https:ssh`` (git then refuses every other transport, at
  every level, submodules and redirects included) and ``-c protocol.ext.allow=never``;
- nothing can wait for a person: ``GIT_TERMINAL_PROMPT=0``, no askpass program
  (``GIT_ASKPASS``/``SSH_ASKPASS`` empty), stdin is ``/dev/null``, and ssh runs with
  ``BatchMode=yes`` unless ``GIT_SSH_COMMAND``/``GIT_SSH`` choose another command. Credentials
  come from the URL, a credential helper or an ssh agent/key, never from a prompt;
- the caller's ``GIT_DIR``, ``GIT_WORK_TREE`` and similar never redirect our commands, and
  ``core.fsmonitor`` (a configured command) is off;
- messages are in English (``LC_ALL=C``) so that git's own reason can be picked out of its
  stderr (:func:`git_reason`), and only the tail of stderr is kept (a remote can send a lot).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from reconciler.sources.redact import shown

log = logging.getLogger(__name__)

ALLOWED_PROTOCOLS = "file:git:http:https:ssh"
_CONFIG = ("protocol.ext.allow=never", "protocol.fd.allow=never", "core.fsmonitor=false")
# Variables that would point our commands at another repository, index or object store.
_LOCATION_VARS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_SHALLOW_FILE",
    "GIT_GRAFT_FILE",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_PREFIX",
)
STDERR_TAIL = 64 * 1024


class GitFailed(Exception):
    """A git command failed. ``reason`` is git's own message, redacted and safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def git_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every git subprocess: ``base`` (default ``os.environ``) restricted."""
    env = {k: v for k, v in (os.environ if base is None else base).items()}
    for name in _LOCATION_VARS:
        env.pop(name, None)
    env.update(
        GIT_ALLOW_PROTOCOL=ALLOWED_PROTOCOLS,
        GIT_TERMINAL_PROMPT="0",
        GIT_ASKPASS="",
        SSH_ASKPASS="",
        SSH_ASKPASS_REQUIRE="never",
        GCM_INTERACTIVE="never",
        GIT_OPTIONAL_LOCKS="0",  # `git status` on a user's checkout must not write its index
        LC_ALL="C",
        LANGUAGE="C",
    )
    if "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    return env


DEFAULT_TIMEOUT = 300.0  # seconds a git command may take (--git-timeout)


def run_git(
    args: Sequence[str],
    cwd: Path | None = None,
    timeout: float | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> str:
    """Run ``git ARGS`` (in ``cwd``) as described above; its stdout, or GitFailed with git's
    reason. git not installed is a GitFailed too.

    ``timeout`` (default :data:`DEFAULT_TIMEOUT`) bounds the whole command: a remote that
    accepts the connection and then sends nothing would otherwise hold the command forever. git
    runs in a session of its own, so that on expiry its helpers (``git-remote-http``, ``ssh``)
    are killed with it, and is killed by the kernel if bpfman dies first.

    ``extra_env`` is added to the safe environment (after it, so that e.g. a private
    ``GIT_INDEX_FILE`` survives): credentials travel there, never on a command line. The log
    line shows the command, never the environment."""
    limit = DEFAULT_TIMEOUT if timeout is None else timeout
    cmd = ["git"]
    for setting in _CONFIG:
        cmd += ["-c", setting]
    cmd += list(args)
    log.debug("running %s", shown(" ".join(cmd)))
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as out:
        # A SIGTERM or Ctrl-C that lands during the fork would run its handler inside an at-fork
        # hook (logging's), where the exception is printed and dropped: bpfman would then wait
        # for git as if nothing had happened. Hold them until git's process group exists; they
        # are raised below, where git is killed on the way out.
        unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            p = subprocess.Popen(
                cmd,
                cwd=cwd,
                env={**git_env(), **(extra_env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=functools.partial(_child_setup, os.getpid(), unblocked),
            )
        except FileNotFoundError as e:
            signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
            if cwd is not None and e.filename != "git":
                raise GitFailed(f"{cwd}: {e.strerror}") from None
            raise GitFailed("git is not installed (install git to read git sources)") from None
        except OSError as e:  # cwd is not a directory, or git cannot be run
            signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
            raise GitFailed(f"cannot run git: {e.strerror}") from None
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
            raise
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)  # a pending stop lands here
            returncode = p.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            _kill_group(p)
            raise GitFailed(
                f"git {command_name(args)} did not finish within {limit:g} s (the remote may be "
                "stalled); raise --git-timeout if the repository is just slow to fetch"
            ) from None
        except BaseException:  # Ctrl-C, SIGTERM: git must not outlive us (nor write the clone)
            _kill_group(p)
            raise
        err.seek(max(0, os.fstat(err.fileno()).st_size - STDERR_TAIL))
        stderr = err.read().decode(errors="replace")
        out.seek(0)
        stdout = out.read().decode(errors="replace")
    if returncode != 0:
        raise GitFailed(
            git_reason(stderr) or f"git {command_name(args)} exited with status {returncode}"
        )
    return stdout


def command_name(args: Sequence[str]) -> str:
    """The git command among ``args`` (past ``-c NAME=VALUE`` and other options), for messages."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "-c":
            skip = True
        elif not arg.startswith("-"):
            return arg
    return "command"


_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def _child_setup(parent: int, mask: set[int | signal.Signals]) -> None:
    """In the child, before exec: the parent's signal mask as it was before run_git held the
    stop signals (git must see a SIGTERM), and SIGKILL when bpfman dies, even by SIGKILL, so
    that git never outlives it (prctl PR_SET_PDEATHSIG; Linux). A parent that died between the
    fork and the prctl sends no signal: then the child has been reparented already, and exits
    at once."""
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


_PR_SET_PDEATHSIG = 1


def _kill_group(p: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGKILL)
    p.wait()


# Lines that carry git's reason: its message prefixes, and what ssh, curl and the daemon say
# without one (the line after "fatal: unable to connect to host:" is "host[0: ip]: errno=...").
_REASON = re.compile(
    r"^(fatal|error|ssh|remote|warning):"
    r"|could not resolve|connection refused|connection timed out|no route to host"
    r"|not found|permission denied|host key verification failed|could not read"
    r"|access denied|not exported|authentication failed|errno=",
    re.IGNORECASE,
)
_MAX_LINES = 4
_MAX_LINE = 300


def git_reason(stderr: str) -> str:
    """git's own reason from its stderr: the lines that say what went wrong (``fatal: …``,
    ``error: …``, ``ssh: …``, ``Could not resolve host``, ``Connection refused``, …), without
    progress and advice, at most a few, joined with ``; ``; credentials redacted and control
    characters escaped. Also accepts GitPython's wrapping (``\\n  stderr: '…'``)."""
    text = stderr.strip()
    wrapped = re.fullmatch(r"(?s)stderr: '(.*)'", text)
    if wrapped:
        text = wrapped.group(1)
    lines = [line.strip() for line in re.split(r"[\r\n]+", text)]
    lines = [
        line
        for line in lines
        if line.strip("'\" ") and not line.startswith("Cloning into")  # a stray quote says nothing
    ]
    picked = [line for line in lines if _REASON.search(line)] or lines[-1:]
    seen: list[str] = []
    for line in picked:
        if line not in seen:
            seen.append(line)
    reason = "; ".join(
        shown(line.rstrip(".") if len(line) <= _MAX_LINE else line[:_MAX_LINE] + "…")
        for line in seen[:_MAX_LINES]
    )
    return reason
