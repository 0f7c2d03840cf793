"""`bpfman watch`: the long-running reconcile loop, its triggers, status and metrics."""
