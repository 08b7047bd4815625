/**
 * What every route needs, built once at start and hung on the Fastify instance.
 */
import type { Config } from '../config/config.js'
import type { AccessTracker } from '../cache/access-tracker.js'
import type { PullThrough } from '../cache/pull-through.js'
import type { Metadata } from '../db/metadata.js'
import type { Retention } from '../db/retention.js'
import type { TrustedKeys } from '../signing/keys.js'
import type { BlobStore } from '../storage/blob-store.js'

export interface CacheContext {
  config: Readonly<Config>
  metadata: Metadata
  blobs: BlobStore
  trustedKeys: TrustedKeys
  retention: Retention
  /** What a miss asks (upstream caches, src/upstream/); undefined: a miss is a 404. */
  pullThrough?: PullThrough | undefined
  /** Notes narinfo and NAR reads for garbage collection; made by buildApp. */
  access: AccessTracker
}

declare module 'fastify' {
  interface FastifyInstance {
    narwhal: CacheContext
  }
}
