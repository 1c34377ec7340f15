#!/usr/bin/env bash
# Interim local lab (until the lab playbook exists): PostgreSQL 15 and the service
# under gunicorn on 127.0.0.1, all state under .lab/webapp/ (data, logs, pid files,
# the generated database password).
#   usage: scripts/lab.sh up|down|status
#   LAB_PG_PORT (default 55432) and LAB_APP_PORT (default 8000) choose the ports.
# `up` is idempotent: what already runs is kept. `down` removes everything `up` made.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state=$root/.lab/webapp
pg_bin=/usr/lib/postgresql/15/bin
pg_port=${LAB_PG_PORT:-55432}
app_port=${LAB_APP_PORT:-8000}
url="http://127.0.0.1:$app_port"
export PATH="$root/.venv/bin:$PATH"

as_postgres=()
if [[ $(id -u) -eq 0 ]]; then
  # PostgreSQL refuses to run as root.
  as_postgres=(runuser -u postgres --)
fi

log() { echo "lab: $*"; }
die() { echo "lab: $*" >&2; exit 1; }

pg_running() {
  [[ -d $state/pg ]] && "${as_postgres[@]}" "$pg_bin/pg_ctl" -D "$state/pg" status >/dev/null 2>&1
}

app_pid() {
  local pid
  [[ -f $state/gunicorn.pid ]] || return 1
  pid=$(<"$state/gunicorn.pid")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

port_busy() {
  python3 -c 'import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(("127.0.0.1", int(sys.argv[1]))) != 0)' "$1"
}

start_postgres() {
  if pg_running; then
    log "PostgreSQL already runs on 127.0.0.1:$pg_port"
    return
  fi
  if [[ ! -d $state/pg ]]; then
    port_busy "$pg_port" && die "port $pg_port is taken; set LAB_PG_PORT"
    log "creating the PostgreSQL cluster in $state/pg"
    # Trust on the socket is safe: only the server's own user can enter this directory.
    mkdir -m 700 "$state/socket"
    (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$state/db-password")
    if ((${#as_postgres[@]})); then
      chown postgres: "$state" "$state/socket" "$state/db-password"
    fi
    "${as_postgres[@]}" "$pg_bin/initdb" -D "$state/pg" -U webapp --pwfile="$state/db-password" \
      --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >"$state/initdb.log"
    if ((${#as_postgres[@]})); then
      chown root: "$state/db-password"
    fi
  fi
  log "starting PostgreSQL on 127.0.0.1:$pg_port"
  "${as_postgres[@]}" "$pg_bin/pg_ctl" -D "$state/pg" -l "$state/postgres.log" -w -t 60 \
    -o "-p $pg_port -k $state/socket -c listen_addresses=127.0.0.1" start >/dev/null
  if ! "${as_postgres[@]}" psql -X -qAt -h "$state/socket" -p "$pg_port" -U webapp -d postgres \
    -c "SELECT 1 FROM pg_database WHERE datname = 'webapp'" | grep -q 1; then
    "${as_postgres[@]}" psql -X -q -h "$state/socket" -p "$pg_port" -U webapp -d postgres \
      -c "CREATE DATABASE webapp"
  fi
}

app_env() {
  env PGHOST=127.0.0.1 PGPORT="$pg_port" PGUSER=webapp PGDATABASE=webapp \
    PGPASSWORD_FILE="$state/db-password" PYTHONPATH="$root/app" "$@"
}

start_app() {
  if app_pid >/dev/null; then
    log "the service already runs (pid $(app_pid))"
    return
  fi
  port_busy "$app_port" && die "port $app_port is taken; set LAB_APP_PORT"
  log "applying migrations"
  app_env python3 -m webapp.migrate --wait 10 >>"$state/migrate.log"
  log "starting the service under gunicorn on $url"
  mkdir -p "$state/prometheus"
  app_env PROMETHEUS_MULTIPROC_DIR="$state/prometheus" GUNICORN_BIND="127.0.0.1:$app_port" \
    setsid gunicorn -c "$root/app/gunicorn.conf.py" --chdir "$root/app" \
    --pid "$state/gunicorn.pid" webapp.wsgi:app >>"$state/webapp.log" 2>&1 </dev/null &
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$url/readyz" 2>/dev/null && return
    sleep 0.2
  done
  tail -n 20 "$state/webapp.log" >&2
  die "the service did not become ready; see $state/webapp.log"
}

up() {
  command -v gunicorn >/dev/null || die "gunicorn not found: run make setup"
  mkdir -p "$state"
  start_postgres
  start_app
  cat <<MSG

The service runs. Open it in a browser:
  $url/            the items page
  $url/openapi.json, $url/metrics, $url/readyz
Logs: $state/webapp.log   Stop and remove: make lab-down
MSG
}

down() {
  local pid
  if pid=$(app_pid); then
    log "stopping the service (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
  fi
  if pg_running; then
    log "stopping PostgreSQL"
    "${as_postgres[@]}" "$pg_bin/pg_ctl" -D "$state/pg" -m fast -w stop >/dev/null
  fi
  rm -rf "$state"
  rmdir "$root/.lab" 2>/dev/null || true
  log "removed $state"
}

status() {
  if pg_running; then log "PostgreSQL: running on 127.0.0.1:$pg_port"; else log "PostgreSQL: stopped"; fi
  if app_pid >/dev/null; then log "service: running at $url"; else log "service: stopped"; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
