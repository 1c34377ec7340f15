#!/usr/bin/env bash
# Builds the Python base image the service's Containerfile starts from, out of
# Debian packages (no container registry is reachable). Cached: an image that
# already exists is kept; `--force` rebuilds.
#   usage: scripts/build-base-image.sh [--force] [IMAGE]
#   default IMAGE: localhost/webapp-python:3.11-bookworm
set -euo pipefail

force=false
image=localhost/webapp-python:3.11-bookworm
for arg in "$@"; do
  case "$arg" in
    --force) force=true ;;
    -*) echo "usage: $0 [--force] [IMAGE]" >&2; exit 2 ;;
    *) image=$arg ;;
  esac
done

if ! $force && podman image exists "$image"; then
  echo "build-base-image: $image present"
  exit 0
fi

mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# python3-venv brings ensurepip (the build stage makes a venv); ca-certificates lets
# pip reach PyPI over TLS. Nothing else: the final image has no compiler.
include=python3,python3-venv,ca-certificates

rootfs=$(mktemp -d /var/tmp/rootfs-webapp-python.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "build-base-image: debootstrap bookworm"
debootstrap --variant=minbase --include="$include" bookworm "$rootfs" "$mirror" >/dev/null
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
tar -C "$rootfs" -c . | podman import --quiet \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/usr/bin/python3"]' \
  - "$image" >/dev/null
echo "build-base-image: $image built"
