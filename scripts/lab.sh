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
pg_bin=/usr/lib/postgresql/15/bin
# The service's image: the lab builds it and the nodes import it (with the real k3s, from
# its airgap images directory, as it does LAB_K3S_IMAGES: k3s's own
# k3s-airgap-images-amd64.tar, for machines without internet).
k3s_images="${LAB_K3S_IMAGES:-}"
lab_image="${LAB_IMAGE:-ghcr.io/devsecops/webapp:sha-$(git rev-parse --short=12 HEAD 2>/dev/null || echo 000000000000)}"

# The values the main job reads too (addresses and names) come from the local inventory:
# playbooks/lab.yml writes them to lab.env, one NAME=VALUE per line, beside the extra vars it
# writes for the main job. These are all it writes.
lab_values=(gateway server server_address node_specs app_nodeport app_namespace kubeconfig
  ingress_host acme_ca_configmap acme_ca_file)
gateway='' server='' server_address='' node_specs='' app_nodeport='' app_namespace='' kubeconfig=''
ingress_host='' acme_ca_configmap='' acme_ca_file=''
load_values() {
  local name value
  while IFS='=' read -r name value; do
    [[ " ${lab_values[*]} " == *" $name "* ]] || die "$state/lab.env names an unknown value: $name"
    printf -v "$name" '%s' "$value"
  done <"$state/lab.env"
}

log() { printf 'lab: %s\n' "$*"; }
die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$what did not come up in time"
    sleep 0.5
  done
}

mode() {
  if [[ -n "$artifact" || "$download" == 1 ]]; then echo k3s; else echo controlplane; fi
}

# --- stand-ins -----------------------------------------------------------------

# The base64 SHA-256 of a certificate's public key: what Chromium's
# --ignore-certificate-errors-spki-list trusts.
spki_pin() {
  openssl x509 -in "$1" -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64
}

# Traefik got the Ingress host's certificate from the ACME CA once HTTPS to the server node
# verifies against the CA's root; the root and intermediate are kept for curl and Chromium.
wait_for_acme_certificate() {
  local dir="$state/acme"
  curl -sf --cacert "$dir/ca.pem" "https://127.0.0.1:$acme_management_port/roots/0" -o "$dir/root.pem"
  curl -sf --cacert "$dir/ca.pem" "https://127.0.0.1:$acme_management_port/intermediates/0" -o "$dir/intermediate.pem"
  wait_for 180 "the Ingress host's certificate from the ACME CA" curl -sf --cacert "$dir/root.pem" \
    --resolve "$ingress_host:443:$server_address" "https://$ingress_host/healthz"
}

# The newest write credential, for the user signing in on the page or curl with
# Authorization: Bearer (playbooks/lab-credential.yml reads it as the deployment does).
save_writer_credential() {
  ansible-playbook playbooks/lab-credential.yml -i inventories/local/hosts.yml -e "@$state/lab-vars.yml" -e lab_state="$state" \
    >"$state/lab-credential.log" 2>&1 || {
    tail -n 20 "$state/lab-credential.log" >&2
    die "playbooks/lab-credential.yml failed (above)"
  }
  if [[ -s "$state/writer-credential" ]]; then
    log "writes need a credential: sign in on the page (or send Authorization: Bearer) with the one in $state/writer-credential"
  fi
}

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
# stand-in with its TLS, the control plane, the ACME CA, and the main job's extra vars. Its log
# is kept. The network's name and the database stand-in's directory are lab.sh's (down removes them).
make_stand_ins() {
  bash scripts/build-host-images.sh bookworm >/dev/null
  # The ACME CA (Pebble) is built with the control plane.
  if ! alive "$state/pebble.pid" || ! alive "$state/acme-dns.pid" || { [[ "$(mode)" == controlplane ]] && ! alive "$state/controlplane.pid"; }; then
    bash scripts/build-controlplane.sh
  fi
  log "making the nodes, moto, the database stand-in, the control plane and the ACME CA (playbooks/lab.yml, log in $state/lab.log)"
  if ! ansible-playbook playbooks/lab.yml -i inventories/local/hosts.yml -e lab_state="$state" -e lab_mode="$(mode)" \
    -e lab_network="$network" -e lab_pg_state="$pg_state" -e lab_api_port="$api_port" \
    -e lab_agents="$agents" -e lab_pg_port="$pg_port" -e lab_image_ref="$(archive_ref "$state/images/webapp.tar")" \
    -e lab_k3s_artifact="$artifact" -e lab_k3s_images="$k3s_images" -e lab_acme_management_port="$acme_management_port" \
    -e lab_acme_dns_port="$acme_dns_port" -e lab_acme_dns_management_port="$acme_dns_management_port" >"$state/lab.log" 2>&1; then
    tail -n 30 "$state/lab.log" >&2
    die "playbooks/lab.yml failed (above; all of it in $state/lab.log)"
  fi
  load_values
}

