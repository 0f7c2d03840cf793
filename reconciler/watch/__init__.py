"""The long-running ``bpfman watch`` loop: triggers, status, metrics, service integration."""
