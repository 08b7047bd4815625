/**
 * Starts a real narwhal server for a test: a fresh data folder (with the database and storage
 * of the test backend, helpers/backend.ts), the same start-up as `narwhal serve` (migrations,
 * store layout), listening on a free loopback port.
 */
import type { TestContext } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { generateToken, hashToken, type Scope } from '../../src/auth/tokens.js'
import { loadConfig, type Config } from '../../src/config/config.js'
import { openCache, type OpenCache } from '../../src/cache/open-cache.js'
import { pullThroughFor, upstreamContext } from '../../src/cli/pull-through.js'
import { buildApp } from '../../src/server/app.js'
import type { BlobStore } from '../../src/storage/blob-store.js'
import { backendFor, cacheConfig } from './backend.js'
import { tempDir } from './nix.js'

export interface TestServer {
  app: FastifyInstance
  url: string
  port: number
  cache: OpenCache
  config: Readonly<Config>
  /** A fresh token of the given scope. */
  token: (scope: Scope) => Promise<string>
  /**
   * What the NAR store holds, for "nothing left behind" checks: files under store/nar and
   * store/tmp, or the bucket's objects and unfinished uploads (helpers/backend.ts).
   */
  storedFiles: () => Promise<string[]>
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
  const backend = await backendFor(dataDir)
  const config = loadConfig(await cacheConfig({ dataDir, listen: '127.0.0.1:0', trustedKeys: options.trustedKeys }), {
    NARWHAL_PRIVATE: options.private === true ? 'true' : 'false',
    ...options.env
  })
  const opened = await openCache(config)
  const cache = options.blobs === undefined ? opened : { ...opened, blobs: options.blobs }
  await cache.blobs.sweep() // as `narwhal serve` does
  // Upstream caches when the test configures them (NARWHAL_UPSTREAMS, or upstreams in a config file).
  const quiet = { info: () => {}, warn: () => {}, error: () => {} }
  const pullThrough = await pullThroughFor(config, cache, quiet)
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
    storedFiles: backend.stored
  }
}
