#!/usr/bin/env bash
# podman-local-base-images.sh: make local stand-ins for the `node:20-bookworm` and
# `node:20-bookworm-slim` base images, so that the project's standard Dockerfile can be built
# with podman on a machine that cannot pull from any image registry.
#
# ONLY FOR MACHINES WITHOUT REGISTRY ACCESS (such as our sandboxed CI/dev hosts, which reach
# Debian's apt mirror and the npm registry but no image registry). Anywhere `docker pull` or
# `podman pull` works, do not run this: build the Dockerfile as is and let it pull the official
# images.
#
# What it does (needs root, debootstrap, podman, and a Node 20 installation on this machine):
#   1. debootstrap --variant=minbase bookworm from Debian's mirror (plus ca-certificates);
#   2. copies this machine's Node 20 into it with the official images' layout:
#      /usr/local/bin/node, /usr/local/lib/node_modules/npm, npm/npx symlinks in /usr/local/bin;
#   3. imports it as node:20-bookworm-slim;
#   4. adds the native-addon toolchain (python3, make, g++; `apt-get install` in a chroot) and
#      Node's C headers in /usr/local/include/node, and imports that as node:20-bookworm.
# If this host trusts locally added CA certificates (/usr/local/share/ca-certificates, e.g. a
# TLS-intercepting egress proxy, as on our sandboxed hosts), they are added to both images and
# NODE_EXTRA_CA_CERTS points Node (npm) at the system bundle, so `npm ci` reaches the registry.
# The build image also sets npm_config_nodedir=/usr/local, so node-gyp uses the copied headers
# instead of downloading them from nodejs.org (unreachable here). The official node:20-bookworm
# needs no such setting, as node-gyp can download the headers there.
#
# Usage: sudo scripts/podman-local-base-images.sh [--force]
#   Without --force, it does nothing when both images exist already.
# Environment: DEBIAN_MIRROR (default: the mirror in this host's apt sources, else
#   http://deb.debian.org/debian), NODE (default: `command -v node`), KEEP_ROOTFS=1 to keep the
#   scratch root file system.
set -euo pipefail

SUITE=bookworm
SLIM_IMAGE=node:20-bookworm-slim
BUILD_IMAGE=node:20-bookworm
FORCE=0
[[ ${1:-} == --force ]] && FORCE=1

log () { printf '[base-images] %s\n' "$*" >&2; }
die () { printf '[base-images] error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die 'needs root (debootstrap, chroot and rootful podman storage)'
for tool in debootstrap podman tar chroot; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y podman runc debootstrap)"
done

image_exists () { podman image exists "$1"; }
if [[ $FORCE -eq 0 ]] && image_exists "$SLIM_IMAGE" && image_exists "$BUILD_IMAGE"; then
  log "$SLIM_IMAGE and $BUILD_IMAGE exist already; nothing to do (--force rebuilds them)"
  exit 0
fi

# The host's Node 20: the binary, the npm package, the C headers.
NODE_BIN=$(readlink -f "${NODE:-$(command -v node || true)}")
[[ -x $NODE_BIN ]] || die 'no node on PATH (set NODE=/path/to/node)'
NODE_VERSION=$("$NODE_BIN" -p 'process.versions.node')
[[ ${NODE_VERSION%%.*} == 20 ]] || die "node at $NODE_BIN is $NODE_VERSION, not Node 20"
NODE_PREFIX=$(dirname "$(dirname "$NODE_BIN")")  # /usr for Debian/NodeSource, /usr/local for tarballs
NPM_DIR=$NODE_PREFIX/lib/node_modules/npm
if [[ ! -f $NPM_DIR/bin/npm-cli.js ]] && command -v npm >/dev/null; then
  NPM_DIR=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
fi
[[ -f $NPM_DIR/bin/npm-cli.js ]] || die "npm not found next to $NODE_BIN"
NODE_HEADERS=$NODE_PREFIX/include/node
[[ -f $NODE_HEADERS/node_api.h ]] || die "Node's C headers not found in $NODE_HEADERS"
log "node $NODE_VERSION from $NODE_BIN, npm $(node -p "require('$NPM_DIR/package.json').version") from $NPM_DIR"

if [[ -z ${DEBIAN_MIRROR:-} ]]; then
  DEBIAN_MIRROR=$(grep -hsoE 'https?://[^ ]*/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
    | head -n1 | tr -d ' ' || true)
  DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
