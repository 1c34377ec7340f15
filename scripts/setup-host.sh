#!/usr/bin/env bash
# Installs the system packages the lab and the tests use (Debian 12), once.
# Idempotent: packages already present are not reinstalled, apt is not touched
# when nothing is missing.
set -euo pipefail

packages=(
  podman runc debootstrap slirp4netns
  postgresql-15 postgresql-client-15
  prometheus prometheus-alertmanager
  chromium chromium-driver
  lynis shellcheck wrk jq rsync openssh-client make git ca-certificates openssl
  nftables
  # The lab's nodes: Debian's runc and CNI plugins (bind-mounted into the node
  # containers) and a C toolchain for the static pause image.
  containernetworking-plugins gcc libc6-dev binutils
)

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup-host: missing packages (${missing[*]}); run as root or install them" >&2
    exit 1
  fi
  echo "setup-host: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Debian prometheus packages start their daemons on install; the lab and
# the tests start their own instances on loopback, so nothing listens by default.
for unit in prometheus prometheus-alertmanager prometheus-node-exporter postgresql; do
  if systemctl is-enabled "$unit" >/dev/null 2>&1 || systemctl is-active "$unit" >/dev/null 2>&1; then
    systemctl disable --now "$unit" >/dev/null 2>&1 || true
  fi
done
pkill -x prometheus 2>/dev/null || true
pkill -x prometheus-alertmanager 2>/dev/null || true

# crun fails on this kind of VM (rlimits, hybrid cgroups): run containers with runc.
conf=/etc/containers/containers.conf
if [[ $(id -u) -eq 0 ]] && ! grep -qs 'runtime = "runc"' "$conf"; then
  mkdir -p /etc/containers
  cat >"$conf" <<'CONF'
[containers]
default_ulimits = ["nofile=10000:10000","nproc=30000:30000"]
[engine]
runtime = "runc"
CONF
fi
