#!/usr/bin/env bash
# Times the main job on the local lab the way a user meets it: a first `make lab` from
# nothing, a second one with nothing to change, a `--check --diff` run, one stage by its
# tag, a rolling update of the service, and `make lab-down`. Prints each time and the
# changed count of each run, and how long the service's pods took from creation to Ready.
#   usage: bench/lab.sh [agents]   (agents: 0 or 1, default 1)
# Needs `make setup` done and no lab running in this checkout.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export LAB_AGENTS=${1:-1}
if [[ -d .lab ]]; then
  echo "bench: a lab runs here (.lab exists): make lab-down first" >&2
  exit 1
fi
work=$(mktemp -d /tmp/lab-bench.XXXXXX)
trap 'bash scripts/lab.sh down >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
# The kubeconfig and the service's namespace, as CD takes them: from the inventory's contract.
PATH="$root/.venv/bin:$PATH" ANSIBLE_CONFIG="$root/ansible.cfg" ansible-playbook playbooks/contract.yml \
  -i inventories/local/hosts.yml -e "contract_env_file=$work/contract.env" >/dev/null
# shellcheck source=/dev/null  # written just above by the contract check
set -a && source "$work/contract.env" && set +a

# step NAME COMMAND...: run it, keep its log, print seconds and the summed changed count
# (with the lab's own playbooks, lab.yml and lab-ready.yml, whose logs lab.sh keeps in .lab/).
step() {
  local name=$1 start end changed log
  shift
  touch "$work/started"
  start=$(date +%s.%N)
  "$@" >"$work/$name.log" 2>&1 || { tail -40 "$work/$name.log" >&2; echo "bench: $name failed" >&2; exit 1; }
  end=$(date +%s.%N)
  for log in .lab/lab.log .lab/lab-ready.log; do
    if [[ "$log" -nt "$work/started" ]]; then cat "$log" >>"$work/$name.log"; fi
  done
  changed=$(awk 'match($0, /changed=[0-9]+/) { n += substr($0, RSTART + 8, RLENGTH - 8); seen = 1 }
                END { print seen ? n : "-" }' "$work/$name.log")
  awk -v n="$name" -v s="$start" -v e="$end" -v c="$changed" 'BEGIN { printf "%-16s %7.1f s   changed=%s\n", n, e - s, c }'
}

echo "bench: local lab with $LAB_AGENTS agent(s), $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
step "first up" bash scripts/lab.sh up
step "second up" bash scripts/lab.sh up
step "check --diff" bash scripts/lab.sh up --check --diff
step "--tags deploy" bash scripts/lab.sh up --tags deploy
# From the pods' own records: creation to the Ready condition, per serving pod (not the
# ones stopping, nor those not Ready yet).
pod_ready() {
  local created ready deleting
  kubectl -n "$APP_NAMESPACE" get pods -l app.kubernetes.io/component=server -o \
    jsonpath='{range .items[*]}{.metadata.creationTimestamp} {.status.conditions[?(@.type=="Ready")].status}={.status.conditions[?(@.type=="Ready")].lastTransitionTime} {.metadata.deletionTimestamp}{"\n"}{end}' |
    while read -r created ready deleting; do
      [[ -z "$deleting" && "$ready" == True=* ]] || continue
      printf '%s ' $(($(date -d "${ready#True=}" +%s) - $(date -d "$created" +%s)))
    done
}
echo "pod start to Ready (s): $(pod_ready)"
# shellcheck disable=SC2016  # APP_NAMESPACE is exported: the child shell expands it
step "rolling update" bash -c 'kubectl -n "$APP_NAMESPACE" rollout restart deployment/webapp &&
  kubectl -n "$APP_NAMESPACE" rollout status deployment/webapp --timeout=300s'
echo "pod start to Ready after the update (s): $(pod_ready)"
step "down" bash scripts/lab.sh down
