# syntax=docker/dockerfile:1
# narwhal: a self-hosted Nix binary cache.
#
#   docker build -t narwhal .
#   docker run -d --name narwhal -p 5000:5000 -v narwhal-data:/data narwhal
#   docker logs narwhal      # the first start prints the signing key, the push token, nix.conf lines
#
# The data volume must be writable by UID 10001 (a named volume is; for a bind mount,
# `chown 10001:10001 DIR` first). Other commands run the same way:
#   docker run --rm -v narwhal-data:/data narwhal token create --scope push

# ---- build: dev dependencies, native addons (node-gyp: python3, make, g++), tsc ----
FROM node:20-bookworm AS build
WORKDIR /app
# Dependencies first, so that a change under src/ does not reinstall and recompile them:
# `npm ci --ignore-scripts` installs, then `npm rebuild` runs the dependencies' install scripts
# (better-sqlite3 and zstd-napi may compile from source) but not the root's `prepare`.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund \
 && npm rebuild
# tsc (what `prepare` runs), then drop dev dependencies and the addons' object files.
COPY tsconfig.json ./
COPY src ./src
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund \
 && find node_modules -path '*/build/Release/*' \( -name obj.target -o -name .deps -o -name '*.a' \) -prune -exec rm -rf {} + \
 && rm -rf node_modules/.cache /root/.npm

# ---- runtime ----
FROM node:20-bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 narwhal \
 && useradd --no-log-init --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin narwhal \
 && mkdir -p /data \
 && chown 10001:10001 /data \
 && chmod 0750 /data
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY migrations ./migrations
COPY bin ./bin
ENV NODE_ENV=production \
    NARWHAL_DATA=/data \
    NARWHAL_LISTEN=0.0.0.0:5000
USER 10001:10001
VOLUME /data
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "const [h, p] = (process.env.NARWHAL_LISTEN || '0.0.0.0:5000').split(/:(?=\\d+$)/); fetch(`http://${['0.0.0.0', '::', '[::]'].includes(h) ? '127.0.0.1' : h}:${p}/healthz`).then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--", "node", "/app/dist/src/cli/main.js"]
CMD ["serve"]
