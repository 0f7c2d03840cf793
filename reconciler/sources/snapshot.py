"""A snapshot of a source: the directory or file to read, and the revision it represents.

    with open_source("https://host/ops/ebpf.git", ref="main", path="edge") as snap:
        load_desired(snap.root, host, source_root=snap.base)   # snap.description: plan headers

What SOURCE is (a directory, a manifest file, a git URL, or refused) is decided by
:func:`reconciler.sources.kinds.classify` before anything is created. A git source is cloned into
a private temporary directory (``bpfman-src-*``) that is removed on every way out: an error, an
interrupt, or the end of the ``with`` block.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.files import kind_of
from reconciler.sources.gitcmd import GitFailed, run_git
from reconciler.sources.kinds import MANIFEST_SUFFIXES, Kind, SourceError, SourceRef, classify
from reconciler.sources.redact import shown
from reconciler.spec.paths import is_within, real


@dataclass
class Snapshot:
    root: Path  # the directory or manifest file to read (after --path)
    description: str  # what the user named, credentials redacted: plan headers, JSON, plan files
    revision: str | None = None  # git commit, when the source is a repository
    _tmp: str | None = field(default=None, repr=False)
    # The whole source (the directory, the manifest file's directory, or the checkout before
    # --path): bytecode must stay inside it.
    base: Path | None = None

    def close(self) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(
    source: str | SourceRef | None,
    ref: str | None = None,
    path: str | None = None,
    timeout: float | None = None,
) -> Snapshot:
    """Open SOURCE (default: the current directory; or a SourceRef already classified).
    ``ref`` applies to git URLs; ``path`` narrows a git repository or a directory to a
    subdirectory or one manifest file in it; ``timeout`` bounds each git command of a clone."""
    src = source if isinstance(source, SourceRef) else classify(source)
    if src.kind is Kind.PLAN:
        raise SourceError(
            f"{src.shown} is a plan saved by `bpfman plan --out`, not manifests; carry it out "
            f"with `bpfman apply {src.shown}`, or give the manifests it was made from"
        )
    if src.kind is Kind.GIT:
        return _clone(src, ref, path, timeout)
    assert src.path is not None
    if ref:
        raise SourceError(
            f"--ref applies to git repository URLs, but {src.shown!r} is a {src.kind.value}"
        )
    if src.kind is Kind.MANIFEST:
        if path:
            raise SourceError(
                f"--path chooses what to read inside a directory or a git repository, but "
                f"{src.shown!r} is a single manifest file: give it without --path"
            )
        file = real(src.path)
        return Snapshot(
            root=file,
            description=src.shown,
            revision=_dir_revision(file.parent, file.name),
            base=file.parent,
        )
    base = real(src.path)
    root = _inside(base, path, "source directory")
    rev = _dir_revision(root) if root.is_dir() else _dir_revision(root.parent, root.name)
    return Snapshot(root=root, description=src.shown, revision=rev, base=base)


def _inside(base: Path, path: str | None, what: str) -> Path:
    """``--path`` resolved inside ``base``: a directory, or one manifest file."""
    if not path:
        return base
    target = real(base / path)
    if not is_within(target, base):
        raise SourceError(
            f"--path {shown(path)!r} leaves the {what}; give a directory or manifest file inside it"
        )
    try:
        mode = os.stat(target).st_mode
    except OSError:
        raise SourceError(f"--path {shown(path)!r} does not exist in the {what}") from None
    if stat.S_ISDIR(mode):
        return target
    if stat.S_ISREG(mode) and target.name.endswith(MANIFEST_SUFFIXES):
        return target
    what_it_is = kind_of(mode) if not stat.S_ISREG(mode) else "a file that is not .yaml or .yml"
    raise SourceError(
        f"--path {shown(path)!r} in the {what} is {what_it_is}; give a directory or a manifest "
        "file (.yaml or .yml)"
    )


def _dir_revision(directory: Path, scope: str = ".") -> str | None:
    """The commit of a checkout ``directory`` lives in, marked ``+dirty`` when the work tree
    differs under ``scope`` (the directory, or one file in it)."""
    if not any((p / ".git").exists() for p in (directory, *directory.parents)):
        return None
    try:
        rev = run_git(["rev-parse", "--verify", "--quiet", "HEAD"], cwd=directory).strip()
        status = run_git(["status", "--porcelain", "--", scope], cwd=directory)
    except GitFailed:  # not a checkout git accepts, or an empty repository: no revision
        return None
    return f"{rev}+dirty" if status.strip() else rev


CLONE_PREFIX = "bpfman-src-"


def _clone(
    src: SourceRef, ref: str | None, path: str | None, timeout: float | None = None
) -> Snapshot:
    remove_stale_clones()
    tmp: str | None = None
    try:
        tmp = tempfile.mkdtemp(prefix=f"{CLONE_PREFIX}{os.getpid()}-")
        try:
            run_git(["clone", "--no-checkout", "--quiet", "--", src.given, tmp], timeout=timeout)
        except GitFailed as e:
            raise SourceError(
                f"cannot clone {src.shown}: {e.reason}; check the URL and your access to it"
            ) from None
        commit = _resolve(Path(tmp), ref, src)
        try:
            run_git(
                ["checkout", "--quiet", "--force", "--detach", commit],
                cwd=Path(tmp),
                timeout=timeout,
            )
        except GitFailed as e:
            raise SourceError(f"cannot check out {commit} of {src.shown}: {e.reason}") from None
        root = _inside(Path(tmp), path, f"repository {src.shown}")
        desc = f"{src.shown}@{shown(ref)}" if ref else src.shown
        snap = Snapshot(root=root, description=desc, revision=commit, _tmp=tmp, base=Path(tmp))
        tmp = None  # the snapshot owns it now
        return snap
    finally:  # every other way out (an error, KeyboardInterrupt) removes the clone
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_clones(tmpdir: str | None = None) -> list[str]:
    """Remove the clones of bpfman processes that are gone: a clone is named
    ``bpfman-src-<pid>-…`` and removed on every way out but SIGKILL (or a power cut), so the next
    clone clears what such an end left. Only directories of this user whose process no longer
    exists are touched. Returns the paths removed."""
    base = tmpdir or tempfile.gettempdir()
    removed: list[str] = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    for entry in entries:
        pid_text = entry.name[len(CLONE_PREFIX) :].split("-", 1)[0]
        if not entry.name.startswith(CLONE_PREFIX) or not pid_text.isdigit():
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or _alive(int(pid_text)):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or not a pid: leave its directory alone
    return True


def _resolve(clone: Path, ref: str | None, src: SourceRef) -> str:
    """The commit ``ref`` names in the fresh clone (default: the remote's HEAD). A branch that
    is not the default one exists only as ``origin/BRANCH``."""
    candidates = [ref, f"origin/{ref}"] if ref else ["HEAD"]
    for name in candidates:
        try:
            out = run_git(
                ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}"],
                cwd=clone,
            )
            return out.strip()
        except GitFailed:
            continue
    if ref is None:
        raise SourceError(f"{src.shown} has no commit at HEAD (an empty repository?)")
    raise SourceError(f"ref {shown(ref)!r} not found in {src.shown}: give a branch, tag or commit")
