"""A git repository kept on disk between polls, so that watching a git source fetches only what
changed instead of cloning the repository each time.

    mirror = GitMirror(url, "main", mirror_dir(state_dir, url), credentials_file=creds)
    result = mirror.sync()                     # SyncResult(commit='3f2a…', changed=True)
    if result.changed:                         # unchanged: nothing to check out or parse again
        tree = mirror.checkout(result.commit)  # a clean tree of that commit, to load manifests

``cache_dir`` (0700, one per repository URL) holds:

- ``repo.git``: a bare repository made by ``git init``, never ``git clone``: a clone writes the
  URL, credentials and all, into its config. Each ``git fetch`` is given the URL instead, and
  the commit it brings is kept as ``refs/bpfman/tip`` so that git's gc never drops it;
- ``checkouts/``: trees of commits for reading, the latest two kept (the one being read may
  still be in use while the next is made);
- ``known_hosts``: ssh host keys of the remote, learnt on first contact (``accept-new``);
- ``lock``: an flock held while the cache is written, so two processes never interleave.

Credentials (an ssh key file, an HTTPS credentials file) reach git only through the environment
of its process: never a URL, a command line, a file in the cache, a log line or an error.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shlex
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from reconciler.files import NotReadable, kind_of, open_regular, read_regular
from reconciler.sources import gitcmd
from reconciler.sources.gitcmd import GitFailed
from reconciler.sources.kinds import Kind, SourceError, classify
from reconciler.sources.redact import redact, shown

log = logging.getLogger(__name__)

TIP = "refs/bpfman/tip"
# A ref that is not found by name, but may be an abbreviated commit id, is looked for among
# every branch and tag (kept apart from TIP, under refs/bpfman/).
_EVERYTHING = ("+refs/heads/*:refs/bpfman/heads/*", "+refs/tags/*:refs/bpfman/tags/*")
_FULL_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1 or SHA-256
_ABBREVIATED = re.compile(r"[0-9a-fA-F]{4,63}")
# What git says when the remote has no such ref or object (not a network or local failure).
_MISSING = re.compile(r"couldn't find remote ref|not our ref|no such remote ref", re.IGNORECASE)
# Every command: no hooks (even a global core.hooksPath), auto-gc in the foreground (a detached
# gc would outlive us), no reflogs (whose messages could carry the URL), protocol v2 (refs are
# advertised by prefix, and any commit may be fetched by id).
_SETTINGS = (
    "core.hooksPath=/dev/null",
    "gc.autoDetach=false",
    "core.logAllRefUpdates=false",
    "protocol.version=2",
    "core.symlinks=true",  # a symlink in the repository is checked out as a symlink
)
CREDENTIALS_LIMIT = 64 * 1024
TOKEN_USER = "x-access-token"  # the user name sent with a credentials file holding only a token
# Answers git's credential requests from the environment, and only for the URL's own origin: a
# redirect to another host gets nothing. printf is a shell builtin, so the secret never appears
# on a command line either.
_CREDENTIAL_HELPER = (
    '!f() { test "$1" = get || exit 0; p=; h=; '
    'while IFS= read -r l && test -n "$l"; do case "$l" in '
    'protocol=*) p="${l#protocol=}";; host=*) h="${l#host=}";; esac; done; '
    'test "$p://$h" = "$BPFMAN_GIT_ORIGIN" || exit 0; '
    'printf \'username=%s\\npassword=%s\\n\' "$BPFMAN_GIT_USERNAME" "$BPFMAN_GIT_PASSWORD"; }; f'
)


class MirrorError(SourceError):
    """The repository cannot be mirrored: unreachable, a ref it does not have, refused
    credentials, an unusable cache directory. The message is git's reason, safe to show."""


@dataclass(frozen=True)
class SyncResult:
    commit: str  # the full commit id the ref resolves to now
    changed: bool  # whether it differs from the previous sync's (always True on the first)


def mirror_dir(state_dir: Path, url: str) -> Path:
    """Where the mirror of ``url`` lives under ``state_dir``: named by a hash of the redacted
    URL, so that a rotated token keeps the cache, and no credential shapes a file name."""
    digest = hashlib.sha256(redact(url).encode()).hexdigest()[:24]
    return state_dir / "git" / digest


