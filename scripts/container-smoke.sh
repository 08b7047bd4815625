#!/usr/bin/env bash
# container-smoke.sh: build the narwhal container image with podman and check that it serves.
#
#   sudo scripts/container-smoke.sh
#
# 1. When node:20-bookworm / node:20-bookworm-slim are not in podman's local storage, creates
#    local stand-ins with scripts/podman-local-base-images.sh (for machines that cannot pull).
# 2. podman build --format docker --pull="$PULL_POLICY" --network host -t $IMAGE .
# 3. Runs the image (runc, cgroupfs, host network, a fresh bind-mounted /data owned by 10001)
#    and checks: /healthz and /nix-cache-info answer; the first start printed the key and the
#    push token; every file in the volume belongs to 10001; the image's HEALTHCHECK passes;
#    with Nix on PATH, a real `nix copy --to` with the printed token and the generated key
#    pushes a store path that is then served signed and verifies with the printed public key;
#    SIGTERM stops the container cleanly (exit 0); a restart on the same volume does not set up
#    again and still serves the pushed path.
# Exits non-zero on the first failed check.
#
# Environment: IMAGE (default narwhal:dev), SKIP_BUILD=1 (test an existing image),
#   PULL=1 (pull missing official base images instead of creating local ones),
#   CONTAINERS_CONF (default: a temporary file with the settings runc needs here),
#   KEEP=1 (keep the container and data folder for inspection).
set -euo pipefail

cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-narwhal:dev}
UID_IN_IMAGE=10001
NAME=narwhal-smoke-$$
WORK=$(mktemp -d /var/tmp/narwhal-smoke.XXXXXX)
DATA=$WORK/data

log () { printf '[smoke] %s\n' "$*" >&2; }
fail () { printf '[smoke] FAIL: %s\n' "$*" >&2; exit 1; }
pass () { printf '[smoke] ok: %s\n' "$*" >&2; }

[[ $(id -u) -eq 0 ]] || fail 'run as root (rootful podman; the volume is chowned to 10001)'
command -v podman >/dev/null || fail 'podman is missing (apt-get install -y podman runc)'
command -v curl >/dev/null || fail 'curl is missing'

if [[ -z ${CONTAINERS_CONF:-} ]]; then
  # runc with cgroupfs and no default ulimits (crun fails here: "cgroups in hybrid mode not supported").
  export CONTAINERS_CONF=$WORK/containers.conf
  printf '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n' >"$CONTAINERS_CONF"
fi
PODMAN=(podman --runtime runc)
# Without systemd, podman cannot schedule healthcheck timers and logs an error on run, stop and
# rm; harmless (`podman healthcheck run` still works), so those lines are dropped.
# (Through a file, not a pipe: `run -d` hands its stderr to conmon, which would hold a pipe open.)
pm () {
  local rc=0
  "${PODMAN[@]}" "$@" 2>"$WORK/podman.err" || rc=$?
  grep -v 'systemd connection' "$WORK/podman.err" >&2 || true
  return "$rc"
}

cleanup () {
  local rc=$?
  if [[ ${KEEP:-0} == 1 ]]; then
    log "kept container $NAME and $WORK"
  else
    pm rm -f -t 2 "$NAME" >/dev/null 2>&1 || true
    rm -rf "$WORK"
  fi
  [[ $rc -eq 0 ]] && log 'all checks passed' || log "failed (exit $rc)"
}
trap cleanup EXIT

# ---- 1. base images ----
PULL_POLICY=never
if [[ ${PULL:-0} == 1 ]]; then
  PULL_POLICY=missing  # a machine that can pull the official node images
elif ! podman image exists node:20-bookworm || ! podman image exists node:20-bookworm-slim; then
  log 'base images missing: creating local ones (scripts/podman-local-base-images.sh)'
  scripts/podman-local-base-images.sh
fi

# ---- 2. build ----
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "podman build -t $IMAGE"
  start=$(date +%s)
  # --format docker keeps HEALTHCHECK (the OCI format has no field for it).
  podman build --format docker --pull="$PULL_POLICY" --network host -t "$IMAGE" . >"$WORK/build.log" 2>&1 \
    || { tail -n 40 "$WORK/build.log" >&2; fail 'podman build failed'; }
  pass "built $IMAGE in $(( $(date +%s) - start ))s"
