"""The layering of docs/architecture.md ("Layers and contracts") holds: the import-linter
contracts in .importlinter are kept (the same check as `make lint`, here so that the test run CI
makes enforces it too)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def lint_imports() -> str:
    beside = Path(sys.executable).with_name("lint-imports")  # the .venv's, from the dev extras
    found = str(beside) if beside.exists() else shutil.which("lint-imports")
    assert found, "lint-imports is missing: `pip install -e '.[dev]'` (make install) brings it"
    return found


def test_the_import_contracts_are_kept() -> None:
    p = subprocess.run(
        [lint_imports(), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert p.returncode == 0, p.stdout + p.stderr
    declared = (REPO / ".importlinter").read_text().count("[importlinter:contract:")
    assert f"Contracts: {declared} kept, 0 broken." in p.stdout, p.stdout
