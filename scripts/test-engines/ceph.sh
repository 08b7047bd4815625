#!/usr/bin/env bash
# ceph.sh: Ceph's RADOS Gateway (S3) on a one-node RADOS cluster, for narwhal's S3 tests.
#
#   scripts/test-engines/ceph.sh install      installs Debian's ceph-mon, ceph-osd, radosgw (root; idempotent)
#   scripts/test-engines/ceph.sh start DIR    a fresh cluster in DIR (which must not exist or be empty),
#                                             installing first when needed; prints nothing on stdout
#                                             but writes DIR/env (shell exports, see below)
#   scripts/test-engines/ceph.sh stop DIR     stops every daemon DIR's pid files name (safe to repeat)
#   scripts/test-engines/ceph.sh stop-rgw DIR   stops only radosgw (the S3 service goes away, the
#                                               cluster under it stays up): an object store outage
#   scripts/test-engines/ceph.sh start-rgw DIR  starts radosgw again on the same port and data, and
#                                               returns once it answers HTTP
#
# One monitor, one bluestore OSD on a sparse file and radosgw, the way Ceph's vstart.sh runs a
# developer cluster, without cephx; everything (data, pid files, logs, sockets) stays in DIR, so
# the caller owns what it started. Not RGW's dbstore backend: its multipart uploads read back
# wrong bytes (/work/shared/reference/s3-here.md). Each start makes a new cluster: 7-9 s, and a
# test never sees another run's buckets.
#
# DIR/env exports NARWHAL_TEST_S3_ENDPOINT (http://127.0.0.1:PORT), NARWHAL_TEST_S3_ACCESS_KEY and
# NARWHAL_TEST_S3_SECRET_KEY (the S3 user's keys). Ports: CEPH_RGW_PORT and CEPH_MON_PORT, or else
# the first free from 7480 and from 3300 (so two runs on one machine can each have a cluster).
# On failure, the step that failed is named on stderr with the tail of its log, and the daemons
# started so far are stopped.
set -euo pipefail

RGW_PORT=${CEPH_RGW_PORT:-}
MON_PORT=${CEPH_MON_PORT:-}
ACCESS_KEY=narwhaltestaccesskey
SECRET_KEY=narwhaltestsecretkey0123456789abcdefghij
PACKAGES=(ceph-mon ceph-osd radosgw)
TOOLS=(ceph ceph-authtool monmaptool ceph-mon ceph-osd radosgw radosgw-admin)
# Seconds each wait may take before the step is called failed (the cluster is ready in 7-9 s).
STEP_TIMEOUT=${CEPH_STEP_TIMEOUT:-90}

say () { printf 'ceph.sh: %s\n' "$*" >&2; }

# Names the failed step, shows the log that explains it, stops what was started.
fail () {
  local step=$1 log=${2:-}
  say "FAILED at step: $step"
  if [[ -n ${DIR:-} && -s $DIR/log/setup.log && $log != "$DIR/log/setup.log" ]]; then
    say "last lines of $DIR/log/setup.log (the commands' own output):"
    tail -n 10 "$DIR/log/setup.log" >&2 || true
  fi
  if [[ -n $log && -f $log ]]; then
    # A daemon's log ends in a long dump after a crash: its error lines say more than its tail.
    say "from $log:"
    { grep -iE 'error|fail|abort|denied|unable|cannot|refused' "$log" || tail -n 25 "$log"; } | tail -n 15 >&2 || true
  fi
  if [[ -n ${DIR:-} ]]; then stop_daemons "$DIR" || true; fi
  exit 1
}

missing_tools () {
  local t
  for t in "${TOOLS[@]}"; do command -v "$t" >/dev/null 2>&1 || return 0; done
  return 1
}

install () {
  missing_tools || return 0
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    say "Ceph is missing (${TOOLS[*]}); as root, install it with:"
    say "  apt-get install --no-install-recommends ${PACKAGES[*]}"
    exit 1
  fi
  say "installing ${PACKAGES[*]} (Debian's Ceph; once per machine)"
  local log
  log=$(mktemp /tmp/narwhal-ceph-install.XXXXXX)
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; } >"$log" 2>&1; then
    fail "install: apt-get install ${PACKAGES[*]}" "$log"
  fi
  rm -f "$log"
  missing_tools && fail "install: the packages did not provide ${TOOLS[*]}"
  return 0
}

