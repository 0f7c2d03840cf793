#!/usr/bin/env bash
# CI step "validate", on every push: checks the manifests (schemas, semantics, the bytecode they
# name) without root and without asking the host anything, so it runs on any runner.
#   usage: validate.sh [SOURCE [OPTION...]]
#   e.g.   validate.sh . --path manifests
# SOURCE (default .) is the source root: relative bytecode paths must stay inside it, so with
# manifests under manifests/ naming ../bytecode/x.o, give the repository and --path manifests.
# OPTIONs are bpfman's (--path, --config, --label...). Exit 0 when valid; 1 otherwise, with
# bpfman's `FILE:LINE: field: message` lines on stderr.
set -euo pipefail
SOURCE=${1:-.}
shift || true
bpfman --no-color validate "$SOURCE" "$@"
