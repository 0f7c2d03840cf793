#!/usr/bin/env bash
# A CI step for a config repository of manifests:
#   on every change:   validate (no root, no host needed)
#   on a target host:  plan with --detailed-exitcode, apply only when there are changes
#   usage: plan-and-apply.sh [SOURCE [OPTION...]]   (OPTIONs: --path DIR, --config FILE...)
set -euo pipefail
SOURCE=${1:-.}
shift || true
bpfman validate "$SOURCE" "$@"
if [ "$(id -u)" = 0 ]; then
    set +e
    bpfman plan "$SOURCE" --no-color --detailed-exitcode "$@"
    rc=$?
    set -e
    case $rc in
        0) echo "host already matches the manifests" ;;
        2) bpfman apply "$SOURCE" --auto-approve --no-color "$@" ;;
        *) exit "$rc" ;;
    esac
fi
