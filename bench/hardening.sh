#!/usr/bin/env bash
# Converges a fresh systemd host with playbooks/harden.yml and prints what the
# hardening buys: the Lynis hardening index, ssh-audit fail/warn counts against the
# host's sshd, the converge time, and the second run's time and changed count.
#   usage: bench/hardening.sh [bookworm|trixie]   (default: bookworm)
set -euo pipefail

suite=${1:-bookworm}
case "$suite" in bookworm|trixie) ;; *) echo "usage: $0 [bookworm|trixie]" >&2; exit 2 ;; esac

root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$root/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$root/ansible.cfg"
export ANSIBLE_COLLECTIONS_PATH="$root/collections"
export ANSIBLE_FORCE_COLOR=false

name="hardening-bench-$suite"
port=${HARDENING_BENCH_SSH_PORT:-22022}
work=$(mktemp -d "/tmp/hardening-bench.XXXXXX")
cleanup() {
  podman rm -f -t 0 "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

bash "$root/scripts/build-host-images.sh" "$suite" >/dev/null
podman rm -f -t 0 "$name" >/dev/null 2>&1 || true
# sshd is published on loopback only: ssh-audit is the only client.
podman run -d --name "$name" --systemd=always -p "127.0.0.1:$port:22" \
  "localhost/debian-systemd:$suite" /sbin/init >/dev/null
for _ in $(seq 1 60); do
  state=$(podman exec "$name" systemctl is-system-running 2>/dev/null || true)
  [[ $state == running || $state == degraded ]] && break
  sleep 1
done

cat >"$work/inventory.yml" <<YAML
k3s_server:
  hosts:
    $name:
      ansible_connection: containers.podman.podman
YAML

converge() {
  local log=$1 start end
  start=$(date +%s.%N)
  ansible-playbook -i "$work/inventory.yml" "$root/playbooks/harden.yml" >"$log" 2>&1 \
    || { tail -40 "$log" >&2; echo "bench: converge failed (log above)" >&2; exit 1; }
  end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }'
}

first=$(converge "$work/first.log")
second=$(converge "$work/second.log")
changed=$(grep -Eo 'changed=[0-9]+' "$work/second.log" | tail -1 | cut -d= -f2)

podman exec "$name" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lynis >/dev/null
lynis_index=$(podman exec "$name" lynis audit system --quick --no-colors 2>/dev/null \
  | sed -n 's/.*Hardening index : \([0-9]*\).*/\1/p')

audit=$(ssh-audit -n -p "$port" 127.0.0.1 || true)
fails=$(grep -v '^(rec)' <<<"$audit" | grep -c -- '-- \[fail\]' || true)
warns=$(grep -v '^(rec)' <<<"$audit" | grep -c -- '-- \[warn\]' || true)

printf 'host               debian %s (podman systemd container)\n' "$suite"
printf 'lynis index        %s\n' "${lynis_index:-?}"
printf 'ssh-audit          %s fail, %s warn\n' "$fails" "$warns"
printf 'converge           %ss\n' "$first"
printf 'second run         %ss, changed=%s\n' "$second" "${changed:-?}"
if [[ $fails -gt 0 || $warns -gt 0 ]]; then
  grep -v '^(rec)' <<<"$audit" | grep -E -- '-- \[(fail|warn)\]' | sed 's/^/  /'
fi
