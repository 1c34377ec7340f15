#!/usr/bin/env bash
# The local lab: playbooks/site.yml run on this machine with stand-ins for AWS.
#   scripts/lab.sh up [OPTIONS]   start the stand-ins, run the main job, print the URLs
#   scripts/lab.sh run PLAYBOOK [OPTIONS]
#                                 one stage's playbook against the running lab
#   scripts/lab.sh down           remove every container, process, file and moto resource the lab made
#   scripts/lab.sh status         show what runs
# OPTIONS go to ansible-playbook: --check --diff, --tags k3s, --limit NODE, ...
#
# Stand-ins: moto (AWS API), podman systemd containers (the EC2 nodes, named after
# the instances' Name tags, on their own podman network and reached over SSH as
# `admin` with the key pair's key, as on EC2: playbooks/lab.yml makes them from the
# inventory's values), a local PostgreSQL 15 (RDS), Pebble
# (Let's Encrypt), and —
# when no k3s can be had — what k3s embeds, built from Go modules (tests/controlplane):
# the control plane on this machine, and containerd, the kubelet and kube-proxy on each
# node container, which run the service's pods. Settings (environment): LAB_MOTO_PORT,
# LAB_PG_PORT, LAB_API_PORT, LAB_ACME_MANAGEMENT_PORT, LAB_ACME_DNS_PORT,
# LAB_ACME_DNS_MANAGEMENT_PORT, LAB_AGENTS (0 or 1), LAB_COLLECTIONS_PATH, K3S_ARTIFACT_PATH
# (a k3s binary with sha256sum-amd64.txt beside it) or LAB_K3S_DOWNLOAD=1 (machines with
# internet): run the real k3s in the node containers instead.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export PATH="$repo/.venv/bin:$repo/.cache/bin:/usr/local/go/bin:$PATH"
export ANSIBLE_CONFIG="$repo/ansible.cfg"
# LAB_COLLECTIONS_PATH: run an installed devsecops.k3s_ec2 (scripts/build-collection.sh, then
# ansible-galaxy collection install -p DIR) instead of the repository's collections/.
if [[ -n "${LAB_COLLECTIONS_PATH:-}" ]]; then export ANSIBLE_COLLECTIONS_PATH="$LAB_COLLECTIONS_PATH"; fi

state="$repo/.lab"
# PostgreSQL refuses to run as root and needs a directory its own user owns.
pg_state="/var/tmp/k3s-ec2-lab-postgres"
moto_port="${LAB_MOTO_PORT:-5055}"
# inventories/local (its aws_ec2 source and group_vars) reads moto's address from here.
export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port"
pg_port="${LAB_PG_PORT:-5433}"
api_port="${LAB_API_PORT:-16443}"
# The ACME CA's management API (its root) and its DNS stand-in, on this machine only; its
# directory is where the inventory says (k3s_traefik_acme_server).
acme_management_port="${LAB_ACME_MANAGEMENT_PORT:-15000}"
acme_dns_port="${LAB_ACME_DNS_PORT:-8053}"
acme_dns_management_port="${LAB_ACME_DNS_MANAGEMENT_PORT:-8055}"
agents="${LAB_AGENTS:-0}"
[[ "$agents" == 0 || "$agents" == 1 ]] || { echo "lab: LAB_AGENTS must be 0 or 1 (inventories/local/host_vars has one agent)" >&2; exit 2; }
artifact="${K3S_ARTIFACT_PATH:-}"
download="${LAB_K3S_DOWNLOAD:-0}"
network=k3s-ec2-lab
# The service's image: the lab builds it and the nodes import it (with the real k3s, from
# its airgap images directory, as it does LAB_K3S_IMAGES: k3s's own
# k3s-airgap-images-amd64.tar, for machines without internet).
k3s_images="${LAB_K3S_IMAGES:-}"
lab_image="${LAB_IMAGE:-ghcr.io/devsecops/webapp:sha-$(git rev-parse --short=12 HEAD 2>/dev/null || echo 000000000000)}"

