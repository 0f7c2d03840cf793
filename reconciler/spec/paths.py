"""Where a source's manifests may make bpfman read: containment of manifest files and bytecode.

A source (a directory or a git checkout) is untrusted input: a manifest must not make bpfman read
``/etc/shadow`` as "bytecode", nor a symlink in the repository lead the loader out of it. The
rules, checked on resolved paths (every symlink followed, then containment checked):

- a manifest file must resolve inside the source root (a symlinked file or directory leading
  outside is refused; directory symlinks are not walked at all);
- a relative bytecode path resolves against the manifest's directory and must stay inside the
  source root;
- an absolute bytecode path (or a relative one that leaves the root) is accepted only under a
  directory the host allows (``bytecode_dirs`` in the host config); by default none is.

    policy = BytecodePolicy(Path("/srv/repo"), (Path("/opt/bpf"),))
    problem = policy.check(Path("/srv/repo/x.yaml"), "../obj/fw.o")   # None: allowed
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from reconciler.values import frozen

CONFIG_HINT = "bytecode_dirs in the host config (/etc/bpfman/config.yaml, or --config)"


_resolved_dirs: dict[str, str] | None = None  # set inside ``resolving()``


@contextmanager
def resolving() -> Iterator[None]:
    """Inside the block, ``real`` resolves each directory once: a thousand manifests in one
    directory cost one walk of its path, not a thousand. The memo lives only as long as the
    block (one load of a source), so a directory replaced by a symlink later is seen then."""
    global _resolved_dirs
    outer = _resolved_dirs
    _resolved_dirs = {} if outer is None else outer
    try:
        yield
    finally:
        _resolved_dirs = outer


def real(path: Path | str) -> Path:
    """``path`` absolute, with every symlink resolved (missing tails kept as written)."""
    memo = _resolved_dirs
    p = os.fspath(path)
    if memo is None:
        return Path(os.path.realpath(p))
    if not os.path.isabs(p):
        p = os.path.join(os.getcwd(), p)
    head, tail = os.path.split(p)
    if tail in ("", ".", ".."):  # never normalised by hand: ".." after a symlink is not lexical
        return Path(os.path.realpath(p))
    resolved_head = memo.get(head)
    if resolved_head is None:
        resolved_head = memo[head] = os.path.realpath(head)
    joined = os.path.join(resolved_head, tail)
    if os.path.islink(joined):
        return Path(os.path.realpath(joined))
    return Path(joined)


def is_within(path: Path, directory: Path) -> bool:
    """Whether the resolved ``path`` is ``directory`` or below it (both taken as resolved)."""
    # As ``directory in path.parents``, on the strings: pathlib builds every parent to compare.
    p, d = str(path), str(directory)
    return p == d or p.startswith(d if d.endswith("/") else d + "/")


@frozen
class BytecodePolicy:
    """Where bytecode may come from: inside ``source_root``, or under one of ``allowed_dirs``."""

    source_root: Path
    allowed_dirs: tuple[Path, ...] = ()

    @classmethod
    def of(cls, source_root: Path, allowed_dirs: Iterable[Path | str] = ()) -> BytecodePolicy:
        root = source_root if source_root.is_dir() else source_root.parent
        return cls(real(root), tuple(real(d) for d in allowed_dirs))

    def check(self, manifest_file: Path, written: str) -> str | None:
        """Why the bytecode path ``written`` in ``manifest_file`` may not be read, or None."""
        given = Path(written)
        located = given if given.is_absolute() else Path(manifest_file).parent / given
        resolved = real(located)
        if any(is_within(resolved, d) for d in self.allowed_dirs):
            return None
        linked = resolved != Path(os.path.abspath(located))
        via = f" (through a symlink: {resolved})" if linked else ""
        if not given.is_absolute():
            if is_within(resolved, self.source_root):
                return None
            return (
                f"{written} leaves the source root {self.source_root}{via}; a relative bytecode "
                "path must stay inside the source (copy the object into it), or name a file under "
                f"a directory the host allows with {CONFIG_HINT}"
            )
        if is_within(resolved, self.source_root):
            return None  # an absolute path into the source itself reads nothing more
        allowed = ", ".join(str(d) for d in self.allowed_dirs) or "none"
        return (
            f"absolute bytecode path {written}{via} is not under a directory this host allows "
            f"(allowed: {allowed}); add its directory to {CONFIG_HINT}, e.g. "
            f"bytecode_dirs: [{resolved.parent}], or use a path relative to the manifest"
        )


def manifest_escape(path: Path, root: Path) -> str | None:
    """Why the manifest file ``path`` found under the directory ``root`` may not be read (a
    symlink leading outside the root), or None."""
    resolved, top = real(path), real(root)
    if is_within(resolved, top):
        return None
    what = "a directory" if resolved.is_dir() else "a file"
    return (
        f"is a symlink to {what} outside the source root ({resolved}, the root is {top}); "
        "bpfman reads nothing outside the source, so put the content in it or remove the link"
    )
