#!/usr/bin/env bash
# Runs narwhal's whole test suite: type-check and lint, unit tests, then integration tests that
# drive the real Nix client against a real server.
#
# The integration tests need Nix (Debian's nix-bin, Nix 2.8). As root, this script installs it
# when it is missing; otherwise it stops with a message saying what to install. They also run
# with Nix 2.26 in a Debian trixie root that scripts/nix-2.26-root.sh makes and keeps.
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

npx tsc -p tsconfig.json
npx eslint .
# Integration tests start servers and Nix processes; two at a time suits a 2-core machine.
node --test --test-concurrency=2 dist/test/unit/ dist/test/cache/ dist/test/server/ dist/test/integration/ dist/test/pusher/ dist/test/e2e/ dist/test/crash/ dist/test/fuzz/
