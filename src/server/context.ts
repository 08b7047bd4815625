/**
 * What every route needs, built once at start and hung on the Fastify instance.
 */
import type { Config } from '../config/config.js'
import type { AccessTracker } from '../cache/access-tracker.js'
import type { AuditLog } from '../cache/audit-log.js'
import type { Browse, UpstreamStatus } from '../cache/browse.js'
import type { Provenance } from '../cache/provenance.js'
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
  /** Who wrote each path, recorded with every accepted narinfo. */
  provenance: Provenance
  /** Every write and refusal (flushed and closed by buildApp's onClose). */
  audit: AuditLog
  /** What the pages for people show. */
  browse: Browse
  /** The upstream caches' states for the front page, when pull-through is configured. */
  upstreams?: () => UpstreamStatus[]
  /** Notes narinfo and NAR reads for garbage collection; made by buildApp. */
  access: AccessTracker
}

declare module 'fastify' {
  interface FastifyInstance {
    narwhal: CacheContext
  }
}