write_conf () {
  local fsid=$1
  cat >"$DIR/ceph.conf" <<EOF
[global]
fsid = $fsid
mon_host = v2:127.0.0.1:$MON_PORT
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_msgr1 = false
# No cephx: a throwaway cluster on loopback. radosgw's default monitor mode "secure" needs cephx
# (symptom: get_initial_auth_request returned -13, then a 300 s hang), so crc.
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
ms_mon_client_mode = crc
# One OSD: one copy, and few placement groups (radosgw makes 7 pools).
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
osd_crush_chooseleaf_type = 0
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
# The monitor stops itself below 5% free disk by default; tests run on shared machines.
mon_data_avail_crit = 1
run_dir = $DIR/run
pid_file = $DIR/run/\$name.pid
log_file = $DIR/log/\$name.log
admin_socket = $DIR/run/\$name.asok
keyring = $DIR/keyring

[mon]
mon_data = $DIR/mon/\$cluster-\$id
# Each pool creation waits this long for the next proposal; the default (1 s) made start 17 s.
paxos_propose_interval = 0.1

[osd]
osd_data = $DIR/osd/\$cluster-\$id
osd_objectstore = bluestore
bluestore_block_create = true
# A sparse file (about 140 MB real when fresh); not bluestore_block_path inside osd_data (ELOOP).
bluestore_block_size = 10737418240

[client.rgw]
rgw_data = $DIR/rgw
# tcp_nodelay: with Nagle's algorithm on, a small GET's body waited for the client's delayed ACK
# of its headers on a kept-alive connection, 40 ms per small NAR.
rgw_frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
EOF
}

# shellcheck source=scripts/test-engines/ports.sh
source "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

