#!/usr/bin/env bash
# A second, modern Nix client for the tests and benchmarks: Debian trixie's nix-bin (Nix 2.26)
# in a debootstrap root kept outside the checkout (docs/nix-clients.md says what each client does).
#
#   scripts/nix-2.26-root.sh [prepare]
#       Makes the root once (about 2 minutes and 500 MB: debootstrap, then apt-get install
#       nix-bin inside it) or checks the one already there; prints its path. Needs root and the
#       Debian mirror. Fails with a message naming the step; never leaves a half-made root.
#   scripts/nix-2.26-root.sh run [--bind DIR]... -- COMMAND [ARG]...
#       Runs COMMAND as root inside the root (its PATH, working folder /). Each DIR (and $TMPDIR,
#       and this checkout, read-only) is bind-mounted at the same path inside, so files a test
#       makes on the host (keys, netrc, stores) are reachable; the host's node is
#       /usr/local/bin/node inside. The process is COMMAND itself (exec all the way down), so a
#       signal to it reaches COMMAND.
#
# Mounts (/proc, /sys and /dev, rbind, which Nix needs; the binds above) are made only in a
# private mount namespace of the one command (unshare --mount) and vanish when it exits, however
# it exits. The host never sees a mount under the root, so nothing is left mounted at the end of
# a run, the next run starts clean, and `rm -rf` of the root can never reach the host's /dev.
#
# NARWHAL_NIX226_ROOT overrides the place (default /var/cache/narwhal-test/nix-2.26).
set -euo pipefail

ROOT="${NARWHAL_NIX226_ROOT:-/var/cache/narwhal-test/nix-2.26}"
MIRROR="${NARWHAL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
WANT_VERSION='2.26'
CHECKOUT="$(cd "$(dirname "$0")/.." && pwd)"
ME="scripts/nix-2.26-root.sh"

step=''
fail () {
  echo "$ME: cannot make the Nix $WANT_VERSION root at $ROOT: step \"$step\" failed${1:+: $1}" >&2
  exit 1
}

# Runs "$@" chrooted into $1 in a private mount namespace with /proc, /sys, /dev and binds.
# Arguments: ROOTDIR BIND... -- COMMAND ARG...   ($exec=exec replaces this shell with it.)
in_root () {
  local dir="$1"; shift
  local binds=()
  while [ "$1" != '--' ]; do binds+=("$1"); shift; done
  shift
  # The inner script gets the root, the number of binds, the binds, then the command.
  ${exec:-} unshare --mount --propagation private -- /bin/sh -c '
    set -e
    dir="$1"; n="$2"; shift 2
    for m in proc sys dev; do mount --rbind "/$m" "$dir/$m"; done
    if [ -x /usr/bin/node ] && [ -e "$dir/usr/local/bin/node" ]; then
      mount --bind /usr/bin/node "$dir/usr/local/bin/node"
    fi
    while [ "$n" -gt 0 ]; do
      b="$1"; shift; n=$((n - 1))
      ro=""
      case "$b" in ro:*) ro=1; b="${b#ro:}" ;; esac
      [ -d "$b" ] || continue
      mkdir -p "$dir$b"
      mount --bind "$b" "$dir$b"
      if [ -n "$ro" ]; then mount -o remount,bind,ro "$dir$b"; fi
    done
    exec chroot "$dir" /usr/bin/env PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
  ' in_root "$dir" "${#binds[@]}" "${binds[@]}" "$@"
}

root_version () {
  in_root "$1" -- nix --version 2>/dev/null | sed -n 's/^nix (Nix) //p'
}

is_valid () {
  [ -f "$1/.narwhal-nix-root" ] && case "$(root_version "$1")" in "$WANT_VERSION".*) return 0 ;; *) return 1 ;; esac
}

# rm -rf, but never through a mount (an interrupted run of an older script could have left one).
safe_remove () {
  local dir="$1"
  [ -e "$dir" ] || return 0
  if awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
    umount -R "$dir" 2>/dev/null || umount -R -l "$dir" 2>/dev/null || true
    if awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
      fail "$dir still has mounts; not removing it (umount -R $dir, then run again)"
    fi
  fi
  rm -rf --one-file-system "$dir"
}

