"""The fake kernel: an in-memory ``Kernel`` with the real one's semantics, for tests of the
layers above (``kernel``), its dispatchers (``dispatch``) and loaded objects and shared maps
(``parts``). Production code never imports this package."""

from reconciler.kernel.fake.kernel import FakeKernel

__all__ = ["FakeKernel"]