# Waits until "$@" succeeds, at most STEP_TIMEOUT seconds; returns 1 on timeout.
wait_for () {
  local deadline=$((SECONDS + STEP_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

rgw_answers () {
  curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$RGW_PORT/"
}

daemon_alive () {
  local pid
  pid=$(cat "$DIR/run/$1.pid" 2>/dev/null) || return 1
  kill -0 "$pid" 2>/dev/null
}

start () {
  DIR=$1
  install
  command -v curl >/dev/null 2>&1 || fail "start: curl is missing (apt-get install curl)"
  if [[ -e $DIR && -n $(ls -A "$DIR" 2>/dev/null) ]]; then fail "start: $DIR is not empty (each start makes a new cluster)"; fi
  RGW_PORT=${RGW_PORT:-$(first_free_port 7480)}
  MON_PORT=${MON_PORT:-$(first_free_port 3300)}
  port_free "$RGW_PORT" || fail "start: port $RGW_PORT is in use (another radosgw? set CEPH_RGW_PORT)"
  port_free "$MON_PORT" || fail "start: port $MON_PORT is in use (another ceph-mon? set CEPH_MON_PORT)"
  mkdir -p "$DIR"/{run,log,mon,osd,rgw}
  DIR=$(cd "$DIR" && pwd)
  # Unix socket paths are limited to 108 bytes.
  ((${#DIR} + 30 < 108)) || fail "start: $DIR is too long a path for Ceph's admin sockets (keep it under 78 characters)"
  local conf=(-c "$DIR/ceph.conf") fsid uuid osd_id
  fsid=$(cat /proc/sys/kernel/random/uuid)
  write_conf "$fsid"
  local setup_log=$DIR/log/setup.log

  ceph-authtool "${conf[@]}" --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >>"$setup_log" 2>&1 &&
    ceph-authtool "${conf[@]}" "$DIR/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >>"$setup_log" 2>&1 ||
    fail "keyring: ceph-authtool" "$setup_log"
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/monmap" >>"$setup_log" 2>&1 ||
    fail "monitor map: monmaptool" "$setup_log"
  ceph-mon "${conf[@]}" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/keyring" >>"$setup_log" 2>&1 ||
    fail "monitor: ceph-mon --mkfs" "$DIR/log/mon.a.log"
  ceph-mon "${conf[@]}" -i a >>"$setup_log" 2>&1 || fail "monitor: ceph-mon start" "$DIR/log/mon.a.log"
  wait_for ceph "${conf[@]}" --connect-timeout 5 mon stat || fail "monitor: answering 'ceph mon stat'" "$DIR/log/mon.a.log"

  uuid=$(cat /proc/sys/kernel/random/uuid)
  osd_id=$(ceph "${conf[@]}" osd new "$uuid" 2>>"$setup_log") || fail "OSD: ceph osd new" "$setup_log"
  mkdir -p "$DIR/osd/ceph-$osd_id"
  ceph-osd "${conf[@]}" -i "$osd_id" --mkfs --osd-uuid "$uuid" >>"$setup_log" 2>&1 ||
    fail "OSD: ceph-osd --mkfs" "$DIR/log/osd.$osd_id.log"
  ceph-osd "${conf[@]}" -i "$osd_id" >>"$setup_log" 2>&1 || fail "OSD: ceph-osd start" "$DIR/log/osd.$osd_id.log"
  wait_for osd_up "$osd_id" || fail "OSD: osd.$osd_id up" "$DIR/log/osd.$osd_id.log"

  radosgw "${conf[@]}" -n client.rgw --client_mount_timeout 60 >>"$setup_log" 2>&1 ||
    fail "radosgw: start" "$DIR/log/client.rgw.log"
  wait_for rgw_answers || {
    daemon_alive client.rgw || fail "radosgw: the process exited" "$DIR/log/client.rgw.log"
    fail "radosgw: answering HTTP on 127.0.0.1:$RGW_PORT" "$DIR/log/client.rgw.log"
  }
  radosgw-admin "${conf[@]}" -n client.admin user create --uid narwhal-test --display-name narwhal-test \
    --access-key "$ACCESS_KEY" --secret "$SECRET_KEY" >>"$setup_log" 2>&1 ||
    fail "S3 user: radosgw-admin user create" "$setup_log"

  cat >"$DIR/env" <<EOF
export NARWHAL_TEST_S3_ENDPOINT=http://127.0.0.1:$RGW_PORT
export NARWHAL_TEST_S3_ACCESS_KEY=$ACCESS_KEY
export NARWHAL_TEST_S3_SECRET_KEY=$SECRET_KEY
EOF
}

osd_up () {
  ceph -c "$DIR/ceph.conf" --connect-timeout 5 osd dump 2>/dev/null | grep -q "^osd\.$1 up"
}

# Stops radosgw, then the OSD and the monitor: SIGTERM, and SIGKILL to any still running after
# 5 s (the cluster is thrown away, so a clean shutdown buys nothing). radosgw first: stopped
# together with the cluster under it, it waits for it until killed (5 s instead of 2).
stop_daemons () {
  local dir=$1
  [[ -d $dir/run ]] || return 0
  terminate "$dir" client.rgw
  terminate "$dir" osd.0 mon.a
}

# Sends SIGTERM to the named daemons, SIGKILL after 5 s, and returns once they are gone.
terminate () {
  local dir=$1 name pid comm pids=()
  shift
  for name in "$@"; do
    pid=$(cat "$dir/run/$name.pid" 2>/dev/null) || continue
    # Only a Ceph daemon: a stale pid file may name a pid the system has given to another process.
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
    [[ $comm == ceph-* || $comm == radosgw* ]] || continue
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  done
  local deadline=$((SECONDS + 5))
  for pid in "${pids[@]}"; do
    while running "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  # Gone for good before returning: a restart reuses the ports and the data.
  deadline=$((SECONDS + 10))
  for pid in "${pids[@]}"; do
    while running "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  done
}

# Alive and not a zombie (a zombie holds no port or file; its parent reaps it in its own time).
# The main thread of a killed daemon turns zombie before its other threads are gone and its files
# closed, so any thread left counts as running.
running () {
  local state tasks
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  tasks=$(find "/proc/$1/task" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  [[ -n $state && ($state != Z || $tasks -gt 1) ]]
}

# The port radosgw listens on, from DIR's ceph.conf (start-rgw comes back on the same one).
rgw_port_of () {
  sed -n 's/^rgw_frontends = .*endpoint=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$1/ceph.conf"
}

stop_rgw () {
  DIR=$1
  [[ -f $DIR/ceph.conf ]] || { say "stop-rgw: no cluster in $DIR"; exit 1; }
  terminate "$DIR" client.rgw
}

start_rgw () {
  DIR=$(cd "$1" && pwd)
  [[ -f $DIR/ceph.conf ]] || { say "start-rgw: no cluster in $DIR"; exit 1; }
  RGW_PORT=$(rgw_port_of "$DIR")
  [[ -n $RGW_PORT ]] || { say "start-rgw: no rgw_frontends port in $DIR/ceph.conf"; exit 1; }
  local pid
  pid=$(cat "$DIR/run/client.rgw.pid" 2>/dev/null) || pid=
  if [[ -n $pid && $(cat "/proc/$pid/comm" 2>/dev/null) == radosgw* ]] && running "$pid"; then
    say "start-rgw: radosgw of $DIR is already running (pid $pid)"; exit 1
  fi
  port_free "$RGW_PORT" || { say "start-rgw: port $RGW_PORT is in use"; exit 1; }
  # Not fail(): a radosgw that does not come back must not take the cluster down with it.
  radosgw -c "$DIR/ceph.conf" -n client.rgw --client_mount_timeout 60 >>"$DIR/log/setup.log" 2>&1 ||
    { say "start-rgw: radosgw did not start (see $DIR/log/client.rgw.log)"; exit 1; }
  wait_for rgw_answers || { say "start-rgw: radosgw is not answering HTTP on 127.0.0.1:$RGW_PORT (see $DIR/log/client.rgw.log)"; exit 1; }
}

case ${1:-} in
  install) install ;;
  start) [[ -n ${2:-} ]] || { say "usage: $0 start DIR"; exit 2; }; start "$2" ;;
  stop) [[ -n ${2:-} ]] || { say "usage: $0 stop DIR"; exit 2; }; stop_daemons "$2" ;;
  stop-rgw) [[ -n ${2:-} ]] || { say "usage: $0 stop-rgw DIR"; exit 2; }; stop_rgw "$2" ;;
  start-rgw) [[ -n ${2:-} ]] || { say "usage: $0 start-rgw DIR"; exit 2; }; start_rgw "$2" ;;
  *) say "usage: $0 install | start DIR | stop DIR | stop-rgw DIR | start-rgw DIR"; exit 2 ;;
esac