prepare () {
  step='check that this runs as root'
  [ "$(id -u)" = 0 ] || fail 'debootstrap and chroot need root (CI runs the suite as root)'
  step='check that this machine allows mount namespaces (unshare --mount)'
  unshare --mount --propagation private -- true || fail 'the root'"'"'s /proc, /sys and /dev are mounted in one'
  mkdir -p "$(dirname "$ROOT")"

  # One maker at a time: two suites starting together wait for the first to finish the root.
  exec 9>"$ROOT.lock"
  step='wait for the lock'
  flock 9

  step="check the existing root"
  if [ -d "$ROOT" ] && is_valid "$ROOT"; then
    echo "$ROOT"
    return 0
  fi

  # Leftovers of an interrupted earlier run: half-made roots are only ever *.partial-*.
  step='remove half-made roots of an interrupted run'
  for old in "$ROOT".partial-* "$ROOT".invalid-*; do safe_remove "$old"; done

  step='install debootstrap on the host'
  if ! command -v debootstrap >/dev/null 2>&1; then
    echo "$ME: installing debootstrap" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; } || fail
  fi

  echo "$ME: making the Nix $WANT_VERSION root at $ROOT (once; about 2 minutes)" >&2
  local tmp
  tmp="$(mktemp -d "$ROOT.partial-XXXXXX")"
  chmod 755 "$tmp"
  step="debootstrap --variant=minbase trixie from $MIRROR"
  # In its own mount namespace: debootstrap mounts /proc inside the target itself.
  unshare --mount --propagation private -- debootstrap --variant=minbase trixie "$tmp" "$MIRROR" \
    >"$tmp.log" 2>&1 || fail "see the end of $tmp.log: $(tail -n 3 "$tmp.log" | tr '\n' ' ')"

  step='apt-get install nix-bin inside the root'
  in_root "$tmp" -- /bin/sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nix-bin && apt-get clean' \
    >>"$tmp.log" 2>&1 || fail "see the end of $tmp.log: $(tail -n 3 "$tmp.log" | tr '\n' ' ')"

  step='prepare the mount point for the host node'
  mkdir -p "$tmp/usr/local/bin" && touch "$tmp/usr/local/bin/node"

  step="check nix --version inside the root"
  local version
  version="$(root_version "$tmp")"
  case "$version" in "$WANT_VERSION".*) ;; *) fail "got \"$version\", expected $WANT_VERSION.x" ;; esac
  echo "$version" >"$tmp/.narwhal-nix-root"

  step='move the finished root into place'
  if [ -e "$ROOT" ]; then
    local stale
    stale="$(mktemp -d "$ROOT.invalid-XXXXXX")"
    mv "$ROOT" "$stale/root"
    safe_remove "$stale"
  fi
  mv "$tmp" "$ROOT"
  rm -f "$tmp.log"
  echo "$ME: made $ROOT (Nix $version)" >&2
  echo "$ROOT"
}

run () {
  local binds=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --bind) binds+=("$2"); shift 2 ;;
      --) shift; break ;;
      *) echo "$ME run: unknown option $1 (usage: run [--bind DIR]... -- COMMAND...)" >&2; exit 2 ;;
    esac
  done
  [ $# -gt 0 ] || { echo "$ME run: no command" >&2; exit 2; }
  if [ ! -f "$ROOT/.narwhal-nix-root" ]; then
    echo "$ME run: no Nix $WANT_VERSION root at $ROOT; make it with: $ME prepare" >&2
    exit 1
  fi
  binds+=("ro:$CHECKOUT")
  if [ -n "${TMPDIR:-}" ]; then binds+=("$TMPDIR"); fi
  exec=exec in_root "$ROOT" "${binds[@]}" -- "$@"
}

case "${1:-prepare}" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  *) echo "usage: $ME [prepare] | run [--bind DIR]... -- COMMAND..." >&2; exit 2 ;;
esac
