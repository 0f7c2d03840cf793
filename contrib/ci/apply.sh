#!/usr/bin/env bash
# CI step "apply", after merge on the default branch, on each host runner, as root: validate,
# plan, and apply only when the plan has changes (plan-and-apply.sh). Refuses to run
# unprivileged rather than silently apply nothing.
#   usage: apply.sh [SOURCE [OPTION...]]
#   e.g.   apply.sh . --path manifests
set -euo pipefail
if [ "$(id -u)" != 0 ]; then
    echo "apply.sh: bpfman apply loads eBPF programs and must run as root on the host" >&2
    exit 1
fi
exec "$(dirname "$0")/plan-and-apply.sh" "$@"
