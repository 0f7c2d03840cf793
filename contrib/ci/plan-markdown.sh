#!/usr/bin/env bash
# CI step "plan", on a pull/merge request, on a host runner (root, so the verifier runs): plans
# SOURCE against this host's kernel and writes the plan as Markdown for a review comment.
#   usage: plan-markdown.sh OUT [SOURCE [OPTION...]]
#   e.g.   plan-markdown.sh bpfman-plan.md . --path manifests
# OUT is written whatever happens: the plan, or why there is none (an invalid manifest, a plan
# with errors), so the comment always says something; bpfman escapes everything in it that
# comes from the manifests. OPTIONs are bpfman plan's (--path, --target...). Exit 0 when a
# plan was made (with or without changes), 1 otherwise. With $GITHUB_OUTPUT set (GitHub
# Actions), also sets the step outputs `has_changes` (true/false) and `markdown` (OUT).
# bpfman reads BPFMAN_BPFFS_ROOT, BPFMAN_STATE_DIR, BPFMAN_CONFIG... from the environment.
set -uo pipefail
OUT=${1:?usage: plan-markdown.sh OUT [SOURCE [OPTION...]]}
SOURCE=${2:-.}
shift 2 || shift $#

body=$(mktemp)
trap 'rm -f "$body"' EXIT
bpfman --no-color plan "$SOURCE" --markdown --detailed-exitcode "$@" >"$body"
rc=$?
changes=false
[ "$rc" = 2 ] && changes=true
if [ ! -s "$body" ]; then # bpfman itself could not run: say so rather than post nothing
    printf '### bpfman plan: failed\n\n`bpfman plan` exited %s without a plan; see the job log.\n' \
        "$rc" >"$body"
fi
# Which host planned: several hosts may comment on one request. Only hostname characters.
host=$(hostname | tr -cd 'A-Za-z0-9.-')
{
    printf '<!-- bpfman-plan host=%s -->\n' "$host"
    printf '**Host:** %s\n\n' "$host"
    cat "$body"
} >"$OUT"
if [ -n "${GITHUB_OUTPUT:-}" ]; then
    printf 'has_changes=%s\nmarkdown=%s\n' "$changes" "$OUT" >>"$GITHUB_OUTPUT"
fi
case $rc in
    0 | 2) exit 0 ;;
    *) exit 1 ;;
esac
