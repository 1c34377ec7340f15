#!/usr/bin/env bash
# Build the test control plane (tests/controlplane) into tests/controlplane/bin/: one
# program that is kube-apiserver, kube-controller-manager and kube-scheduler, and, called
# by their names, a node's kubelet, kube-proxy, NetworkPolicy controller and containerd;
# containerd's runc shim and the cluster DNS (CoreDNS) beside it, from the same module;
# the lab's Prometheus with Kubernetes discovery, its ingress controller (Traefik, the one
# k3s ships) and its ACME CA (Pebble, Let's Encrypt's test server, with its DNS stand-in),
# each from a module of its own (prometheus/, traefik/, pebble/).
# The Go build cache lives under .cache/ in the repository so a rebuild after a
# small change takes seconds; the build is skipped when the binary is newer than
# every source file. Usage: scripts/build-controlplane.sh [--force]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="${repo}/tests/controlplane"
out="${src}/bin/controlplane"
shim="${src}/bin/containerd-shim-runc-v2"
coredns="${src}/bin/coredns"
prometheus="${src}/bin/prometheus"
traefik="${src}/bin/traefik"
pebble="${src}/bin/pebble"
challtestsrv="${src}/bin/pebble-challtestsrv"

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

mkdir -p "${GOCACHE}" "${src}/bin"
# One build at a time: `make test` starts one beside the fast suites, and the slow suites'
# fixtures wait for it here, then find the binaries up to date.
exec 9>"${src}/bin/.build.lock"
if ! flock -n 9; then
  echo "build-controlplane: waiting for the build another process runs (make test starts one)" >&2
  flock 9
fi

if [[ "${1:-}" != "--force" && -x "${out}" && -x "${shim}" && -x "${coredns}" && -x "${prometheus}" && -x "${traefik}" && -x "${pebble}" && -x "${challtestsrv}" ]]; then
  newer="$(find "${src}" \( -path "${src}/bin" -o -path "${src}/node" \) -prune -o -type f \
    \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' -o -name '*.yaml' \) \
    -newer "${out}" -print -quit)"
  if [[ -z "${newer}" ]]; then
    echo "build-controlplane: ${out#"${repo}/"} is up to date"
    exit 0
  fi
fi

start=${SECONDS}
# -p 2: the build machines have two cores shared with other work.
# Stamp the Kubernetes version the way the upstream release build does, so
# /version and clients see v1.35.x rather than a development placeholder.
kube_version="$(cd "${src}" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
minor="${kube_version#v1.}"
minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X ${pkg}.gitVersion=${kube_version} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
  ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
done
containerd_pkg=github.com/containerd/containerd/v2
containerd_version="$(cd "${src}" && go list -m -f '{{.Version}}' "${containerd_pkg}")"
ldflags+=" -X ${containerd_pkg}/version.Version=${containerd_version} -X ${containerd_pkg}/version.Revision=gomod"
ldflags+=" -X ${containerd_pkg}/version.Package=${containerd_pkg}"
# urfave_cli_no_docs and no_grpc (the shim) as containerd's own Makefile builds them.
(cd "${src}" && go build -p 2 -tags urfave_cli_no_docs -ldflags "${ldflags}" -o "${out}.tmp" .)
(cd "${src}" && go build -p 2 -tags "urfave_cli_no_docs no_grpc" -ldflags "${ldflags}" -o "${shim}.tmp" ./shim)
(cd "${src}" && go build -p 2 -ldflags "-s -w" -o "${coredns}.tmp" ./coredns)
prometheus_version="$(cd "${src}/prometheus" && go list -m -f '{{.Version}}' github.com/prometheus/prometheus)"
# v0.316.0 is Prometheus 3.16.0. Kubernetes discovery only: the other providers' SDKs
# would triple the build.
(cd "${src}/prometheus" && go build -p 2 -tags "remove_all_sd enable_kubernetes_sd" \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=3.${prometheus_version#v0.3} -X github.com/prometheus/common/version.Branch=gomod" \
  -o "${prometheus}.tmp" github.com/prometheus/prometheus/cmd/prometheus)
traefik_pkg=github.com/traefik/traefik/v3
traefik_version="$(cd "${src}/traefik" && go list -m -f '{{.Version}}' "${traefik_pkg}")"
(cd "${src}/traefik" && go build -p 2 \
  -ldflags "-s -w -X ${traefik_pkg}/pkg/version.Version=${traefik_version} -X ${traefik_pkg}/pkg/version.BuildDate=1970-01-01T00:00:00Z" \
  -o "${traefik}.tmp" "${traefik_pkg}/cmd/traefik")
pebble_pkg=github.com/letsencrypt/pebble/v2/cmd
(cd "${src}/pebble" && go build -p 2 -ldflags "-s -w" -o "${pebble}.tmp" "${pebble_pkg}/pebble")
(cd "${src}/pebble" && go build -p 2 -ldflags "-s -w" -o "${challtestsrv}.tmp" "${pebble_pkg}/pebble-challtestsrv")
mv "${out}.tmp" "${out}"
mv "${shim}.tmp" "${shim}"
mv "${coredns}.tmp" "${coredns}"
mv "${prometheus}.tmp" "${prometheus}"
mv "${traefik}.tmp" "${traefik}"
mv "${pebble}.tmp" "${pebble}"
mv "${challtestsrv}.tmp" "${challtestsrv}"
echo "build-controlplane: built ${out#"${repo}/"}, ${shim#"${repo}/"}, ${coredns#"${repo}/"}, ${prometheus#"${repo}/"}, ${traefik#"${repo}/"} and Pebble in $((SECONDS - start))s ($(du -h "${out}" | cut -f1))"
