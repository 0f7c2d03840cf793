"""What one invocation's arguments name, as the commands and the watcher use it: the host, the
engine context (state read and repaired), the apply lock, recovery from a killed apply, and
the loading errors as a user reads them.

It sits below ``commands``, ``listing`` and ``watch`` (which all build on it) and above the
engine, so that none of them imports another to share these (``reconciler.cli`` only parses).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reconciler import hostpaths
from reconciler.engine import Context, make_context
from reconciler.errors import UserError, problems_error
from reconciler.hostfacts import DEFAULT_CONFIG_FILE, DEFAULT_LABELS_FILE, Host, parse_label
from reconciler.lock import ApplyLock, LockTimeout, LockUnusable
from reconciler.spec.host import HostError
from reconciler.spec.model import ManifestError
from reconciler.state import StateError


def paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The bpffs root and the state dir, as given (unchecked)."""
    return Path(args.bpffs_root), Path(args.state_dir)


def manifest_error(e: ManifestError) -> UserError:
    head = "the manifests are invalid" if len(e.problems) > 1 else "a manifest is invalid"
    return problems_error(head, e.problems)


def host_error(e: HostError) -> UserError:
    """A host file at fault is headed as such; a host fact that cannot be learned is one line."""
    if e.source:
        return problems_error(f"{e.source} is invalid", e.problems)
    return UserError(str(e))


def host(args: argparse.Namespace) -> Host:
    """This host, with the labels file, ``--label`` flags and config file the arguments name."""
    extra = {}
    for text in args.label:
        try:
            key, value = parse_label(text)
        except ValueError as e:
            raise UserError(f"--label: {e}") from None
        extra[key] = value
    labels_file = Path(args.labels_file) if args.labels_file else DEFAULT_LABELS_FILE
    config = Path(args.config) if args.config else DEFAULT_CONFIG_FILE
    return Host(
        labels_file=labels_file,
        extra_labels=extra,
        config_file=config,
        image_cache=Path(args.state_dir) / "images",
    )


def context(args: argparse.Namespace) -> Context:
    """The engine's context for the paths given, its state read; corrupt state files are moved
    aside when no apply holds the lock, and what is wrong with them is said on stderr."""
    busy = False
    try:
        ctx = make_context(args.bpffs_root, args.state_dir)  # as given: checked there
        ctx.store.load()
        if ctx.store.problems:
            # Move corrupt files aside now if no apply holds the lock (never wait: plan and
            # list read lock-free); otherwise the apply holding it does so itself.
            try:
                with ApplyLock(ctx.store.dir, timeout=0):
                    ctx.store.load(repair=True)
            except LockUnusable:
                raise
            except LockTimeout:
                busy = True
    except (hostpaths.HostPathError, StateError, LockUnusable) as e:
        raise UserError(str(e)) from None
    if busy and any(not p.corrupt for p in ctx.store.problems):
        print(
            "Note: an apply is in progress; its current step is shown as not yet recorded",
            file=sys.stderr,
        )
    for problem in ctx.store.problems:
        if busy and not problem.corrupt:
            continue
        what = "Warning: the state is corrupt" if problem.corrupt else "Warning"
        rebuilt = (
            "; rebuilt from the pins: what they hold without a record is planned as a "
            "replacement, so the next apply re-records it"
            if problem.corrupt
            else ""
        )
        print(f"{what}: {problem}{rebuilt}", file=sys.stderr)
    return ctx


def state_dir(args: argparse.Namespace) -> Path:
    """The state dir given, checked (reconciler/hostpaths.py)."""
    try:
        return hostpaths.check_state_dir(args.state_dir)
    except hostpaths.HostPathError as e:
        raise UserError(str(e)) from None


@contextmanager
def locked(args: argparse.Namespace) -> Iterator[None]:
    """The state lock, for a whole apply or destroy: taken before the state is read or the
    kernel observed, held through planning, the prompt and execution, so that a run that had to
    wait plans against what the one before it did (never a plan made before it waited)."""
    try:  # the paths are checked before the lock makes the state dir (reconciler/hostpaths.py)
        hostpaths.check_bpffs_root(args.bpffs_root)
        checked = hostpaths.check_state_dir(args.state_dir)
    except hostpaths.HostPathError as e:
        raise UserError(str(e)) from None
    lock = ApplyLock(checked, args.lock_timeout, on_wait=_say_waiting)
    try:
        lock.acquire()
    except LockTimeout as e:
        raise UserError(str(e)) from None
    try:
        yield
    finally:
        lock.release()


def _say_waiting(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def recover(ctx: Context) -> None:
    """Finish or undo what a killed apply left in the kernel (staging, dispatcher revisions),
    under the lock and before observing: the plan then starts from what really runs (a swap
    that happened is completed, never undone and redone)."""
    if ctx.kernel.staging_leftovers():
        for what in ctx.kernel.discard_staging():
            print(what, file=sys.stderr)