class GitMirror:
    """A persistent mirror of ``ref`` (a branch to follow, a tag, a commit id; default: the
    remote's HEAD) of the repository at ``url``, in ``cache_dir``. ``timeout`` bounds each git
    command (default :data:`gitcmd.DEFAULT_TIMEOUT`)."""

    def __init__(
        self,
        url: str,
        ref: str | None,
        cache_dir: Path,
        timeout: float | None = None,
        ssh_key_file: Path | None = None,
        credentials_file: Path | None = None,
    ) -> None:
        try:
            src = classify(url)
        except SourceError as e:
            raise MirrorError(str(e)) from None
        if src.kind is not Kind.GIT:
            raise MirrorError(f"{src.shown} is not a git repository URL")
        self.url, self.shown = src.given, src.shown
        self.cache_dir = Path(cache_dir)
        self.repo = self.cache_dir / "repo.git"
        self.timeout = timeout
        self.ref = ref or None
        # A full commit id pins the mirror: once the commit is here, nothing needs fetching.
        self._pinned = ref.lower() if ref and _FULL_ID.fullmatch(ref.lower()) else None
        scheme = urlsplit(src.given).scheme if "://" in src.given else "ssh"  # user@host:path
        if ssh_key_file is not None and scheme != "ssh":
            raise MirrorError(f"an ssh key file applies to ssh URLs, not to {self.shown}")
        if credentials_file is not None and scheme not in ("http", "https"):
            raise MirrorError(f"a credentials file applies to https URLs, not to {self.shown}")
        self.ssh_key_file = ssh_key_file
        self.credentials_file = credentials_file
        self._origin = f"{scheme}://{urlsplit(src.given).netloc.rpartition('@')[2]}"
        self._last: str | None = None
        self._previous_tree: Path | None = None
        self._suspect = False  # a checkout failed: look for damage before the next fetch
        if self.ref:
            self._check_ref(self.ref)
        self._auth_env()  # unreadable key or credentials files are reported now, not at a poll
        self._prepare_dir()

    # --- public API ------------------------------------------------------------------------

    def sync(self) -> SyncResult:
        """Bring the ref up to date: one ``git fetch`` (none for a commit already here). The
        first sync of a new cache fetches everything; a damaged cache (a fetch killed midway,
        a removed or truncated file) is fetched again from scratch. MirrorError with git's
        reason when the remote cannot be read or has no such ref; the cache is kept then."""
        with self._locked():
            self._remove_stale_locks()
            if not (self.repo / "HEAD").is_file() or (self._suspect and self._damaged()):
                self._reset()
            self._suspect = False
            try:
                commit = self._update()
            except GitFailed as e:
                if not self._damaged():
                    raise MirrorError(f"cannot fetch {self.shown}: {e.reason}") from None
                log.warning(
                    "the git cache of %s is damaged (%s); fetching it again", self.shown, e.reason
                )
                self._reset()
                try:
                    commit = self._update()
                except GitFailed as e:
                    raise MirrorError(f"cannot fetch {self.shown}: {e.reason}") from None
        changed = commit != self._last
        self._last = commit
        return SyncResult(commit, changed)

    def checkout(self, commit: str) -> Path:
        """A new directory under ``cache_dir/checkouts`` holding the tree of ``commit`` (as
        returned by :meth:`sync`), with no ``.git``. Earlier checkouts are removed, except the
        one returned by the previous call; the caller may remove any of them itself."""
        if not _FULL_ID.fullmatch(commit):
            raise MirrorError(f"{shown(commit)!r} is not a full commit id")
        with self._locked():
            base = self.cache_dir / "checkouts"
            base.mkdir(mode=0o700, exist_ok=True)
            tree = Path(tempfile.mkdtemp(prefix=f"{commit[:12]}-", dir=base))
            index = tree.with_name(tree.name + ".index")
            try:
                # read-tree into a private index fills the empty directory from the commit
                # (unlike `checkout -- .`, an empty tree works too); HEAD and any index of the
                # repository are left alone.
                self._git(
                    [f"--work-tree={tree}", "read-tree", "--reset", "-u", f"{commit}^{{tree}}"],
                    env={"GIT_INDEX_FILE": str(index)},
                )
            except GitFailed as e:
                shutil.rmtree(tree, ignore_errors=True)
                self._suspect = True
                raise MirrorError(
                    f"cannot check out {commit} of {self.shown}: {e.reason}"
                ) from None
            finally:
                index.unlink(missing_ok=True)
            keep = {tree.name, self._previous_tree.name if self._previous_tree else ""}
            for entry in base.iterdir():
                if entry.name not in keep:
                    _remove(entry)
            self._previous_tree = tree
            return tree

    # --- fetching --------------------------------------------------------------------------

    def _update(self) -> str:
        """The commit the ref names now, fetched if needed. GitFailed for a failure that may be
        the cache's; MirrorError for a remote that lacks the ref."""
        if self._pinned:
            if self._commit(self._pinned):
                return self._pinned
            # Protocol v2 servers hand out any commit by id; others only what a ref names.
            if not self._fetch(f"+{self._pinned}:{TIP}"):
                self._fetch(*_EVERYTHING)
            if not self._commit(self._pinned):
                raise self._not_found()
            self._git(["update-ref", TIP, self._pinned])  # keeps it from gc
            return self._pinned
        # Fetching straight away rather than `ls-remote` first: with protocol v2 a fetch of an
        # unchanged ref is one ref listing (restricted to that ref) and no pack, the same round
        # trip as ls-remote; a changed one then needs no second connection.
        if self._fetch(f"+{self.ref or 'HEAD'}:{TIP}"):
            commit = self._commit(TIP)
            if commit is None:
                raise GitFailed(f"{TIP} does not name a commit after the fetch")
            return commit
        if self.ref and _ABBREVIATED.fullmatch(self.ref):  # an abbreviated commit id?
            self._fetch(*_EVERYTHING)
            commit = self._commit(self.ref)
            if commit:
                self._git(["update-ref", TIP, commit])
                self._pinned = commit  # from now on, as if the full id had been given
                return commit
        raise self._not_found()

    def _fetch(self, *refspecs: str) -> bool:
        """Fetch ``refspecs``: True, or False when the remote has no such ref or object."""
        try:
            self._git(
                ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
                 "--no-recurse-submodules", "--", self.url, *refspecs],
                env=self._auth_env(),
            )  # fmt: skip
        except GitFailed as e:
            if _MISSING.search(e.reason):
                return False
            raise
        return True

    def _commit(self, name: str) -> str | None:
        """The full id of the commit ``name`` names in the cache, or None."""
        try:
            out = self._git(
                ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}"]
            )
        except GitFailed:
            return None
        return out.strip() or None

    def _not_found(self) -> MirrorError:
        if self.ref is None:
            return MirrorError(f"{self.shown} has no commit at HEAD (an empty repository?)")
        return MirrorError(
            f"ref {shown(self.ref)!r} not found in {self.shown}: give a branch, tag or commit"
        )

    def _check_ref(self, ref: str) -> None:
        # A ref becomes a refspec: a leading '+' or '-' or a ':' would change its meaning.
        if ref[0] in "+-" or ":" in ref:
            raise MirrorError(f"ref {shown(ref)!r} is not a branch, tag or commit name")
        try:
            gitcmd.run_git(["check-ref-format", "--allow-onelevel", ref], timeout=self.timeout)
        except GitFailed:
            raise MirrorError(
                f"ref {shown(ref)!r} is not a valid branch, tag or commit name"
            ) from None

    # --- credentials -----------------------------------------------------------------------

    def _auth_env(self) -> dict[str, str]:
        """The environment that carries the credentials to git (read afresh for every fetch,
        so that a rotated key or token is used at the next poll)."""
        env: dict[str, str] = {}
        if self.ssh_key_file is not None:
            _regular(self.ssh_key_file, "ssh key file")
            ssh = [
                "ssh", "-i", str(self.ssh_key_file), "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
                "-o", f"UserKnownHostsFile={self.cache_dir / 'known_hosts'}",
            ]  # fmt: skip
            env["GIT_SSH_COMMAND"] = shlex.join(ssh)
        if self.credentials_file is not None:
            user, password = _read_credentials(self.credentials_file)
            env.update(
                # The empty helper first drops the user's own helpers: these credentials only.
                GIT_CONFIG_COUNT="2",
                GIT_CONFIG_KEY_0="credential.helper",
                GIT_CONFIG_VALUE_0="",
                GIT_CONFIG_KEY_1="credential.helper",
                GIT_CONFIG_VALUE_1=_CREDENTIAL_HELPER,
                BPFMAN_GIT_ORIGIN=self._origin,
                BPFMAN_GIT_USERNAME=user,
                BPFMAN_GIT_PASSWORD=password,
            )
        return env

    # --- the cache -------------------------------------------------------------------------

    def _prepare_dir(self) -> None:
        try:
            self.cache_dir.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                self.cache_dir.mkdir(mode=0o700)
            st = os.lstat(self.cache_dir)
            if not stat.S_ISDIR(st.st_mode):
                raise MirrorError(
                    f"git cache {self.cache_dir} is {kind_of(st.st_mode)}, not a directory"
                )
            if st.st_uid != os.geteuid():
                raise MirrorError(f"git cache {self.cache_dir} belongs to another user")
            os.chmod(self.cache_dir, 0o700)
        except OSError as e:
            raise MirrorError(f"cannot use git cache {self.cache_dir}: {e.strerror}") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._prepare_dir()  # removed since the last call (a cleaned state dir): made again
        fd = os.open(
            self.cache_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _remove_stale_locks(self) -> None:
        """Remove the ``*.lock`` files a killed git left (a ref's, packed-refs', config's):
        under our flock no git of ours is running, and git refuses to update a locked ref."""
        for top, dirs, files in os.walk(self.repo):
            if top == str(self.repo):
                dirs[:] = [d for d in dirs if d != "objects"]  # git cleans its own tmp objects
            for name in files:
                if name.endswith(".lock"):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(top, name))

    def _damaged(self) -> bool:
        """Whether the cache is unusable: not a repository, or refs naming missing objects.
        Only asked after a failure (a network error leaves the cache intact; the check reads
        every object reachable from our refs, too slow to run at every poll)."""
        try:
            self._git(["fsck", "--connectivity-only", "--no-dangling", "--no-progress"])
        except GitFailed:
            return True
        return False

    def _reset(self) -> None:
        if self.repo.exists() or self.repo.is_symlink():
            log.info("creating the git cache of %s again", self.shown)
        _remove(self.repo)
        try:
            # No template: no sample hooks, nothing but what git needs.
            gitcmd.run_git(
                ["init", "--bare", "--quiet", "--template=", str(self.repo)], timeout=self.timeout
            )
        except GitFailed as e:
            raise MirrorError(f"cannot create the git cache {self.repo}: {e.reason}") from None

    def _git(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> str:
        cmd: list[str] = []
        for setting in _SETTINGS:
            cmd += ["-c", setting]
        return _run_git([*cmd, f"--git-dir={self.repo}", *args], self.timeout, env or {})


def _run_git(args: Sequence[str], timeout: float | None, extra_env: Mapping[str, str]) -> str:
    return gitcmd.run_git(args, timeout=timeout, extra_env=extra_env)


def _regular(path: Path, what: str) -> None:
    """MirrorError unless ``path`` is a readable regular file (symlinks followed)."""
    try:
        open_regular(path).close()
    except NotReadable as e:
        raise MirrorError(f"{what} {shown(str(path))} {e}") from None
    except OSError as e:
        raise MirrorError(f"{what} {shown(str(path))} cannot be read: {e.strerror}") from None


def _read_credentials(path: Path) -> tuple[str, str]:
    """``(user, password)`` from a credentials file: one line, ``user:password`` or a token."""
    try:
        data = read_regular(path, CREDENTIALS_LIMIT)
    except NotReadable as e:
        raise MirrorError(f"credentials file {shown(str(path))} {e}") from None
    except OSError as e:
        raise MirrorError(
            f"credentials file {shown(str(path))} cannot be read: {e.strerror}"
        ) from None
    text = data.decode("utf-8", errors="replace").removesuffix("\n").removesuffix("\r")
    # Nothing of the content goes into a message: it is the secret.
    if not text or any(ch in text for ch in "\r\n\0"):
        raise MirrorError(
            f"credentials file {shown(str(path))} must hold one line: user:password, or a token"
        )
    user, colon, password = text.partition(":")
    if not colon:
        return TOKEN_USER, text
    if not user:
        raise MirrorError(f"credentials file {shown(str(path))} has an empty user before ':'")
    return user, password


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
