#!/usr/bin/env bash
# Runs narwhal's whole test suite: type-check and lint, unit tests, then integration tests that
# drive the real Nix client against a real server.
#
# The integration tests need Nix (Debian's nix-bin, Nix 2.8), the S3 tests Ceph's RADOS Gateway.
# As root, this script installs them when they are missing; otherwise it stops with a message
# saying what to install. The interop tests also run with Nix 2.26 in a Debian trixie root that
# scripts/nix-2.26-root.sh makes and keeps.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nix-store >/dev/null 2>&1 || ! command -v nix >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test/run.sh: Nix is missing; installing Debian's nix-bin" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nix-bin >/dev/null
  else
    echo "test/run.sh: the integration tests need the Nix client (nix, nix-store)." >&2
    echo "  Install it as root with: apt-get install nix-bin   (or run this script as root)" >&2
    exit 1
  fi
fi
# The page tests drive Debian's chromium through playwright-core (test/integration/pages.test.ts),
# and the systemd unit is checked with systemd-analyze (test/unit/systemd-unit.test.ts).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test/run.sh: installing Debian's ${missing[*]} (page tests, systemd unit check)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "test/run.sh: the page tests need Debian's chromium and the unit check needs systemd-analyze." >&2
    echo "  Install them as root with: apt-get install ${missing[*]}   (or run this script as root)" >&2
    exit 1
  fi
fi

if [ "$(id -u)" != 0 ]; then
  echo "test/run.sh: the integration tests write to /nix/store, which needs root on Debian's nix-bin." >&2
  echo "  Run as root (CI does)." >&2
  exit 1
fi

# The second client, Nix 2.26 from Debian trixie, in a root made once under /var/cache (about
# 1.5 minutes the first time; scripts/nix-2.26-root.sh). A machine that cannot make it fails here.
scripts/nix-2.26-root.sh prepare >/dev/null

# Every temporary folder the tests make (data folders, Nix stores, keys) goes under one folder
# for this run, removed when the run ends however it ends: hundreds of them per run otherwise
# pile up in /tmp, some of them stores of several hundred MB.
TMPDIR="$(mktemp -d "${TMPDIR:-/tmp}/narwhal-test-run-XXXXXX")"
# Like /tmp itself: the end-to-end tests run Nix as an unprivileged user, which makes its own.
chmod 1777 "$TMPDIR"
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT

# The PostgreSQL tests (test/postgres) need a real PostgreSQL: Debian's, installed here in the
# foreground when missing (two apt-get runs at once would fail on dpkg's lock), then a fresh
# throwaway cluster (scripts/test-engines/postgres.sh) started while tsc and eslint run, and
# stopped when the run ends (the EXIT trap below). A short path: its socket lives in it.
scripts/test-engines/postgres.sh install || { echo "test/run.sh: installing PostgreSQL failed; postgres.sh named the step above" >&2; exit 1; }
PG_DIR="$(mktemp -d /tmp/narwhal-pg-XXXXXX)"
scripts/test-engines/postgres.sh start "$PG_DIR" &
PG_START=$!

# The S3 tests (test/s3) need a real S3 service: Ceph's RADOS Gateway on a one-node cluster,
# installed when missing and started fresh here (scripts/test-engines/ceph.sh), while tsc and
# eslint run; stopped by its pid files however the run ends. A short path: Ceph's sockets live in it.
CEPH_DIR="$(mktemp -d /tmp/narwhal-ceph-XXXXXX)"
scripts/test-engines/ceph.sh start "$CEPH_DIR" &
CEPH_START=$!
# A start still under way is waited for first, so no daemon it starts outlives the run (|| true:
# a start that failed must not stop the trap, set -e applies in it, before the other is stopped).
trap 'if [ -n "${SECOND_PASS:-}" ]; then kill "$SECOND_PASS" 2>/dev/null || true; fi; wait "$CEPH_START" "$PG_START" 2>/dev/null || true; scripts/test-engines/ceph.sh stop "$CEPH_DIR"; scripts/test-engines/postgres.sh stop "$PG_DIR"; rm -rf "$CEPH_DIR" "$PG_DIR" "$TMPDIR"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

