"""Fixtures for the image tests: real registries, each our own docker-registry on a loopback port.

Function-scoped on purpose: a registry starts in a few tens of milliseconds, and blobs are shared
by content across repositories, so a test that tampers with a blob on disk would otherwise poison
every later test that pushes the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.images.registry import Registry, missing_tools
from tests.images.tokenserver import TokenServer


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


@pytest.fixture
def token_registry(
    _registry_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Registry, TokenServer]]:
    """A plain-HTTP registry that wants bearer tokens from a token server (`TokenServer`):
    users with the server's password pull and push, anyone pulls under public/."""
    directory = tmp_path_factory.mktemp("token-registry")
    server = TokenServer(directory / "token")
    try:
        with Registry.start(directory, token=server.registry_config()) as reg:
            yield reg, server
    finally:
        server.stop()
