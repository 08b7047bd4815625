/**
 * What every route needs, built once at start (cache/open-cache.ts) and hung on the Fastify
 * instance.
 */
import type { Config } from '../config/config.js'
import type { AccessTracker } from '../cache/access-tracker.js'
import type { UpstreamStatus } from '../cache/browse.js'
import type { OpenCache } from '../cache/open-cache.js'
import type { PullThrough } from '../cache/pull-through.js'

export interface CacheContext extends Pick<OpenCache, 'metadata' | 'blobs' | 'trustedKeys' | 'provenance' | 'audit' | 'browse'> {
  config: Readonly<Config>
  /** What a miss asks (upstream caches, src/upstream/); undefined: a miss is a 404. */
  pullThrough?: PullThrough | undefined
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
