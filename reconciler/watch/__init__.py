"""The long-running reconciler (``bpfman watch``): triggers, status, metrics."""
