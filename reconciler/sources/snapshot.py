from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


class SourceError(Exception):
    """The source cannot be read: a missing directory, an unreachable repository, a bad ref."""


@dataclass
class Snapshot:
    root: Path  # the directory whose manifests are read (after --path)
    description: str  # what the user named, for plan headers
    revision: str | None = None  # git commit, when the source is a repository
    _tmp: str | None = field(default=None, repr=False)
    # The whole source (the directory or checkout before --path): bytecode must stay inside it.
    base: Path | None = None

    def close(self) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# URLs gitpython can clone: scheme://..., or scp-like user@host:path.
_URL = re.compile(r"^([a-z][a-z0-9+.-]*://|[\w.-]+@[\w.-]+:)", re.IGNORECASE)


def is_url(source: str) -> bool:
    return bool(_URL.match(source))


def _subdir(base: Path, path: str | None, what: str) -> Path:
    if not path:
        return base
    target = (base / path).resolve()
    if target != base.resolve() and base.resolve() not in target.parents:
        raise SourceError(f"--path {path!r} leaves the {what}; give a directory inside it")
    if not target.is_dir():
        raise SourceError(f"--path {path!r} is not a directory in the {what}")
    return target


def open_source(source: str | None, ref: str | None = None, path: str | None = None) -> Snapshot:
    """Open SOURCE (default: the current directory). ``ref`` and ``path`` apply to git URLs;
    ``path`` also narrows a directory source."""
    source = source or "."
    if is_url(source):
        return _clone(source, ref, path)
    if ref:
        raise SourceError(f"--ref applies to git repository URLs, but {source!r} is a directory")
    base = Path(source)
    if not base.is_dir():
        raise SourceError(
            f"source {source!r} is not a directory (or a git URL such as file:///repo)"
        )
    root = _subdir(base.resolve(), path, "source directory")
    return Snapshot(
        root=root, description=source, revision=_dir_revision(root), base=base.resolve()
    )


def _dir_revision(root: Path) -> str | None:
    """The commit of a checkout the directory lives in, marked when the work tree differs."""
    if not any((p / ".git").exists() for p in (root, *root.parents)):
        return None
    try:
        import git  # gitpython is slow to import: only when the directory is in a checkout

        repo = git.Repo(root, search_parent_directories=True)
        rev = repo.head.commit.hexsha
        return f"{rev}+dirty" if repo.is_dirty(untracked_files=True, path=str(root)) else rev
    except Exception:  # not a checkout, or an empty repository: a directory has no revision
        return None


def _clone(url: str, ref: str | None, path: str | None) -> Snapshot:
    import git

    tmp = tempfile.mkdtemp(prefix="bpfman-src-")
    try:
        repo = git.Repo.clone_from(url, tmp, no_checkout=True)
        try:
            commit = repo.commit(ref or "HEAD")
        except Exception:
            try:  # a branch that is not the default one exists only as a remote ref
                commit = repo.commit(f"origin/{ref}")
            except Exception:
                raise SourceError(
                    f"ref {ref!r} not found in {url}: give a branch, tag or commit"
                ) from None
        repo.git.checkout(commit.hexsha, force=True)
        root = _subdir(Path(tmp), path, f"repository {url}")
        desc = f"{url}@{ref}" if ref else url
        return Snapshot(
            root=root, description=desc, revision=commit.hexsha, _tmp=tmp, base=Path(tmp)
        )
    except SourceError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except git.GitCommandError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        detail = (e.stderr or "").strip().splitlines()
        raise SourceError(
            f"cannot clone {url}: {detail[-1] if detail else e}; check the URL and access"
        ) from None