npx tsc -p tsconfig.json
npx eslint .
wait "$CEPH_START" || { echo "test/run.sh: the S3 engine (Ceph RGW) did not start; ceph.sh named the step above" >&2; exit 1; }
# shellcheck source=/dev/null
source "$CEPH_DIR/env"
wait "$PG_START" || { echo "test/run.sh: the PostgreSQL engine did not start; postgres.sh named the step above" >&2; exit 1; }
# shellcheck source=/dev/null
source "$PG_DIR/env"

# Two passes (README, "Which backend each test runs on"). The first runs everything on SQLite and the data folder. The
# second runs the behaviour suites again with NARWHAL_TEST_BACKEND=postgres-s3: every cache a
# test opens gets a fresh PostgreSQL database and S3 bucket (test/helpers/backend.ts); tests about
# SQLite or the folder themselves are reported there as skipped, each with its reason
# (sqliteOnly). The passes run side by side, two test files each (the tests mostly wait on Nix,
# sockets and the engines); the second's e2e tests, which share the host's nix-daemon with the
# first's, run once the first pass is over. Its report is printed after the first's.
SECOND_PASS_DIRS=(dist/test/cache/ dist/test/server/ dist/test/integration/ dist/test/pusher/ dist/test/crash/ dist/test/fuzz/)
NARWHAL_TEST_BACKEND=postgres-s3 node --test --test-concurrency=2 --test-reporter=tap "${SECOND_PASS_DIRS[@]}" >"$TMPDIR/postgres-s3.tap" 2>&1 &
SECOND_PASS=$!
# Integration tests start servers and Nix processes; two at a time suits a 2-core machine.
first_status=0
node --test --test-concurrency=2 --test-reporter=tap dist/test/unit/ dist/test/cache/ dist/test/server/ dist/test/integration/ dist/test/pusher/ dist/test/e2e/ dist/test/crash/ dist/test/fuzz/ dist/test/s3/ dist/test/postgres/ dist/test/scale/ \
  | tee "$TMPDIR/sqlite-folder.tap" || first_status=$?
second_status=0
NARWHAL_TEST_BACKEND=postgres-s3 node --test --test-reporter=tap dist/test/e2e/ >"$TMPDIR/postgres-s3-e2e.tap" 2>&1 || second_status=$?
wait "$SECOND_PASS" || second_status=$?
echo "# ---- second pass: the behaviour suites on PostgreSQL + S3 (NARWHAL_TEST_BACKEND=postgres-s3) ----"
cat "$TMPDIR/postgres-s3.tap" "$TMPDIR/postgres-s3-e2e.tap"

# How many tests ran on which backend: the sums of node's own '# tests/pass/fail/skipped' lines.
counts () {
  awk '/^# (tests|pass|fail|cancelled|skipped) [0-9]+$/ { n[$2] += $3 }
    END { printf "%d tests: %d passed, %d failed, %d cancelled, %d skipped", n["tests"], n["pass"], n["fail"], n["cancelled"], n["skipped"] }' "$@"
}
echo "test/run.sh: SQLite + data folder (all suites):           $(counts "$TMPDIR/sqlite-folder.tap")"
echo "test/run.sh: PostgreSQL + S3 (cache, server, integration, pusher, crash, fuzz, e2e): $(counts "$TMPDIR/postgres-s3.tap" "$TMPDIR/postgres-s3-e2e.tap")"
echo "test/run.sh:   skipped there: the tests about SQLite or the data folder themselves ('# SKIP SQLite + data folder only' above)"
[ "$first_status" = 0 ] && [ "$second_status" = 0 ]
