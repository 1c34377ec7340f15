#!/usr/bin/env bash
# Builds the systemd host images the Molecule scenarios and the local lab run on,
# from Debian packages (no container registry is needed). Cached: an image that
# already exists is kept; `--force` rebuilds. Concurrent runs wait for each other
# (one lock), so two test suites starting together build each image once.
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

exec 9>"${BUILD_HOST_IMAGES_LOCK:-/var/tmp/build-host-images.lock}"
if ! flock -n 9; then
  echo "build-host-images: another build is running; waiting for it"
  flock 9
fi

# Every container gets its own SSH host keys on first boot: keys baked into the image
# would be shared by all hosts made from it.
add_host_key_unit() {
  local rootfs=$1
  rm -f "$rootfs"/etc/ssh/ssh_host_*
  cat >"$rootfs/etc/systemd/system/ssh-host-keys.service" <<'UNIT'
[Unit]
Description=Generate the SSH host keys this host lacks
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target ssh.service
UNIT
  mkdir -p "$rootfs/etc/systemd/system/multi-user.target.wants" "$rootfs/etc/systemd/system/ssh.service.wants"
  ln -sf ../ssh-host-keys.service "$rootfs/etc/systemd/system/multi-user.target.wants/ssh-host-keys.service"
  ln -sf ../ssh-host-keys.service "$rootfs/etc/systemd/system/ssh.service.wants/ssh-host-keys.service"
}

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
  add_host_key_unit "$rootfs"
  # Slim the image: no docs or apt lists; the hosts run `apt-get update` when they need to.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/sbin/init"]' - "$image" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  echo "build-host-images: $image built"
done
