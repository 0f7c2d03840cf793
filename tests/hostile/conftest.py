"""The CLI tier's fixtures (a private bpffs root and state dir, a manifest directory)."""

from tests.cli.conftest import bpfman, mdir  # noqa: F401
