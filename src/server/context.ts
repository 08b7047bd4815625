/**
 * What every route needs, built once at start and hung on the Fastify instance.
 */
import type { Config } from '../config/config.js'
import type { Metadata } from '../db/metadata.js'
import type { TrustedKeys } from '../signing/keys.js'
import type { BlobStore } from '../storage/blob-store.js'

export interface CacheContext {
  config: Readonly<Config>
  metadata: Metadata
  blobs: BlobStore
  trustedKeys: TrustedKeys
}

declare module 'fastify' {
  interface FastifyInstance {
    narwhal: CacheContext
  }
}
