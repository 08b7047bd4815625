#!/usr/bin/env bash
# postgres.sh: a throwaway PostgreSQL cluster for narwhal's PostgreSQL tests.
#
#   scripts/test-engines/postgres.sh install      installs Debian's postgresql (root; idempotent)
#   scripts/test-engines/postgres.sh start DIR    a fresh cluster in DIR (which must not exist or be
#                                                 empty), installing first when needed; prints nothing
#                                                 on stdout but writes DIR/env (shell exports, below)
#   scripts/test-engines/postgres.sh restart DIR  stops and starts it again (fast shutdown), same port
#   scripts/test-engines/postgres.sh stop DIR     stops it (safe to repeat)
#
# initdb + pg_ctl, as the postgres user when run as root (PostgreSQL refuses to run as root), with
# data, socket and log all in DIR, so the caller owns what it started; not the Debian cluster
# tools, which register clusters machine-wide under /etc/postgresql. Each start makes a new
# cluster (about 2 s); tests make their own databases in it.
#
# DIR/env exports NARWHAL_TEST_DATABASE_URL (postgres://postgres@127.0.0.1:PORT/narwhal_test, a
# superuser without password: trust authentication on loopback) and NARWHAL_TEST_POSTGRES_DIR
# (DIR, for a test that restarts the server with `restart`). Port: PG_PORT, or else the first
# free from 55432. On failure, the step that failed is named on stderr with the tail of its log,
# and a server started so far is stopped.
set -euo pipefail

PORT=${PG_PORT:-}
DATABASE=narwhal_test
# Seconds pg_ctl waits for the server to start or stop before the step is called failed.
STEP_TIMEOUT=${PG_STEP_TIMEOUT:-60}

say () { printf 'postgres.sh: %s\n' "$*" >&2; }

fail () {
  local step=$1 log=${2:-}
  say "FAILED at step: $step"
  if [[ -n $log && -f $log ]]; then
    say "last lines of $log:"
    tail -n 15 "$log" >&2 || true
  fi
  if [[ -n ${DIR:-} && -f ${DIR}/data/postmaster.pid ]]; then stop_server "$DIR" || true; fi
  exit 1
}

# The newest installed PostgreSQL's programs (Debian keeps them out of PATH, per major version).
bindir () {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl && -x $dir/createdb ]] && echo "$dir"
}

install () {
  bindir >/dev/null && return 0
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    say "PostgreSQL is missing (initdb, pg_ctl under /usr/lib/postgresql/*/bin); as root, install it with:"
    say "  apt-get install postgresql"
    exit 1
  fi
  say "installing postgresql (Debian's PostgreSQL; once per machine)"
  local log
  log=$(mktemp /tmp/narwhal-postgres-install.XXXXXX)
  # Waits for another apt run (ceph.sh's) instead of failing on dpkg's lock.
  if ! { apt-get -o DPkg::Lock::Timeout=600 update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq postgresql; } >"$log" 2>&1; then
    fail "install: apt-get install postgresql" "$log"
  fi
  rm -f "$log"
  bindir >/dev/null || fail "install: the package did not provide /usr/lib/postgresql/*/bin/initdb"
}

# Runs a PostgreSQL program as the cluster's owner: the postgres user when we are root.
as_owner () {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# shellcheck source=scripts/test-engines/ports.sh
source "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

start () {
  DIR=$1
  install
  local bin
  bin=$(bindir)
  if [[ -e $DIR && -n $(ls -A "$DIR" 2>/dev/null) ]]; then fail "start: $DIR is not empty (each start makes a new cluster)"; fi
  PORT=${PORT:-$(first_free_port 55432)}
  port_free "$PORT" || fail "start: port $PORT is in use (another PostgreSQL? set PG_PORT)"
  mkdir -p "$DIR"/{data,run,log}
  DIR=$(cd "$DIR" && pwd)
  # Unix socket paths are limited to 108 bytes (.s.PGSQL.PORT is 17 of them).
  ((${#DIR} + 25 < 108)) || fail "start: $DIR is too long a path for PostgreSQL's socket (keep it under 80 characters)"
  if [[ $(id -u) -eq 0 ]]; then
    getent passwd postgres >/dev/null || fail "start: there is no postgres user (Debian's postgresql package makes it)"
    chown -R postgres: "$DIR"
    chmod 0755 "$DIR"
    runuser -u postgres -- test -w "$DIR/data" ||
      fail "start: the postgres user cannot reach $DIR (a folder above it is not searchable by others)"
  fi
  local log=$DIR/log/postgres.log setup_log=$DIR/log/setup.log
  # --no-sync and fsync=off: a throwaway cluster on a shared machine; nothing in it outlives the run.
  as_owner "$bin/initdb" -D "$DIR/data" -A trust -U postgres --no-sync -E UTF8 --locale=C.UTF-8 >>"$setup_log" 2>&1 ||
    fail "initdb" "$setup_log"
  as_owner "$bin/pg_ctl" -D "$DIR/data" -l "$log" -t "$STEP_TIMEOUT" -w \
    -o "-p $PORT -k $DIR/run -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200" \
    start >>"$setup_log" 2>&1 || fail "pg_ctl start (port $PORT)" "$log"
  as_owner "$bin/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DATABASE" >>"$setup_log" 2>&1 ||
    fail "createdb $DATABASE" "$setup_log"
  cat >"$DIR/env" <<EOF
export NARWHAL_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$PORT/$DATABASE
export NARWHAL_TEST_POSTGRES_DIR=$DIR
EOF
}

restart () {
  DIR=$(cd "$1" && pwd)
  local bin
  bin=$(bindir) || fail "restart: PostgreSQL is not installed"
  [[ -f $DIR/data/postmaster.pid ]] || fail "restart: no server is running in $DIR"
  # The same options again: pg_ctl restart reuses those of the last start (postmaster.opts).
  as_owner "$bin/pg_ctl" -D "$DIR/data" -l "$DIR/log/postgres.log" -t "$STEP_TIMEOUT" -m fast -w restart \
    >>"$DIR/log/setup.log" 2>&1 || fail "pg_ctl restart" "$DIR/log/postgres.log"
}

# Stops the server: pg_ctl's immediate mode (the cluster is thrown away), then SIGKILL to the
# postmaster named by its pid file if it is still there.
stop_server () {
  local dir=$1 bin pid comm
  [[ -f $dir/data/postmaster.pid ]] || return 0
  bin=$(bindir) || return 0
  as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -t 10 -w stop >/dev/null 2>&1 && return 0
  pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null) || return 0
  # Only a postgres process: a stale pid file may name a pid the system has given to another.
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 0
  [[ $comm == postgres* ]] || return 0
  kill -KILL "$pid" 2>/dev/null || true
}

case ${1:-} in
  install) install ;;
  start) [[ -n ${2:-} ]] || { say "usage: $0 start DIR"; exit 2; }; start "$2" ;;
  restart) [[ -n ${2:-} ]] || { say "usage: $0 restart DIR"; exit 2; }; restart "$2" ;;
  stop) [[ -n ${2:-} ]] || { say "usage: $0 stop DIR"; exit 2; }; stop_server "$2" ;;
  *) say "usage: $0 install | start DIR | restart DIR | stop DIR"; exit 2 ;;
esac
