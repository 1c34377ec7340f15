#!/usr/bin/env bash
# Builds the systemd host images the Molecule scenarios and the local lab run on,
# from Debian packages (no container registry is needed). Cached: an image that
# already exists is kept; `--force` rebuilds.
#   usage: scripts/build-host-images.sh [--force] [bookworm] [trixie]
set -euo pipefail

force=false
suites=()
for arg in "$@"; do
  case "$arg" in
    --force) force=true ;;
    bookworm|trixie) suites+=("$arg") ;;
    *) echo "usage: $0 [--force] [bookworm] [trixie]" >&2; exit 2 ;;
  esac
done
((${#suites[@]})) || suites=(bookworm trixie)

mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
include=python3,systemd,systemd-sysv,dbus,openssh-server,sudo,iproute2,ca-certificates,apt-transport-https

for suite in "${suites[@]}"; do
  image="localhost/debian-systemd:$suite"
  if ! $force && podman image exists "$image"; then
    echo "build-host-images: $image present"
    continue
  fi
  rootfs=$(mktemp -d "/var/tmp/rootfs-$suite.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  echo "build-host-images: debootstrap $suite"
  debootstrap --variant=minbase --include="$include" "$suite" "$rootfs" "$mirror" >/dev/null
  # Slim the image: no docs or apt lists; the hosts run `apt-get update` when they need to.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/sbin/init"]' - "$image" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  echo "build-host-images: $image built"
done
