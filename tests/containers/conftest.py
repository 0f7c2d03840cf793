"""A private podman (its API service on a private socket, private storage) for each test module
of this directory; the module is skipped, with the reason, where podman cannot run containers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.containers import podman as podman_mod
from tests.containers.podman import Podman


@pytest.fixture(scope="module")
def podman() -> Iterator[Podman]:
    try:
        p = podman_mod.start()
    except podman_mod.Unavailable as e:
        pytest.skip(f"podman cannot run containers here: {e}")
    try:
        yield p
    finally:
        p.close()
