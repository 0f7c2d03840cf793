#!/usr/bin/env bash
# Posts a Markdown file (the output of plan-markdown.sh) as a review comment:
#   GitHub Actions ($GITHUB_ACTIONS): `gh pr comment $PR_NUMBER --body-file FILE`; needs
#     GH_TOKEN (e.g. the job's github.token with `permissions: pull-requests: write`) and
#     PR_NUMBER (github.event.pull_request.number).
#   GitLab CI ($GITLAB_CI): a note on merge request $CI_MERGE_REQUEST_IID through the REST API,
#     with curl; needs BPFMAN_GITLAB_TOKEN, a project access token with the `api` scope stored
#     as a masked CI/CD variable (the job token may not write notes). The token is handed to
#     curl on stdin, never on its command line.
#   Anywhere else: prints FILE.
#   usage: post-comment.sh FILE
set -euo pipefail
FILE=${1:?usage: post-comment.sh FILE}
[ -r "$FILE" ] || { echo "post-comment.sh: cannot read $FILE" >&2; exit 1; }

if [ -n "${GITHUB_ACTIONS:-}" ]; then
    : "${PR_NUMBER:?set PR_NUMBER to the pull request number}"
    : "${GITHUB_REPOSITORY:?}"
    exec gh pr comment "$PR_NUMBER" --repo "$GITHUB_REPOSITORY" --body-file "$FILE"
elif [ -n "${GITLAB_CI:-}" ]; then
    : "${BPFMAN_GITLAB_TOKEN:?set the CI/CD variable BPFMAN_GITLAB_TOKEN (api scope, masked)}"
    : "${CI_MERGE_REQUEST_IID:?not a merge request pipeline}"
    url="$CI_API_V4_URL/projects/$CI_PROJECT_ID/merge_requests/$CI_MERGE_REQUEST_IID/notes"
    printf 'PRIVATE-TOKEN: %s\n' "$BPFMAN_GITLAB_TOKEN" |
        curl --silent --show-error --fail --request POST --header @- \
            --data-urlencode "body@$FILE" "$url" >/dev/null
else
    cat "$FILE"
fi
