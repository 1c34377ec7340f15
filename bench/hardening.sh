#!/usr/bin/env bash
# Converges a fresh systemd host per Debian release with playbooks/harden.yml and prints,
# side by side, what the hardening buys: the Lynis hardening index and the suggestions
# Lynis still makes, ssh-audit fail/warn counts against the host's sshd with the classic
# key exchange fallback kept (the default) and dropped, the converge time, and the second
# run's time and changed count. The releases run one after the other, so their times
# compare. Lynis's remaining suggestions, the Lynis tests that missed points and the
# ssh-audit findings are written to $HARDENING_BENCH_OUT (default: a temporary directory
# that is removed).
#   usage: bench/hardening.sh [bookworm] [trixie]   (default: both)
set -euo pipefail

suites=()
for arg in "$@"; do
  case "$arg" in
    bookworm|trixie) suites+=("$arg") ;;
    *) echo "usage: $0 [bookworm] [trixie]" >&2; exit 2 ;;
  esac
done
((${#suites[@]})) || suites=(bookworm trixie)

root=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$root/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$root/ansible.cfg"
export ANSIBLE_COLLECTIONS_PATH="$root/collections"
export ANSIBLE_FORCE_COLOR=false

port=${HARDENING_BENCH_SSH_PORT:-22022}
work=$(mktemp -d "/tmp/hardening-bench.XXXXXX")
out=${HARDENING_BENCH_OUT:-$work/out}
mkdir -p "$out"
names=()
cleanup() {
  for name in "${names[@]}"; do podman rm -f -t 0 "$name" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

bash "$root/scripts/build-host-images.sh" "${suites[@]}" >/dev/null

# The hardening stage checks the inventory's contract first; the lab's stands in.
mkdir -p "$work/group_vars/all"
cp "$root/inventories/local/group_vars/all/contract.yml" "$work/group_vars/all/"

# Prints the seconds the run took; a failed run prints its log's tail and stops the bench.
converge() {
  local log=$1 start end
  shift
  start=$(date +%s.%N)
  ansible-playbook -i "$work/inventory.yml" "$root/playbooks/harden.yml" "$@" >"$log" 2>&1 \
    || { tail -40 "$log" >&2; echo "bench: converge failed (log above)" >&2; exit 1; }
  end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }'
}

# Prints "F fail, W warn" for the sshd on $port; the findings go to $1.
ssh_audit() {
  local report=$1 fails warns
  ssh-audit -n -p "$port" 127.0.0.1 | grep -v '^(rec)' >"$report" || true
  fails=$(grep -c -- '-- \[fail\]' "$report" || true)
  warns=$(grep -c -- '-- \[warn\]' "$report" || true)
  echo "$fails fail, $warns warn"
}

declare -A result  # result[<release>/<measure>]
for suite in "${suites[@]}"; do
  name="hardening-bench-$suite"
  names+=("$name")
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

  result[$suite/first]=$(converge "$work/$suite-first.log")
  result[$suite/second]=$(converge "$work/$suite-second.log")
  result[$suite/changed]=$(grep -E "^${name}[[:space:]]+:" "$work/$suite-second.log" | grep -Eo 'changed=[0-9]+' | cut -d= -f2)
  result[$suite/audit_kept]=$(ssh_audit "$out/ssh-audit-$suite-fallback-kept.txt")

  podman exec "$name" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lynis >/dev/null
  result[$suite/lynis]=$(podman exec "$name" lynis audit system --quick --no-colors 2>/dev/null \
    | sed -n 's/.*Hardening index : \([0-9]*\).*/\1/p')
  podman exec "$name" sed -n 's/^suggestion\[\]=//p' /var/log/lynis-report.dat >"$out/lynis-$suite.txt"
  result[$suite/suggestions]=$(wc -l <"$out/lynis-$suite.txt")
  # The tests that did not earn their full points, with the points earned of those possible.
  podman exec "$name" awk '/Performing test ID/ { id = $6 }
    /partial number of hardening points/ { match($0, /\([0-9]+ of [0-9]+\)/); print id, substr($0, RSTART + 1, RLENGTH - 2) }' \
    /var/log/lynis.log >"$out/lynis-$suite-points-missed.txt"
  podman cp "$name:/var/log/lynis.log" "$out/lynis-$suite.log"

  converge "$work/$suite-no-fallback.log" -e '{"hardening_ssh_kex_classic_fallback": false}' >/dev/null
  result[$suite/audit_dropped]=$(ssh_audit "$out/ssh-audit-$suite-fallback-dropped.txt")
  podman rm -f -t 0 "$name" >/dev/null
done

row() {
  local label=$1 measure=$2 suite
  printf '%-32s' "$label"
  for suite in "${suites[@]}"; do printf '%-22s' "${result[$suite/$measure]:-?}"; done
  printf '\n'
}
for suite in "${suites[@]}"; do result[$suite/host]="debian $suite"; done
row "host (podman systemd container)" host
row "lynis hardening index" lynis
row "lynis suggestions left" suggestions
row "ssh-audit, classic fallback" audit_kept
row "ssh-audit, post-quantum only" audit_dropped
row "converge (s)" first
row "second run (s)" second
row "second run changed" changed
for suite in "${suites[@]}"; do
  for report in "$out/ssh-audit-$suite"-*.txt; do
    grep -E -- '-- \[(fail|warn)\]' "$report" | sed "s/^/  $suite $(basename "$report" .txt | sed 's/.*fallback-/fallback /'): /" || true
  done
done
