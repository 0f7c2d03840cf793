"""bpfman: a declarative, GitOps-style manager for eBPF programs."""

from reconciler import codecache

__version__ = "0.1.0"

# Before any module of the package defines a dataclass (see codecache's text).
codecache.install()
