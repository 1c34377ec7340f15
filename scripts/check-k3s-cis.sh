#!/usr/bin/env bash
# Checks, on a k3s server started by playbooks/k3s.yml, that the CIS hardening is active:
# the flags k3s passed to the API server, kubelet and controller manager (from its journal),
# secrets encryption, Pod Security admission, the audit log, private file modes and a Ready
# node. Run as root on the server; exits non-zero and lists every failed check.
#   usage: sudo scripts/check-k3s-cis.sh [--timeout SECONDS] [--unit k3s]
set -euo pipefail

timeout=300
unit=k3s
while (($#)); do
  case "$1" in
    --timeout) timeout=$2; shift 2 ;;
    --unit) unit=$2; shift 2 ;;
    *) echo "usage: $0 [--timeout SECONDS] [--unit k3s]" >&2; exit 2 ;;
  esac
done

k3s=${K3S_BIN:-/usr/local/bin/k3s}
config_dir=${K3S_CONFIG_DIR:-/etc/rancher/k3s}
kubectl=("$k3s" kubectl --kubeconfig "$config_dir/k3s.yaml")
failures=()

pass() { printf 'PASS  %s\n' "$1"; }
fail() { printf 'FAIL  %s\n' "$1"; failures+=("$1"); }

if [[ $(id -u) -ne 0 && -z ${K3S_CONFIG_DIR:-} ]]; then
  echo "check-k3s-cis: run as root (the files checked are root-only)" >&2
  exit 2
fi

# Wait for the node first: the component flags are logged during start-up.
deadline=$((SECONDS + timeout))
until [[ "$("${kubectl[@]}" get nodes -o jsonpath='{.items[*].status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" =~ ^(True ?)+$ ]]; do
  if ((SECONDS >= deadline)); then
    fail "all nodes Ready within ${timeout}s"
    "${kubectl[@]}" get nodes -o wide || true
    break
  fi
  sleep "${K3S_CHECK_INTERVAL:-5}"
done
((${#failures[@]})) || pass "all nodes Ready"

# k3s logs each component's full command line as "Running <component> --flag=value ...".
journal=$(journalctl -u "$unit" --no-pager -o cat)
component_args() {
  grep -F "Running $1 " <<<"$journal" | tail -n 1
}

check_flags() {
  local component=$1 args flag
  shift
  args=$(component_args "$component")
  if [[ -z $args ]]; then
    fail "$component start-up line in the $unit journal"
    return
  fi
  for flag in "$@"; do
    if grep -qF -- "$flag" <<<"$args"; then
      pass "$component $flag"
    else
      fail "$component $flag"
    fi
  done
}

check_flags kube-apiserver \
  --anonymous-auth=false \
  --profiling=false \
  --enable-admission-plugins=NodeRestriction,EventRateLimit \
  "--admission-control-config-file=$config_dir/psa.yaml" \
  "--audit-policy-file=$config_dir/audit-policy.yaml" \
  --audit-log-path= \
  --audit-log-maxage= \
  --audit-log-maxbackup= \
  --audit-log-maxsize= \
  --encryption-provider-config= \
  --service-account-lookup=true
check_flags kube-controller-manager \
  --terminated-pod-gc-threshold=10 \
  --use-service-account-credentials=true \
  --profiling=false
check_flags kubelet \
  --protect-kernel-defaults=true \
  --streaming-connection-idle-timeout=5m \
  --make-iptables-util-chains=true \
  --event-qps=0 \
  --read-only-port=0

if "$k3s" secrets-encrypt status 2>&1 | grep -q 'Encryption Status: Enabled'; then
  pass "secrets-encrypt status: Enabled"
else
  fail "secrets-encrypt status: Enabled"
fi

# Admission is what matters, not the flag: a privileged pod must be refused.
probe=$("${kubectl[@]}" run cis-psa-probe --namespace default --image=registry.invalid/probe:1 \
  --privileged --restart=Never --dry-run=server 2>&1 || true)
if grep -q 'violates PodSecurity "restricted' <<<"$probe"; then
  pass "Pod Security restricted refuses a privileged pod"
else
  fail "Pod Security restricted refuses a privileged pod ($probe)"
fi

audit_log=$(component_args kube-apiserver | grep -oE -- '--audit-log-path=[^ ]+' | cut -d= -f2 || true)
if [[ -n $audit_log && -s $audit_log ]]; then
  pass "audit log $audit_log is being written"
else
  fail "audit log ${audit_log:-<unset>} is being written"
fi

for file in config.yaml cluster-token agent-token k3s.yaml psa.yaml audit-policy.yaml registries.yaml; do
  path=$config_dir/$file
  if [[ $file == registries.yaml && ! -e $path ]]; then
    continue
  fi
  mode=$(stat -c '%a %U' "$path" 2>/dev/null || echo missing)
  if [[ $mode == "600 root" ]]; then
    pass "$path mode 0600 root"
  else
    fail "$path mode 0600 root (is: $mode)"
  fi
done

main_pid=$(systemctl show -p MainPID --value "$unit")
cmdline=$(tr '\0' ' ' <"/proc/$main_pid/cmdline" 2>/dev/null || true)
if grep -qE -- '(^| )--token( |=|$)' <<<"$cmdline $(systemctl show -p ExecStart --value "$unit")"; then
  fail "no token on the k3s command line"
else
  pass "no token on the k3s command line"
fi

if ((${#failures[@]})); then
  printf '\n%d CIS check(s) failed:\n' "${#failures[@]}"
  printf '  - %s\n' "${failures[@]}"
  exit 1
fi
echo "check-k3s-cis: all checks passed"
