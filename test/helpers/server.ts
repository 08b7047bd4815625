/**
 * Starts a real narwhal server for a test: a fresh data folder, the same start-up as
 * `narwhal serve` (migrations, store layout), listening on a free loopback port.
 */
import type { TestContext } from 'node:test'
import { readdirSync, existsSync } from 'node:fs'
import path from 'node:path'
import type { FastifyInstance } from 'fastify'
import { generateToken, hashToken, type Scope } from '../../src/auth/tokens.js'
import { loadConfig, type Config } from '../../src/config/config.js'
import { openCache, type OpenCache } from '../../src/cache/open-cache.js'
import { pullThroughFor, upstreamContext } from '../../src/cli/pull-through.js'
import { buildApp } from '../../src/server/app.js'
import type { BlobStore } from '../../src/storage/blob-store.js'
import { tempDir } from './nix.js'

export interface TestServer {
  app: FastifyInstance
  url: string
  port: number
  cache: OpenCache
  config: Readonly<Config>
  /** A fresh token of the given scope. */
  token: (scope: Scope) => Promise<string>
  /** Files under store/nar and store/tmp, for "nothing left behind" checks. */
  storedFiles: () => string[]
}

function walk (dir: string): string[] {
  if (!existsSync(dir)) return []
  return readdirSync(dir, { withFileTypes: true }).flatMap(e =>
    e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)])
}

export interface StartOptions {
  trustedKeys?: string[]
  private?: boolean
  env?: Record<string, string>
  dataDir?: string
  /** Called with the app before it listens (to add a hook, say). */
  beforeListen?: (app: FastifyInstance) => void
  /** Where NARs are kept instead of the data folder (an S3BlobStore); the caller closes it. */
  blobs?: BlobStore
}

export async function startServer (t: TestContext, options: StartOptions = {}): Promise<TestServer> {
  const dataDir = options.dataDir ?? tempDir('narwhal-data-')
  const config = loadConfig({ dataDir, listen: '127.0.0.1:0', trustedKeys: options.trustedKeys }, {
    NARWHAL_PRIVATE: options.private === true ? 'true' : 'false',
    ...options.env
  })
  const opened = await openCache(config)
  const cache = options.blobs === undefined ? opened : { ...opened, blobs: options.blobs }
  await cache.blobs.sweep() // as `narwhal serve` does
  // Upstream caches when the test configures them (NARWHAL_UPSTREAMS, or upstreams in a config file).
  const quiet = { info: () => {}, warn: () => {}, error: () => {} }
  const pullThrough = pullThroughFor(config, cache, quiet)
  const app = buildApp({ config, metadata: cache.metadata, blobs: cache.blobs, trustedKeys: cache.trustedKeys, provenance: cache.provenance, audit: cache.audit, browse: cache.browse, ...upstreamContext(pullThrough) },
    { logger: false })
  options.beforeListen?.(app)
  await app.listen({ host: '127.0.0.1', port: 0 })
  t.after(async () => {
    await app.close()
    await pullThrough?.close()
    await cache.close()
  })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('server has no TCP address')
  return {
    app,
    url: `http://127.0.0.1:${address.port}`,
    port: address.port,
    cache,
    config,
    token: async (scope) => {
      const token = generateToken()
      await cache.metadata.tokens.insert({ name: `test-${scope}`, scope, tokenHash: hashToken(token), expiresAt: null }, Date.now())
      return token
    },
    storedFiles: () => [...walk(cache.layout.narDir), ...walk(cache.layout.tmpDir)]
  }
}