log() { printf 'lab: %s\n' "$*"; }
die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

mode() {
  if [[ -n "$artifact" || "$download" == 1 ]]; then echo k3s; else echo controlplane; fi
}

# --- stand-ins -----------------------------------------------------------------

# The service's image, built here from Debian packages and the repository's app/, saved
# for the nodes to import (no registry is needed).
build_app_image() {
  mkdir -p "$state/images"
  # The archive of this checkout's image: a commit since the last `up` names another.
  [[ -s "$state/images/webapp.tar" && "$(cat "$state/images/webapp.oci-ref" 2>/dev/null)" == "$lab_image" ]] && return
  bash scripts/build-base-image.sh >/dev/null
  if ! podman image exists "$lab_image"; then
    log "building the service image $lab_image"
    local -a secret=()
    # Behind a TLS-inspecting proxy pip needs this machine's CA bundle (never stored in a layer).
    local ca=/etc/ssl/certs/ca-certificates.crt
    [[ -s "$ca" ]] && secret=(--secret "id=pip_ca,src=$ca")
    podman build --quiet --pull=never --layers=false --network=host "${secret[@]}" \
      --build-arg BASE_IMAGE=localhost/webapp-python:3.11-bookworm \
      -t "$lab_image" -f app/Containerfile app >/dev/null
    echo "$lab_image" >"$state/images/built-by-lab"
  fi
  # Named by its tag and by its digest (tests/support/oci.py): the policy admits only the
  # digest, and the CRI finds an image by digest only under such a name.
  podman save --quiet --format oci-archive -o "$state/images/webapp.tar" "$lab_image"
  python -m tests.support.oci name-by-digest "$state/images/webapp.tar" >/dev/null
  echo "$lab_image" >"$state/images/webapp.oci-ref"
}

# The stand-ins with state, from the inventory's own values (playbooks/lab.yml): the nodes,
# their network, the key pair and the secrets, moto with the database secret, the database
# stand-in with its TLS, the control plane, the ACME CA, and the main job's extra vars; with the
# control plane, the nodes joined to it with the images imported, and Traefik. Its log is kept.
# The network's name and the database stand-in's directory are lab.sh's (lab-down.yml removes them).
make_stand_ins() {
  log "making the nodes, moto, the database stand-in, the control plane and the ACME CA, joining the nodes (playbooks/lab.yml, log in $state/lab.log)"
  if ! ansible-playbook playbooks/lab.yml -i inventories/local/hosts.yml -e lab_state="$state" -e lab_mode="$(mode)" \
    -e lab_network="$network" -e lab_pg_state="$pg_state" -e lab_api_port="$api_port" \
    -e lab_agents="$agents" -e lab_pg_port="$pg_port" -e lab_image_ref="$(python -m tests.support.oci name-by-digest "$state/images/webapp.tar")" \
    -e lab_k3s_artifact="$artifact" -e lab_k3s_images="$k3s_images" -e lab_acme_management_port="$acme_management_port" \
    -e lab_acme_dns_port="$acme_dns_port" -e lab_acme_dns_management_port="$acme_dns_management_port" >"$state/lab.log" 2>&1; then
    tail -n 30 "$state/lab.log" >&2
    die "playbooks/lab.yml failed (above; all of it in $state/lab.log)"
  fi
}

# Every process, container, network, image, kernel value and file the lab made
# (playbooks/lab-down.yml; its log is shown when it fails: the state directory goes with it).
remove_stand_ins() {
  local output
  if ! output=$(ansible-playbook playbooks/lab-down.yml -i inventories/local/hosts.yml -e lab_state="$state" \
    -e lab_pg_state="$pg_state" -e lab_network="$network" 2>&1); then
    tail -n 30 <<<"$output" >&2
    die "playbooks/lab-down.yml failed (above)"
  fi
}

