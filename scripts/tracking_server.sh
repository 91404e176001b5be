#!/usr/bin/env bash
# A team MLflow tracking server on PostgreSQL, everything in one folder of your choosing.
#
#   scripts/tracking_server.sh start DIR    install Debian's postgresql if missing; create a cluster in DIR/pgdata
#                                           (first start), bound to 127.0.0.1, user "mlflow" with a random password
#                                           kept in DIR/pgpass (mode 600, never on a command line); start it and
#                                           `mlflow server` on it (artifacts in DIR/artifacts); print the URL
#   scripts/tracking_server.sh stop DIR     stop both, by their pid files
#   scripts/tracking_server.sh status DIR   whether each runs, and the URL
#
# Environment: TRACKING_SERVER_HOST (default 127.0.0.1), TRACKING_SERVER_PORT (default 5000),
# TRACKING_SERVER_WORKERS (default 4), TRACKING_PG_PORT (default: a free port, kept in DIR/pg_port).
# A host other than 127.0.0.1 turns on MLflow's basic-auth app: the admin's credentials are generated into
# DIR/credentials (mode 600; "username=..." and "password=..." lines), which jobs read with
# logger.credentials_file=DIR/credentials (docs/cluster.md). Unauthenticated, the server listens on 127.0.0.1 only.
# As root, PostgreSQL runs as the "postgres" user (it refuses root): DIR must then be reachable by that user.
set -euo pipefail

# shellcheck source=scripts/messages.sh
. "$(dirname "$0")/messages.sh" tracking_server "{start|stop|status} DIR"
[ $# -eq 2 ] || usage
action=$1
dir=$2
host=${TRACKING_SERVER_HOST:-127.0.0.1}
port=${TRACKING_SERVER_PORT:-5000}
workers=${TRACKING_SERVER_WORKERS:-4}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}


pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