fi
podman image exists "$IMAGE" || fail "no image $IMAGE"
log "image size: $(podman image inspect --format '{{.Size}}' "$IMAGE" | numfmt --to=si)B"

# ---- 3. run ----
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null \
  || echo $(( 20000 + RANDOM % 20000 )))
URL=http://127.0.0.1:$PORT
mkdir -p "$DATA"
chown "$UID_IN_IMAGE:$UID_IN_IMAGE" "$DATA"
chmod 0750 "$DATA"

start_container () {
  pm run -d --name "$NAME" --network host -v "$DATA:/data" -e NARWHAL_LISTEN="127.0.0.1:$PORT" "$IMAGE" >/dev/null
}
wait_healthy () {
  for _ in $(seq 1 60); do
    curl -fsS "$URL/healthz" >/dev/null 2>&1 && return 0
    [[ $("${PODMAN[@]}" inspect --format '{{.State.Running}}' "$NAME" 2>/dev/null) == true ]] \
      || { "${PODMAN[@]}" logs "$NAME" >&2 || true; fail 'the container exited'; }
    sleep 0.5
  done
  "${PODMAN[@]}" logs "$NAME" >&2 || true
  fail "no answer on $URL/healthz after 30s"
}

log "podman run $IMAGE on 127.0.0.1:$PORT, /data = $DATA"
start_container
wait_healthy
[[ $(curl -fsS "$URL/healthz") == ok ]] || fail '/healthz did not answer "ok"'
pass 'GET /healthz -> 200 ok'

info=$(curl -fsS "$URL/nix-cache-info") || fail 'GET /nix-cache-info failed'
for field in 'StoreDir: /nix/store' 'WantMassQuery: ' 'Priority: '; do
  grep -q "^$field" <<<"$info" || fail "nix-cache-info lacks '$field': $info"
done
pass "GET /nix-cache-info -> $(tr '\n' ' ' <<<"$info")"

sleep 0.5
LOGS=$("${PODMAN[@]}" logs "$NAME" 2>&1)
grep -q 'narwhal: first start; set up /data' <<<"$LOGS" || { echo "$LOGS" >&2; fail 'no first-start message'; }
TOKEN=$(sed -nE 's/.*netrc line.*machine [^ ]+ login narwhal password ([^ ]+).*/\1/p' <<<"$LOGS" | head -n1)
PUBKEY=$(sed -nE 's/.*extra-trusted-public-keys = ([^ ]+).*/\1/p' <<<"$LOGS" | head -n1)
[[ -n $TOKEN ]] || fail 'the first-start message has no push token'
[[ -n $PUBKEY ]] || fail 'the first-start message has no public key'
grep -q 'secret key file: *\/data\/keys\/cache.secret' <<<"$LOGS" || fail 'the first-start message names no generated secret key'
pass "first-start message: public key ${PUBKEY%%:*}:…, a push token"

[[ -f $DATA/keys/cache.secret && -f $DATA/keys/cache.public && -f $DATA/narwhal.sqlite ]] \
  || fail "the volume lacks keys/ or narwhal.sqlite: $(ls -la "$DATA")"
[[ $(cat "$DATA/keys/cache.public") == "$PUBKEY" ]] || fail 'keys/cache.public differs from the printed key'
[[ $(stat -c %a "$DATA/keys/cache.secret") == 600 ]] || fail 'keys/cache.secret is not mode 0600'
foreign=$(find "$DATA" \( ! -uid "$UID_IN_IMAGE" -o ! -gid "$UID_IN_IMAGE" \) -printf '%p %U:%G\n')
[[ -z $foreign ]] || fail "files in the volume not owned by $UID_IN_IMAGE: $foreign"
pass "all $(find "$DATA" | wc -l) entries in the volume are owned by $UID_IN_IMAGE:$UID_IN_IMAGE"

