"""bpfman: a declarative, GitOps-style manager for eBPF programs."""

__version__ = "0.1.0"
