"""The fingerprint that lets the watcher reuse a directory's manifests: any edit, rename,
addition, removal or replacement changes it; nothing else does."""

from __future__ import annotations

import os

from reconciler.watch.loop import _tree_fingerprint


def test_the_fingerprint_follows_every_change(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.yaml").write_text("a")
    (tmp_path / "sub" / "b.o").write_bytes(b"\x7fELF")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.o"
    outside.write_bytes(b"x")
    first = _tree_fingerprint(tmp_path, [str(outside)])
    assert _tree_fingerprint(tmp_path, [str(outside)]) == first  # untouched: the same

    last = [first]

    def changed() -> None:
        now = _tree_fingerprint(tmp_path, [str(outside)])
        assert now != last[-1]
        last.append(now)

    (tmp_path / "sub" / "b.o").write_bytes(b"\x7fELF2")  # content and size
    changed()
    st = os.stat(tmp_path / "a.yaml")
    os.utime(tmp_path / "a.yaml", ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # same size
    changed()
    (tmp_path / "a.tmp").write_text("b")
    os.replace(tmp_path / "a.tmp", tmp_path / "a.yaml")  # saved by rename
    changed()
    (tmp_path / "c.yaml").write_text("c")  # added
    changed()
    (tmp_path / "c.yaml").unlink()  # removed
    changed()
    outside.write_bytes(b"xy")  # bytecode outside the source
    changed()
    outside.unlink()
    changed()
