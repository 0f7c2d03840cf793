"""The long-running watcher: triggers, status, metrics and service integration."""