fi
DEBIAN_MIRROR=${DEBIAN_MIRROR%/}
log "Debian mirror: $DEBIAN_MIRROR"

WORK=$(mktemp -d /var/tmp/narwhal-base-images.XXXXXX)
ROOTFS=$WORK/rootfs
cleanup () {
  for m in proc dev/pts dev; do mountpoint -q "$ROOTFS/$m" 2>/dev/null && umount "$ROOTFS/$m" || true; done
  if [[ ${KEEP_ROOTFS:-0} == 1 ]]; then log "kept $ROOTFS"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

log "debootstrap --variant=minbase $SUITE (takes a few minutes)"
debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$ROOTFS" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -n 30 "$WORK/debootstrap.log" >&2; die 'debootstrap failed'; }

# Apt sources like the official debian:bookworm image (main, updates, security).
rm -f "$ROOTFS/etc/apt/sources.list"
cat >"$ROOTFS/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${DEBIAN_MIRROR%/debian}/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

# Apt settings of the official debian images: no package caches or translations left in layers.
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-clean" <<'EOF2'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF2
echo 'Acquire::Languages "none";' >"$ROOTFS/etc/apt/apt.conf.d/docker-no-languages"

# This host's locally added CA certificates (e.g. a TLS-intercepting egress proxy's).
EXTRA_ENV=()
shopt -s nullglob
LOCAL_CAS=(/usr/local/share/ca-certificates/*.crt)
shopt -u nullglob
if [[ ${#LOCAL_CAS[@]} -gt 0 ]]; then
  log "adding this host's local CA certificates: ${LOCAL_CAS[*]}"
  cp "${LOCAL_CAS[@]}" "$ROOTFS/usr/local/share/ca-certificates/"
  chroot "$ROOTFS" update-ca-certificates >/dev/null 2>&1
  EXTRA_ENV=(--change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt')
fi

# Node in the official images' layout.
install -D -m 0755 "$NODE_BIN" "$ROOTFS/usr/local/bin/node"
mkdir -p "$ROOTFS/usr/local/lib/node_modules"
cp -a "$NPM_DIR" "$ROOTFS/usr/local/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$ROOTFS/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$ROOTFS/usr/local/bin/npx"
chroot "$ROOTFS" /usr/local/bin/node -e 'process.stdout.write(`node ${process.version} runs in the rootfs\n`)' >&2
chroot "$ROOTFS" /usr/local/bin/npm --version >/dev/null

slim_up () {
  chroot "$ROOTFS" apt-get clean
  rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/log/*.log "$ROOTFS"/tmp/* "$ROOTFS"/root/.npm
  : >"$ROOTFS/etc/resolv.conf"  # podman provides it at run time
  : >"$ROOTFS/etc/hostname"
}

import_image () {  # NAME [extra --change ...]
  local name=$1; shift
  tar --numeric-owner --xattrs -C "$ROOTFS" -c . | podman import --quiet \
    --message "local stand-in for $name made by scripts/podman-local-base-images.sh (Debian $SUITE minbase + host node $NODE_VERSION)" \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV NODE_VERSION=$NODE_VERSION" \
    --change 'CMD ["node"]' \
    ${EXTRA_ENV[@]+"${EXTRA_ENV[@]}"} "$@" - "$name" >/dev/null
  log "imported $name ($(podman image inspect --format '{{.Size}}' "$name" | numfmt --to=iec))"
}

slim_up
[[ $FORCE -eq 1 ]] && podman rmi -f "$SLIM_IMAGE" "$BUILD_IMAGE" >/dev/null 2>&1 || true
import_image "$SLIM_IMAGE"

# The build image: toolchain for node-gyp, and Node's headers.
log 'apt-get install python3 make g++ in the rootfs'
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
mount -t proc proc "$ROOTFS/proc"
chroot "$ROOTFS" /usr/bin/env DEBIAN_FRONTEND=noninteractive sh -c \
  'apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 make g++ git procps' >"$WORK/apt.log" 2>&1 \
  || { tail -n 30 "$WORK/apt.log" >&2; die 'apt-get install in the rootfs failed'; }
umount "$ROOTFS/proc"
mkdir -p "$ROOTFS/usr/local/include"
cp -a "$NODE_HEADERS" "$ROOTFS/usr/local/include/node"
slim_up
import_image "$BUILD_IMAGE" --change 'ENV npm_config_nodedir=/usr/local'

podman images --filter reference=node >&2
