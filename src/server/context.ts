/**
 * What every route needs, built once at start and hung on the Fastify instance.
 */
import type { Config } from '../config/config.js'
import type { AccessTracker } from '../cache/access-tracker.js'
// eslint-disable-next-line no-restricted-imports -- crosses the layers; moved in the next commits (issue 17)
import type { Metadata } from '../db/metadata.js'
// eslint-disable-next-line no-restricted-imports -- crosses the layers; moved in the next commits (issue 17)
import type { Retention } from '../db/retention.js'
import type { TrustedKeys } from '../signing/keys.js'
// eslint-disable-next-line no-restricted-imports -- crosses the layers; moved in the next commits (issue 17)
import type { BlobStore } from '../storage/blob-store.js'

export interface CacheContext {
  config: Readonly<Config>
  metadata: Metadata
  blobs: BlobStore
  trustedKeys: TrustedKeys
  retention: Retention
  /** Notes narinfo and NAR reads for garbage collection; made by buildApp. */
  access: AccessTracker
}

declare module 'fastify' {
  interface FastifyInstance {
    narwhal: CacheContext
  }
}