# k3s ships the HelmChart CRD and the chart brings the Prometheus operator's; with no
# helm-controller here, minimal stand-ins of those CRDs let the objects be stored.
apply_stub_crds() {
  kubectl --kubeconfig "$kubeconfig" apply --server-side -f tests/monitoring/stub-crds.yml >/dev/null
}

# The kubelet resets host-wide kernel values when it starts (tests/support/node.py names
# them): the values this machine had before the first node joined are put back after
# each join and at `down`.
host_sysctls() { python -m tests.support.node "$1-sysctls" "$state/host-sysctls.json"; }

node_ready() {
  [[ "$(kubectl --kubeconfig "$kubeconfig" get node "$1" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

# containerd, the kubelet and kube-proxy on every node, with the service's image imported.
join_nodes() {
  local name spec pending=0
  local -a specs names=()
  read -r -a specs <<<"$node_specs"
  for spec in "${specs[@]}"; do
    names+=("${spec%%=*}")
    node_ready "${spec%%=*}" || pending=1
  done
  if ((pending == 0)); then
    log "the nodes are Ready"
  else
    host_sysctls save
    log "joining the nodes (containerd, kubelet, kube-proxy, NetworkPolicy enforcement), importing the service's image, deploying CoreDNS"
    python -m tests.support.node join "$state/controlplane" "https://$gateway:$api_port" "$state/images" "${specs[@]}"
    host_sysctls restore
  fi
  # A later commit names a new image: Ready nodes import it too.
  local archive
  local -A ref=()
  for archive in "$state/images/webapp.tar" "$state/images/lab-monitoring.tar" "$state/images/lab-ingress.tar"; do
    ref[$archive]=$(archive_ref "$archive")
  done
  for name in "${names[@]}"; do
    for archive in "${!ref[@]}"; do
      node_has_image "$name" "${ref[$archive]}" && continue
      log "importing the image ${ref[$archive]} on $name"
      podman cp "$archive" "$name:/tmp/image.tar"
      podman exec "$name" /opt/node/bin/controlplane ctr --namespace k8s.io images import /tmp/image.tar >/dev/null
      podman exec "$name" rm -f /tmp/image.tar
    done
  done
}

node_images() {
  podman exec "$1" /opt/node/bin/controlplane ctr --namespace k8s.io images ls 2>/dev/null
}

# By its digest name: the tag may name another build (LAB_IMAGE rebuilt), the digest cannot.
archive_ref() { python -m tests.support.oci name-by-digest "$1"; }

node_has_image() { # node_has_image NODE IMAGE_REF
  node_images "$1" | awk -v ref="$2" '$1 == ref { found = 1 } END { exit !found }'
}

# Without its state directory a lab cannot reuse what an earlier one left (the database
# password is gone with it): remove such leftovers and start clean.
clear_leftovers() {
  [[ -d "$state" ]] && return
  if [[ -d "$pg_state" ]]; then
    log "removing a PostgreSQL stand-in left by an earlier lab"
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_state/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$pg_state"
  fi
  local name
  while read -r name; do
    log "removing node container $name left by an earlier lab"
    podman rm -f "$name" >/dev/null 2>&1 || true
  done < <(podman ps -a --filter label=k3s-ec2-lab=1 --format '{{.Names}}')
}

up() {
  clear_leftovers
  install -d -m 0700 "$state"
  build_app_image
  # The nodes' network first: the database stand-in and the control plane listen on its gateway.
  make_stand_ins
  if [[ "$(mode)" == controlplane ]]; then
    build_monitoring_image
    build_ingress_image
    apply_stub_crds
    join_nodes
    start_ingress
  fi
  play playbooks/site.yml "$@"
  start_lab_monitoring
  if [[ "$(mode)" == controlplane ]]; then wait_for_acme_certificate; fi
  save_writer_credential
  if [[ "$(mode)" == controlplane ]]; then
    cat <<EOF

lab: no k3s artifact here, so the cluster is what k3s embeds, built from Go modules: the
lab: control plane on this machine; containerd, kubelet, kube-proxy and NetworkPolicy
lab: enforcement (kube-network-policies) on the node containers; CoreDNS as the cluster DNS.
lab: The service's pods serve it on the NodePort and, through Traefik, on the Ingress host:
lab:   http://$server_address:$app_nodeport/
lab:   https://$ingress_host/   resolved to the server node, with a certificate Traefik got from the
lab: lab's ACME CA (Pebble, standing in for Let's Encrypt); for example:
  curl --resolve $ingress_host:443:$server_address --cacert $state/acme/root.pem https://$ingress_host/
  chromium --user-data-dir="\$(mktemp -d)" --host-resolver-rules='MAP $ingress_host $server_address' --ignore-certificate-errors-spki-list=$(spki_pin "$state/acme/intermediate.pem") https://$ingress_host/
lab: Prometheus and Alertmanager, as pods standing in for the monitoring chart:
lab:   http://$server_address:$(lab_monitoring_port PROMETHEUS_NODEPORT)/  http://$server_address:$(lab_monitoring_port ALERTMANAGER_NODEPORT)/
lab: Not in this lab: Grafana (its image cannot be had here; the dashboard is validated
lab: against the real Prometheus by the tests).
lab: kubeconfig: $kubeconfig   (kubectl --kubeconfig $kubeconfig get pods -n $app_namespace -o wide)
lab: Give K3S_ARTIFACT_PATH=/path/to/k3s (or LAB_K3S_DOWNLOAD=1 with internet) to run the real k3s instead.
EOF
  fi
}

# k3s runs Traefik from its bundled chart before anything is deployed; the lab runs it from its
# Go module (tests/support/labingress.py) as soon as the nodes joined.
build_ingress_image() {
  python -m tests.support.labingress image "$state/images" >/dev/null
}

start_ingress() {
  log "Traefik (from its Go module) on the server node's ports 80 and 443, as k3s runs it"
  # Traefik checks the ACME CA's certificate against the lab's CA: the inventory's
  # k3s_traefik_values mount this ConfigMap.
  kubectl --kubeconfig "$kubeconfig" -n kube-system create configmap "$acme_ca_configmap" --from-file="$acme_ca_file=$state/acme/ca.pem" \
    --dry-run=client -o yaml | kubectl --kubeconfig "$kubeconfig" apply --server-side --field-manager=k3s-ec2-lab -f - >/dev/null
  python -m tests.support.labingress apply "$kubeconfig" "$(archive_ref "$state/images/lab-ingress.tar")" "$server"
}

# The kube-prometheus-stack chart cannot be had here: Prometheus (built from its Go module) and
# Debian's Alertmanager stand in for it, as pods configured from the objects the monitoring
# role stored (tests/support/labmonitoring.py), after every run: a run that left the stage out
# (--tags, --skip-tags, --check on a new lab) finds its objects as before, or none, and
# starts nothing then.
lab_monitoring_port() { python -c "from tests.support import labmonitoring; print(labmonitoring.$1)"; }

build_monitoring_image() {
  python -m tests.support.labmonitoring image "$state/images" >/dev/null
}

start_lab_monitoring() {
  # The lab that runs, not this shell's environment: `run` needs no K3S_ARTIFACT_PATH.
  grep -qx 'lab_mode: controlplane' "$state/lab-vars.yml" && [[ -f "$kubeconfig" ]] || return 0
  log "Prometheus (from its Go module) and Alertmanager (Debian's) as pods, configured from the monitoring role's objects"
  local image
  image=$(archive_ref "$state/images/lab-monitoring.tar")
  python -m tests.support.labmonitoring apply "$kubeconfig" "$image"
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
  load_values
  start_lab_monitoring
}

down() {
  local pidfile name
  # What the playbook made in (moto's) AWS goes the way a user's would: the teardown.
  if alive "$state/moto.pid" && [[ -f "$state/lab-vars.yml" ]]; then
    if ! ansible-playbook playbooks/teardown.yml -i inventories/local -e "@$state/lab-vars.yml" >"$state/teardown.log" 2>&1; then
      tail -n 20 "$state/teardown.log" >&2
      log "the teardown against moto failed (above); removing the stand-ins anyway"
    fi
  fi
  for pidfile in "$state/controlplane.pid" "$state/moto.pid" "$state/pebble.pid" "$state/acme-dns.pid"; do
    if alive "$pidfile"; then
      kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
      for _ in $(seq 1 40); do alive "$pidfile" || break; sleep 0.25; done
      if alive "$pidfile"; then kill -KILL "$(cat "$pidfile")" 2>/dev/null || true; fi
    fi
  done
  if [[ -d "$pg_state/data" ]]; then
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_state/data" -m fast stop >/dev/null 2>&1 || true
  fi
  while read -r name; do podman rm -f -v "$name" >/dev/null 2>&1 || true; done < <(podman ps -a --filter label=k3s-ec2-lab=1 --format '{{.Names}}')
  if [[ -s "$state/host-sysctls.json" ]]; then host_sysctls restore; fi
  if podman network exists "$network"; then podman network rm "$network" >/dev/null; fi
  if [[ -s "$state/images/built-by-lab" ]]; then podman rmi -f "$(cat "$state/images/built-by-lab")" >/dev/null 2>&1 || true; fi
  rm -rf "$pg_state" "$state"
  log "removed the lab's containers, processes and files"
}

status() {
  local pidfile
  for pidfile in moto controlplane pebble acme-dns; do
    if alive "$state/$pidfile.pid"; then echo "$pidfile: running"; else echo "$pidfile: stopped"; fi
  done
  podman ps -a --filter label=k3s-ec2-lab=1 --format '{{.Names}}: {{.Status}}'
}

case "${1:-}" in
  up) shift; up "$@" ;;
  run) shift; run "$@" ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up [ansible-playbook options] | run PLAYBOOK [options] | down | status" >&2; exit 2 ;;
esac
