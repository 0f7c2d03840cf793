"""Fixtures for the image tests: real registries, each our own docker-registry on a loopback port.

Function-scoped on purpose: a registry starts in a few tens of milliseconds, and blobs are shared
by content across repositories, so a test that tampers with a blob on disk would otherwise poison
every later test that pushes the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.images.registry import Registry, missing_tools


@pytest.fixture(scope="session")
def _registry_tools() -> None:
    reason = missing_tools()
    if reason:
        pytest.skip(f"no docker-registry to test against: {reason}")


@pytest.fixture
def registry(_registry_tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A plain-HTTP registry without auth."""
    with Registry.start(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture
def tls_registry(
    _registry_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """A registry on HTTPS with a private CA (`ca_file`) and basic auth (`username`, `password`)."""
    with Registry.start(tmp_path_factory.mktemp("tls-registry"), tls=True, auth=True) as reg:
        yield reg
