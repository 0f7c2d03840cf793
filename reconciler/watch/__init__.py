"""The long-running watcher behind ``bpfman watch``: triggers, status, metrics."""
