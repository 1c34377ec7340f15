#!/usr/bin/env bash
# Build the test control plane (tests/controlplane) into tests/controlplane/bin/.
# The Go build cache lives under .cache/ in the repository so a rebuild after a
# small change takes seconds; the build is skipped when the binary is newer than
# every source file. Usage: scripts/build-controlplane.sh [--force]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="${repo}/tests/controlplane"
out="${src}/bin/controlplane"

export PATH="/usr/local/go/bin:${PATH}"
export GOCACHE="${GOCACHE:-${repo}/.cache/go-build}"
export GOMODCACHE="${GOMODCACHE:-$(go env GOMODCACHE)}"
export GOFLAGS="-trimpath -buildvcs=false"
# Pure-Go SQLite (modernc.org/sqlite): no C toolchain needed.
export CGO_ENABLED=0

if ! command -v go >/dev/null; then
  echo "build-controlplane: Go is not installed (expected /usr/local/go/bin/go)" >&2
  exit 1
fi

if [[ "${1:-}" != "--force" && -x "${out}" ]]; then
  newer="$(find "${src}" -path "${src}/bin" -prune -o -type f \
    \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' -o -name '*.yaml' \) \
    -newer "${out}" -print -quit)"
  if [[ -z "${newer}" ]]; then
    echo "build-controlplane: ${out#"${repo}/"} is up to date"
    exit 0
  fi
fi

mkdir -p "${GOCACHE}" "${src}/bin"
start=${SECONDS}
# -p 2: the build machines have two cores shared with other work.
# Stamp the Kubernetes version the way the upstream release build does, so
# /version and clients see v1.35.x rather than a development placeholder.
kube_version="$(cd "${src}" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
minor="${kube_version#v1.}"
minor="${minor%%.*}"
pkg=k8s.io/component-base/version
ldflags="-s -w -X ${pkg}.gitVersion=${kube_version} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
(cd "${src}" && go build -p 2 -ldflags "${ldflags}" -o "${out}.tmp" .)
mv "${out}.tmp" "${out}"
echo "build-controlplane: built ${out#"${repo}/"} in $((SECONDS - start))s ($(du -h "${out}" | cut -f1))"