install_postgresql() {
  [ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/initdb" ] && return
  [ "$(id -u)" -eq 0 ] || die "PostgreSQL is not installed; run as root or 'sudo apt-get install postgresql'"
  command -v apt-get >/dev/null || die "PostgreSQL is not installed and apt-get is unavailable: install it by hand"
  log "installing postgresql (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq </dev/null
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends postgresql </dev/null >/dev/null
}

# Runs a PostgreSQL tool as the cluster's owner: "postgres" when we are root (the server refuses root).
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
free_port() { "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

init_cluster() {
  [ -d "$dir/pgdata" ] && return
  local bin password
  bin=$(pg_bin)
  password=$("$python" -c 'import secrets; print(secrets.token_urlsafe(24))')
  (umask 077 && printf '%s\n' "$password" >"$dir/pg_password.tmp")
  mkdir -p "$dir/pgdata"
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir/pgdata" "$dir/pg_password.tmp"; fi
  as_owner "$bin/initdb" -D "$dir/pgdata" -U mlflow --pwfile="$dir/pg_password.tmp" \
    --auth-host=scram-sha-256 --auth-local=scram-sha-256 >"$dir/initdb.log" 2>&1 || die "initdb failed: $dir/initdb.log"
  rm -f "$dir/pg_password.tmp"
  free_port >"$dir/pg_port"
  # libpq reads the password from this file (PGPASSFILE): never on a command line, never in a URI
  (umask 077 && printf '127.0.0.1:%s:*:mlflow:%s\n' "$(cat "$dir/pg_port")" "$password" >"$dir/pgpass")
}

start_postgresql() {
  local bin pg_port
  bin=$(pg_bin)
  pg_port=${TRACKING_PG_PORT:-$(cat "$dir/pg_port")}
  if ! as_owner "$bin/pg_ctl" -D "$dir/pgdata" status >/dev/null 2>&1; then
    [ "$(id -u)" -eq 0 ] && touch "$dir/postgresql.log" && chown postgres "$dir/postgresql.log"
    as_owner "$bin/pg_ctl" -D "$dir/pgdata" -l "$dir/postgresql.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $dir/pgdata" start >/dev/null ||
      die "PostgreSQL did not start: $dir/postgresql.log"
  fi
  export PGPASSFILE=$dir/pgpass
  if ! psql -h 127.0.0.1 -p "$pg_port" -U mlflow -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='mlflow'" | grep -q 1; then
    psql -h 127.0.0.1 -p "$pg_port" -U mlflow -d postgres -qc "CREATE DATABASE mlflow" >/dev/null
  fi
}

write_auth_config() {
  if [ ! -f "$dir/credentials" ]; then
    local password
    password=$("$python" -c 'import secrets; print(secrets.token_urlsafe(18))')
    (umask 077 && printf 'username=admin\npassword=%s\n' "$password" >"$dir/credentials")
  fi
  # the basic-auth app's CSRF protection needs a key that stays the same across restarts and workers
  if [ ! -f "$dir/flask_secret_key" ]; then
    (umask 077 && "$python" -c 'import secrets; print(secrets.token_hex(32))' >"$dir/flask_secret_key")
  fi
  local user pass
  user=$(sed -n 's/^username=//p' "$dir/credentials")
  pass=$(sed -n 's/^password=//p' "$dir/credentials")
  (umask 077 && printf '[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///%s/auth.db\nadmin_username = %s\nadmin_password = %s\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n' \
    "$dir" "$user" "$pass" >"$dir/basic_auth.ini")
}

start_mlflow() {
  pid_alive "$dir/mlflow.pid" && return
  local mlflow pg_port extra=()
  mlflow=$(dirname "$(command -v "$python")")/mlflow
  pg_port=${TRACKING_PG_PORT:-$(cat "$dir/pg_port")}
  mkdir -p "$dir/artifacts"
  if [ "$host" != "127.0.0.1" ] && [ "$host" != "localhost" ]; then
    write_auth_config
    export MLFLOW_AUTH_CONFIG_PATH=$dir/basic_auth.ini
    MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$dir/flask_secret_key")
    export MLFLOW_FLASK_SERVER_SECRET_KEY
    extra=(--app-name basic-auth)
  fi
  # The store URI carries no password (libpq takes it from PGPASSFILE) and travels in the environment.
  PGPASSFILE=$dir/pgpass MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://mlflow@127.0.0.1:$pg_port/mlflow" \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$mlflow" server --host "$host" --port "$port" \
    --workers "$workers" --artifacts-destination "$dir/artifacts" "${extra[@]}" \
    >>"$dir/mlflow.log" 2>&1 </dev/null &
  echo $! >"$dir/mlflow.pid"
  for _ in $(seq 1 240); do
    "$python" -c "import urllib.request, sys; urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=2)" 2>/dev/null && return
    pid_alive "$dir/mlflow.pid" || die "mlflow server exited: $dir/mlflow.log"
    sleep 0.5
  done
  die "mlflow server not healthy after 120 s: $dir/mlflow.log"
}

case $action in
start)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  install_postgresql
  "$python" -c 'import psycopg2' 2>/dev/null || die "psycopg2 is missing: pip install psycopg2-binary (a dependency of this project)"
  init_cluster
  start_postgresql
  start_mlflow
  echo "$port" >"$dir/port"
  log "MLflow tracking server on PostgreSQL: http://$host:$port (store $dir)"
  echo "http://$host:$port"
  ;;
stop)
  dir=$(cd "$dir" && pwd)
  if pid_alive "$dir/mlflow.pid"; then
    kill -TERM -- "-$(cat "$dir/mlflow.pid")" 2>/dev/null || kill -TERM "$(cat "$dir/mlflow.pid")"
    for _ in $(seq 1 40); do pid_alive "$dir/mlflow.pid" || break; sleep 0.5; done
    pid_alive "$dir/mlflow.pid" && kill -KILL -- "-$(cat "$dir/mlflow.pid")" 2>/dev/null
  fi
  rm -f "$dir/mlflow.pid"
  [ -d "$dir/pgdata" ] && as_owner "$(pg_bin)/pg_ctl" -D "$dir/pgdata" -m fast -w stop >/dev/null 2>&1 || true
  log "stopped"
  ;;
status)
  dir=$(cd "$dir" && pwd)
  rc=0
  if [ -d "$dir/pgdata" ] && as_owner "$(pg_bin)/pg_ctl" -D "$dir/pgdata" status >/dev/null 2>&1; then
    echo "postgresql: running (port $(cat "$dir/pg_port"))"
  else
    echo "postgresql: stopped"; rc=3
  fi
  if pid_alive "$dir/mlflow.pid"; then
    echo "mlflow server: running (pid $(cat "$dir/mlflow.pid"), http://$host:$(cat "$dir/port" 2>/dev/null || echo "$port"))"
  else
    echo "mlflow server: stopped"; rc=3
  fi
  exit $rc
  ;;
*) usage ;;
esac
