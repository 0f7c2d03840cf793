"""The image tests' registry fixtures, for the corpus's images."""

from tests.images.conftest import _registry_tools, registry  # noqa: F401