# Without its state directory a lab cannot reuse what an earlier one left (the database
# password is gone with it): remove such leftovers and start clean.
clear_leftovers() {
  [[ -d "$state" ]] && return
  remove_stand_ins
}

# The parts built here: the host image, and the control plane, Pebble, Traefik and Prometheus
# (scripts/build-controlplane.sh, a no-op when built); with the control plane, Traefik's and the
# monitoring stand-ins' images (tests/support/labingress.py, labmonitoring.py).
build_parts() {
  bash scripts/build-host-images.sh bookworm >/dev/null
  if ! alive "$state/pebble.pid" || ! alive "$state/acme-dns.pid" || { [[ "$(mode)" == controlplane ]] && ! alive "$state/controlplane.pid"; }; then
    bash scripts/build-controlplane.sh
  fi
  if [[ "$(mode)" == controlplane ]]; then
    python -m tests.support.labingress image "$state/images" >/dev/null
    python -m tests.support.labmonitoring image "$state/images" >/dev/null
  fi
}

up() {
  clear_leftovers
  install -d -m 0700 "$state"
  build_app_image
  build_parts
  make_stand_ins
  play playbooks/site.yml "$@"
  lab_ready
  cat "$state/summary.txt"
}

# After the main job (playbooks/lab-ready.yml; TAGS given, only those): the monitoring
# stand-ins, the Ingress host's certificate, the write credential, the summary.
lab_ready() {
  if ! ansible-playbook playbooks/lab-ready.yml -i inventories/local/hosts.yml -e "@$state/lab-vars.yml" -e lab_state="$state" \
    "$@" >"$state/lab-ready.log" 2>&1; then
    tail -n 30 "$state/lab-ready.log" >&2
    die "playbooks/lab-ready.yml failed (above; all of it in $state/lab-ready.log)"
  fi
}

# A playbook with the lab's inventory, the stand-ins' values and the secrets from .lab/.
play() {
  local playbook=$1
  shift
  log "running $playbook -i inventories/local $*${ANSIBLE_COLLECTIONS_PATH:+ with the collections in $ANSIBLE_COLLECTIONS_PATH}"
  GRAFANA_ADMIN_PASSWORD="$(cat "$state/grafana-password")" K3S_EC2_PUBLIC_KEY_FILE="$state/ssh/id_ed25519.pub" \
    ansible-playbook "$playbook" -i inventories/local -e "@$state/lab-vars.yml" "$@"
}

run() {
  [[ $# -ge 1 ]] || die "usage: $0 run PLAYBOOK [ansible-playbook options]"
  if [[ ! -f "$state/lab-vars.yml" ]] || ! alive "$state/moto.pid"; then die "no lab runs here: make lab first"; fi
  play "$@"
  lab_ready --tags lab_monitoring
}

down() {
  # What the playbook made in (moto's) AWS goes the way a user's would: the teardown.
  if alive "$state/moto.pid" && [[ -f "$state/lab-vars.yml" ]]; then
    if ! ansible-playbook playbooks/teardown.yml -i inventories/local -e "@$state/lab-vars.yml" >"$state/teardown.log" 2>&1; then
      tail -n 20 "$state/teardown.log" >&2
      log "the teardown against moto failed (above); removing the stand-ins anyway"
    fi
  fi
  remove_stand_ins
  log "removed the lab's containers, processes and files"
}

status() {
  local pidfile
  for pidfile in "$state"/*.pid; do
    [[ -e "$pidfile" ]] || continue
    if alive "$pidfile"; then echo "$(basename "$pidfile" .pid): running"; else echo "$(basename "$pidfile" .pid): stopped"; fi
  done
  podman ps -a --filter network="$network" --format '{{.Names}}: {{.Status}}'
}

case "${1:-}" in
  up) shift; up "$@" ;;
  run) shift; run "$@" ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up [ansible-playbook options] | run PLAYBOOK [options] | down | status" >&2; exit 2 ;;
esac
