import subprocess

import pytest

from reconciler.sources import SourceError, open_source


def git(cwd, *args):
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "repo"
    (r / "prod").mkdir(parents=True)
    (r / "prod" / "a.yaml").write_text("v1\n")
    git(r, "init", "-q", "-b", "main")
    git(r, "add", ".")
    git(r, "commit", "-qm", "one")
    (r / "prod" / "a.yaml").write_text("v2\n")
    git(r, "commit", "-qam", "two")
    git(r, "tag", "v2")
    return r


def test_directory_source(tmp_path):
    with open_source(str(tmp_path)) as snap:
        assert snap.root == tmp_path.resolve()
        assert snap.revision is None


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="not a directory"):
        open_source(str(tmp_path / "nope"))


def test_path_cannot_escape(tmp_path):
    with pytest.raises(SourceError, match="leaves"):
        open_source(str(tmp_path), path="../..")


def test_git_url_with_ref_and_path(repo):
    url = f"file://{repo}"
    with open_source(url, ref="HEAD~1", path="prod") as snap:
        assert (snap.root / "a.yaml").read_text() == "v1\n"
        first = snap.revision
        clone = snap.root.parent
    assert not clone.exists()  # the clone is removed on close
    with open_source(url, ref="v2", path="prod") as snap:
        assert (snap.root / "a.yaml").read_text() == "v2\n"
        assert snap.revision != first and len(snap.revision or "") == 40


def test_git_bad_ref(repo):
    with pytest.raises(SourceError, match="ref 'nope' not found"):
        open_source(f"file://{repo}", ref="nope")


def test_checkout_directory_reports_revision(repo):
    with open_source(str(repo)) as snap:
        assert snap.revision and snap.revision.endswith("+dirty") is False
