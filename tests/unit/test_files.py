"""files.read_regular: a regular file's bytes, bounded; anything else refused before it is opened
(a FIFO would block, a device never end)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler import files


def test_a_regular_file_is_read_whole(tmp_path: Path) -> None:
    for size in (0, 1, 4095, 4096, 70_000):
        f = tmp_path / f"f{size}"
        f.write_bytes(os.urandom(size))
        assert files.read_regular(f, 1 << 20) == f.read_bytes()


def test_a_file_over_the_limit_is_refused_by_its_size(tmp_path: Path) -> None:
    f = tmp_path / "big"
    f.write_bytes(b"x" * 101)
    with pytest.raises(files.TooLarge) as e:
        files.read_regular(f, 100)
    assert e.value.size == 101 and e.value.limit == 100
    f.write_bytes(b"x" * 100)
    assert files.read_regular(f, 100) == b"x" * 100


def test_a_file_that_says_it_is_empty_is_still_read_and_bounded() -> None:
    # /proc files have st_size 0 and content: what a file growing while read looks like.
    version = Path("/proc/version").read_bytes()
    assert os.stat("/proc/version").st_size == 0 and len(version) > 10
    assert files.read_regular("/proc/version", 1 << 20) == version
    with pytest.raises(files.TooLarge):
        files.read_regular("/proc/version", 10)


@pytest.mark.parametrize("kind", ["fifo", "directory", "device", "symlink to fifo"])
def test_what_is_not_a_regular_file_is_refused_unopened(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "x"
    if kind == "fifo":
        os.mkfifo(target)  # opening it for reading would wait for a writer
    elif kind == "directory":
        target.mkdir()
    elif kind == "device":
        target = Path("/dev/zero")  # never ends
    else:
        os.mkfifo(tmp_path / "fifo")
        target.symlink_to(tmp_path / "fifo")
    with pytest.raises(files.NotReadable) as e:
        files.read_regular(target, 1 << 20)
    assert "not a regular file" in str(e.value)


def test_a_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        files.read_regular(tmp_path / "absent", 100)
