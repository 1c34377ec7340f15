#!/usr/bin/env bash
# Builds the command-line tools that are not packaged for Debian or PyPI here from
# pinned Go module versions, into .cache/bin (the Go module proxy is reachable).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
bin="$PWD/.cache/bin"
mkdir -p "$bin"

actionlint_version=v1.7.12
if ! "$bin/actionlint" -version 2>/dev/null | grep -qx "$actionlint_version"; then
  echo "setup-tools: building actionlint $actionlint_version"
  GOBIN="$bin" CGO_ENABLED=0 go install "github.com/rhysd/actionlint/cmd/actionlint@$actionlint_version"
fi
