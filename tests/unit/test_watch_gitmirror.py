"""The watcher's git mirror against real servers: a ``git daemon`` and a Basic-auth dumb-HTTP
server started by fixtures on 127.0.0.1 (always stopped), and ``file://`` repositories."""

from __future__ import annotations

import base64
import functools
import http.server
import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.watch.gitmirror import TOKEN_USER, GitMirror, MirrorError, mirror_dir

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
SECRET = "s3cret-Pa55word-never-shown"


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        [*GIT, *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


class Origin:
    """A bare repository ``served/repo.git`` and a work tree that pushes to it."""

    def __init__(self, root: Path) -> None:
        self.served = root / "served"
        self.bare = self.served / "repo.git"
        self.work = root / "work"
        self.work.mkdir(parents=True)
        git("init", "-q", "-b", "main", cwd=self.work)
        self.commit({"fw.yaml": "v1\n"})
        git("clone", "-q", "--bare", str(self.work), str(self.bare))
        git("remote", "add", "origin", str(self.bare), cwd=self.work)
        git("update-server-info", cwd=self.bare)

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git("add", "-A", cwd=self.work)
        git("commit", "-qm", message, cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def push(self, files: dict[str, str], branch: str = "main") -> str:
        commit = self.commit(files)
        git("push", "-q", "--force", "origin", f"HEAD:refs/heads/{branch}", "--tags", cwd=self.work)
        git("update-server-info", cwd=self.bare)  # for dumb HTTP
        return commit

    def head(self, ref: str = "HEAD") -> str:
        return git("rev-parse", f"{ref}^{{commit}}", cwd=self.bare)


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    return Origin(tmp_path / "origin")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "state" / "git" / "mirror"


def object_files(cache_dir: Path) -> set[str]:
    objects = cache_dir / "repo.git" / "objects"
    return {str(p.relative_to(objects)) for p in objects.rglob("*") if p.is_file()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """``git daemon`` serving a directory on 127.0.0.1, stoppable and restartable on one port."""

    def __init__(self, served: Path) -> None:
        self.served = served
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"git://127.0.0.1:{self.port}/repo.git"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", f"--base-path={self.served}", "--export-all",
             "--listen=127.0.0.1", f"--port={self.port}", str(self.served)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "git daemon exited"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("git daemon is not listening")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture
def daemon(origin: Origin) -> Iterator[Daemon]:
    d = Daemon(origin.served)
    try:
        d.start()
        yield d
    finally:
        d.stop()


# --- following a branch over the git protocol ---------------------------------------------------


def test_first_sync_then_an_unchanged_remote_fetches_nothing(daemon, origin, cache):
    mirror = GitMirror(daemon.url, None, cache)
    first = mirror.sync()
    assert first.commit == origin.head() and first.changed
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    before = object_files(cache)

    again = mirror.sync()
    assert again.commit == first.commit and not again.changed
    assert object_files(cache) == before  # nothing came over the wire

    tree = mirror.checkout(first.commit)
    assert (tree / "fw.yaml").read_text() == "v1\n"
    assert not (tree / ".git").exists()


def test_a_push_is_fetched_incrementally_and_old_checkouts_go(daemon, origin, cache):
    mirror = GitMirror(daemon.url, "main", cache)
    first = mirror.sync()
    tree1 = mirror.checkout(first.commit)
    before = object_files(cache)

    pushed = origin.push({"fw.yaml": "v2\n", "more/b.yaml": "b\n"})
    second = mirror.sync()
    assert second.commit == pushed and second.changed
    assert before < object_files(cache)  # only added to: no fresh clone
    tree2 = mirror.checkout(second.commit)
    assert (tree2 / "fw.yaml").read_text() == "v2\n" and (tree2 / "more" / "b.yaml").exists()
    assert tree1.exists()  # the previous checkout may still be being read

    third = mirror.checkout(second.commit)
    assert not tree1.exists() and tree2.exists() and third.exists()
    assert sorted(p.name for p in (cache / "checkouts").iterdir()) == sorted(
        [tree2.name, third.name]
    )


def test_a_new_mirror_object_on_an_existing_cache_reports_a_change_once(daemon, origin, cache):
    GitMirror(daemon.url, None, cache).sync()
    restarted = GitMirror(daemon.url, None, cache)  # as after a restart of the watcher
    assert restarted.sync().changed
    assert not restarted.sync().changed


# --- branch, tag and commit pinning -------------------------------------------------------------


def test_branch_tag_and_commit_pinning(origin, cache, tmp_path):
    v1 = origin.head()
    git("tag", "-a", "-m", "release", "v1", cwd=origin.work)
    dev = origin.push({"dev.yaml": "d\n"}, branch="dev")
    git("reset", "-q", "--hard", v1, cwd=origin.work)

    branch = GitMirror(origin.url, "dev", tmp_path / "c-branch")
    tag = GitMirror(origin.url, "v1", tmp_path / "c-tag")
    pinned = GitMirror(origin.url, v1, tmp_path / "c-commit")
    short = GitMirror(origin.url, v1[:10], tmp_path / "c-short")
    assert branch.sync().commit == dev
    assert tag.sync().commit == v1  # an annotated tag: its commit
    assert pinned.sync().commit == v1
    assert short.sync().commit == v1

    newer_dev = origin.push({"dev.yaml": "d2\n"}, branch="dev")
    origin.push({"fw.yaml": "v9\n"})
    assert branch.sync().commit == newer_dev  # a branch is followed
    assert tag.sync().commit == v1 and not tag.sync().changed  # a tag stays
    shutil.rmtree(origin.bare)  # a commit present needs no fetch at all
    assert pinned.sync().commit == v1 and not pinned.sync().changed
    assert short.sync().commit == v1


def test_a_ref_that_does_not_exist_is_a_clear_error(daemon, cache, tmp_path):
    with pytest.raises(MirrorError) as e:
        GitMirror(daemon.url, "no-such-branch", cache).sync()
    assert str(e.value) == (
        f"ref 'no-such-branch' not found in {daemon.url}: give a branch, tag or commit"
    )
    with pytest.raises(MirrorError, match="not found"):
        GitMirror(daemon.url, "ab" * 20, tmp_path / "c2").sync()

    empty = tmp_path / "empty.git"
    subprocess.run(["git", "init", "-q", "--bare", str(empty)], check=True)
    with pytest.raises(MirrorError, match=r"has no commit at HEAD \(an empty repository\?\)"):
        GitMirror(f"file://{empty}", None, tmp_path / "c3").sync()


@pytest.mark.parametrize("ref", ["-x", "+main", "main:other", "a..b", "a b"])
def test_refs_that_would_change_the_refspec_are_refused(ref, cache):
    with pytest.raises(MirrorError, match="not a .*branch, tag or commit name"):
        GitMirror("file:///nowhere.git", ref, cache)


def test_sources_that_are_not_git_urls_are_refused(tmp_path, cache):
    with pytest.raises(MirrorError, match="not a git repository URL"):
        GitMirror(str(tmp_path), None, cache)
    with pytest.raises(MirrorError, match="transport"):
        GitMirror("ext::sh -c reboot", None, cache)


# --- faults -------------------------------------------------------------------------------------


def test_the_server_going_away_then_coming_back(daemon, origin, cache):
    mirror = GitMirror(daemon.url, None, cache, timeout=30)
    first = mirror.sync()
    daemon.stop()
    pushed = origin.push({"fw.yaml": "while away\n"})
    with pytest.raises(MirrorError) as e:
        mirror.sync()
    assert str(e.value).startswith(f"cannot fetch {daemon.url}: ")
    assert "Connection refused" in str(e.value) or "errno=" in str(e.value)
    assert mirror.checkout(first.commit).is_dir()  # the cache is still there to read

    daemon.start()
    back = mirror.sync()
    assert back.commit == pushed and back.changed


def _delete_head(repo: Path) -> None:
    (repo / "HEAD").unlink()


def _truncate_tip(repo: Path) -> None:
    (repo / "refs" / "bpfman" / "tip").write_text("")


def _stale_lock(repo: Path) -> None:
    (repo / "refs" / "bpfman" / "tip.lock").write_text("0" * 40 + "\n")


def _half_packed_refs(repo: Path) -> None:
    subprocess.run(["git", f"--git-dir={repo}", "pack-refs", "--all"], check=True)
    packed = repo / "packed-refs"
    data = packed.read_bytes()
    packed.write_bytes(data[: len(data) - 20])


def _no_objects(repo: Path) -> None:
    for p in (repo / "objects").rglob("*"):
        if p.is_file():
            p.unlink()


def _not_a_repository(repo: Path) -> None:
    shutil.rmtree(repo)
    repo.write_text("garbage")


def _cache_removed(repo: Path) -> None:
    shutil.rmtree(repo.parent)  # the whole state directory cleaned under a running watcher


@pytest.mark.parametrize(
    "damage",
    [
        _delete_head,
        _truncate_tip,
        _stale_lock,
        _half_packed_refs,
        _no_objects,
        _not_a_repository,
        _cache_removed,
    ],
)
def test_a_damaged_cache_is_recovered_at_the_next_sync(damage, daemon, origin, cache):
    mirror = GitMirror(daemon.url, "main", cache)
    first = mirror.sync()
    damage(cache / "repo.git")
    pushed = origin.push({"fw.yaml": "after damage\n"})
    assert mirror.sync().commit == pushed
    assert (mirror.checkout(pushed) / "fw.yaml").read_text() == "after damage\n"
    assert first.commit != pushed


# --- what a checkout holds ----------------------------------------------------------------------


def test_a_checkout_keeps_symlinks_as_symlinks_and_an_empty_tree_is_empty(origin, cache):
    (origin.work / "d").mkdir()
    os.symlink("/etc/passwd", origin.work / "d" / "passwd")
    os.symlink("../../..", origin.work / "up")
    origin.push({})
    mirror = GitMirror(origin.url, None, cache)
    tree = mirror.checkout(mirror.sync().commit)
    assert (tree / "d" / "passwd").is_symlink()
    assert os.readlink(tree / "d" / "passwd") == "/etc/passwd"
    assert os.readlink(tree / "up") == "../../.."

    git("rm", "-rq", ".", cwd=origin.work)
    git("commit", "-qm", "empty", cwd=origin.work)
    git("push", "-q", "origin", "HEAD:main", cwd=origin.work)
    empty = mirror.checkout(mirror.sync().commit)
    assert list(empty.iterdir()) == []


def test_checkout_of_an_unknown_commit_is_an_error(origin, cache):
    mirror = GitMirror(origin.url, None, cache)
    mirror.sync()
    with pytest.raises(MirrorError, match="cannot check out"):
        mirror.checkout("ab" * 20)
    with pytest.raises(MirrorError, match="not a full commit id"):
        mirror.checkout("HEAD")
    assert list((cache / "checkouts").iterdir()) == []  # nothing half made is left


# --- credentials --------------------------------------------------------------------------------


class _BasicAuth(http.server.SimpleHTTPRequestHandler):
    expected = ""
    seen: list[str]

    def do_GET(self) -> None:
        given = self.headers.get("Authorization", "")
        self.seen.append(given)
        if given != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="repo"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_auth(origin: Origin) -> Iterator[tuple[str, type[_BasicAuth]]]:
    """``repo.git`` over dumb HTTP, Basic auth required; its URL and handler class."""
    handler = type("Handler", (_BasicAuth,), {"seen": []})
    served = functools.partial(handler, directory=str(origin.served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), served)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/repo.git", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _files_holding(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_https_credentials_file_is_used_and_never_shown(http_auth, origin, cache, tmp_path, caplog):
    url, handler = http_auth
    handler.expected = _basic("deploy", SECRET)
    creds = tmp_path / "creds"
    creds.write_text(f"deploy:{SECRET}\n")
    caplog.set_level(logging.DEBUG)

    mirror = GitMirror(url, "main", cache, credentials_file=creds)
    first = mirror.sync()
    assert first.commit == origin.head()
    pushed = origin.push({"fw.yaml": "v2\n"})
    assert mirror.sync().commit == pushed
    mirror.checkout(pushed)
    assert handler.expected in handler.seen

    creds.write_text(f"deploy:wrong-{SECRET}\n")  # read afresh at every sync
    with pytest.raises(MirrorError) as e:
        mirror.sync()
    assert str(e.value).startswith(f"cannot fetch {url}: ")
    assert "Authentication failed" in str(e.value)
    assert SECRET not in str(e.value)
    assert caplog.records and SECRET not in caplog.text
    assert _files_holding(cache, SECRET) == []
    assert _files_holding(cache, base64.b64encode(f"deploy:{SECRET}".encode()).decode()) == []


def test_a_token_alone_is_sent_with_a_fixed_user(http_auth, origin, cache, tmp_path):
    url, handler = http_auth
    handler.expected = _basic(TOKEN_USER, SECRET)
    creds = tmp_path / "token"
    creds.write_text(SECRET)
    assert GitMirror(url, None, cache, credentials_file=creds).sync().commit == origin.head()


def test_without_credentials_a_private_repository_says_why(http_auth, cache):
    url, handler = http_auth
    handler.expected = _basic("deploy", SECRET)
    with pytest.raises(MirrorError, match="terminal prompts disabled|could not read Username"):
        GitMirror(url, None, cache).sync()


def test_credentials_go_only_to_the_urls_own_origin(http_auth, cache, tmp_path):
    url, handler = http_auth
    handler.expected = _basic("deploy", SECRET)
    creds = tmp_path / "creds"
    creds.write_text(f"deploy:{SECRET}")
    mirror = GitMirror(url, None, cache, credentials_file=creds)
    mirror._origin = "http://elsewhere.invalid"  # as if git were redirected to another host
    with pytest.raises(MirrorError):
        mirror.sync()
    assert handler.seen and handler.expected not in handler.seen


@pytest.mark.parametrize("content", ["", "a\nb\n", ":nouser"])
def test_a_malformed_credentials_file_is_refused_without_showing_it(content, cache, tmp_path):
    creds = tmp_path / "creds"
    creds.write_text(content)
    with pytest.raises(MirrorError) as e:
        GitMirror("https://example.invalid/r.git", None, cache, credentials_file=creds)
    assert "nouser" not in str(e.value) and str(creds) in str(e.value)


def test_credential_and_key_files_must_be_regular_files_and_fit_the_url(cache, tmp_path):
    with pytest.raises(MirrorError, match="ssh key file .* is a directory, not a regular file"):
        GitMirror("ssh://git@example.invalid/r.git", None, cache, ssh_key_file=tmp_path)
    with pytest.raises(MirrorError, match="credentials file .* is a directory"):
        GitMirror("https://example.invalid/r.git", None, cache, credentials_file=tmp_path)
    with pytest.raises(MirrorError, match="cannot be read: No such file"):
        GitMirror("git@example.invalid:r.git", None, cache, ssh_key_file=tmp_path / "nope")
    with pytest.raises(MirrorError, match="applies to ssh URLs"):
        GitMirror("https://example.invalid/r.git", None, cache, ssh_key_file=tmp_path)
    with pytest.raises(MirrorError, match="applies to https URLs"):
        GitMirror("git://example.invalid/r.git", None, cache, credentials_file=tmp_path)


def test_mirror_dir_is_named_without_credentials(tmp_path):
    a = mirror_dir(tmp_path, f"https://deploy:{SECRET}@host/r.git")
    b = mirror_dir(tmp_path, "https://deploy:rotated@host/r.git")
    assert a == b and a.parent == tmp_path / "git" and SECRET not in str(a)
    assert mirror_dir(tmp_path, "https://host/other.git") != a


SSHD = "/usr/sbin/sshd"


@pytest.fixture
def sshd(origin: Origin, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real ``sshd`` on 127.0.0.1 letting this user in with a fresh key; the repository's
    ssh URL and the key file. Always stopped. Skipped where openssh-server is not installed."""
    if not Path(SSHD).exists():
        pytest.skip("sshd is not installed (Debian package openssh-server)")
    if os.geteuid() != 0:
        pytest.skip("sshd needs root here (privilege separation)")
    d = tmp_path / "sshd"
    d.mkdir()
    for name in ("host", "user"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True
        )
    shutil.copy(d / "user.pub", d / "authorized_keys")
    port = free_port()
    user = pwd.getpwuid(os.geteuid()).pw_name
    (d / "config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\nPidFile {d / 'pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nStrictModes no\nUsePAM no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PermitRootLogin prohibit-password\nAllowUsers {user}\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(d / "config")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, "sshd exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "sshd is not listening"
                time.sleep(0.05)
        yield f"ssh://{user}@127.0.0.1:{port}{origin.bare}", d / "user"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_ssh_with_a_key_file(sshd, origin, cache, tmp_path):
    url, key = sshd
    mirror = GitMirror(url, "main", cache, ssh_key_file=key)
    assert mirror.sync().commit == origin.head()
    assert "ssh-ed25519" in (cache / "known_hosts").read_text()  # learnt on first contact
    pushed = origin.push({"fw.yaml": "over ssh\n"})
    assert mirror.sync().commit == pushed
    assert (mirror.checkout(pushed) / "fw.yaml").read_text() == "over ssh\n"

    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    with pytest.raises(MirrorError, match="Permission denied"):
        GitMirror(url, "main", tmp_path / "c2", ssh_key_file=other).sync()