[[ $("${PODMAN[@]}" exec "$NAME" id -u) == "$UID_IN_IMAGE" ]] || fail "the server does not run as $UID_IN_IMAGE"
[[ $("${PODMAN[@]}" exec "$NAME" cat /proc/1/comm) == tini ]] || fail 'PID 1 is not tini'
pass 'runs as uid 10001 under tini (PID 1)'

if [[ -n $("${PODMAN[@]}" inspect --format '{{.Config.Healthcheck}}' "$NAME" 2>/dev/null | grep -v '<nil>') ]]; then
  health=$("${PODMAN[@]}" healthcheck run "$NAME" 2>&1) && pass "HEALTHCHECK: ${health:-healthy}" || fail "HEALTHCHECK failed: $health"
else
  log 'the image has no HEALTHCHECK (built with --format oci?); skipped'
fi

# ---- nix copy with the printed token and the generated key ----
PUSHED=
if command -v nix >/dev/null && command -v nix-store >/dev/null; then
  printf 'machine 127.0.0.1 login narwhal password %s\n' "$TOKEN" >"$WORK/netrc"
  chmod 600 "$WORK/netrc"
  mkdir -p "$WORK/payload/sub"
  printf 'narwhal container smoke test %s %s\n' "$(date -u +%FT%TZ)" "$$" >"$WORK/payload/hello.txt"
  head -c 300000 /dev/urandom >"$WORK/payload/sub/random.bin"
  PUSHED=$(nix-store --add "$WORK/payload")
  export NIX_CONFIG=$'experimental-features = nix-command\nsubstituters =\nnetrc-file = '"$WORK/netrc"
  nix copy --to "$URL?secret-key=$DATA/keys/cache.secret" "$PUSHED" 2>"$WORK/nix-copy.log" \
    || { cat "$WORK/nix-copy.log" >&2; fail "nix copy --to $URL failed"; }
  hash=$(basename "$PUSHED" | cut -c1-32)
  narinfo=$(curl -fsS "$URL/$hash.narinfo") || fail "no $hash.narinfo after nix copy"
  grep -q "^StorePath: $PUSHED\$" <<<"$narinfo" || fail "wrong narinfo: $narinfo"
  grep -q "^Sig: ${PUBKEY%%:*}:" <<<"$narinfo" || fail "narinfo not signed by the generated key: $narinfo"
  NIX_CONFIG+=$'\ntrusted-public-keys = '"$PUBKEY"
  nix store verify --store "$URL" "$PUSHED" 2>"$WORK/verify.log" || { cat "$WORK/verify.log" >&2; fail 'nix store verify failed'; }
  pass "nix copy --to pushed $PUSHED; served signed; nix store verify passes"
  # Without the token, a push is refused.
  mv "$WORK/netrc" "$WORK/netrc.off"
  printf 'second %s\n' "$$" >"$WORK/payload/hello.txt"
  second=$(nix-store --add "$WORK/payload")
  if nix copy --to "$URL?secret-key=$DATA/keys/cache.secret" "$second" 2>"$WORK/nix-copy-2.log"; then
    fail 'nix copy without a token was accepted'
  fi
  grep -qiE '401|unauthori' "$WORK/nix-copy-2.log" || { cat "$WORK/nix-copy-2.log" >&2; fail 'nix copy without a token failed, but not with 401'; }
  mv "$WORK/netrc.off" "$WORK/netrc"
  pass 'nix copy without the token is refused'
else
  log 'nix is not on PATH: nix copy check skipped'
fi

# ---- graceful stop, restart on the same volume ----
start=$(date +%s)
pm stop -t 20 "$NAME" >/dev/null
code=$("${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$NAME")
[[ $code == 0 ]] || fail "after SIGTERM the container exited with $code"
pass "SIGTERM: stopped in $(( $(date +%s) - start ))s with exit code 0"
pm rm "$NAME" >/dev/null

start_container
wait_healthy
sleep 0.5
if "${PODMAN[@]}" logs "$NAME" 2>&1 | grep -q 'first start'; then fail 'the restart set up the data folder again'; fi
if [[ -n $PUSHED ]]; then
  curl -fsS "$URL/$(basename "$PUSHED" | cut -c1-32).narinfo" >/dev/null || fail 'the pushed path is gone after a restart'
fi
pass 'restart on the same volume: no second first start, data still served'
